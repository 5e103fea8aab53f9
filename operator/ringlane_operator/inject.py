"""Pod -> JSON Patch that adds the Ringlane sidecar, plus admission warnings (pure).

Idempotent: what was injected before (container ringlane-proxy, volumes ringlane-*,
annotations) is replaced in place, never duplicated, and left alone when it already holds
what would be injected (fields the API server defaulted since are tolerated), so a
re-invocation of the webhook is a no-op.

preStop: the kubelet's `sleep` action (no shell needed in the image; httpGet cannot POST
/drain). The sidecar already drains on SIGTERM; sleeping first keeps its listeners open while
the pod's removal from EndpointSlices reaches the clients, so nobody is refused during that
window. As a native sidecar it is stopped only after the app containers have exited, and the
sleep plus the drain must fit in terminationGracePeriodSeconds (checked, with a warning).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from . import __version__
from .inject_settings import InjectSettings, ProxyParams, grace_seconds, proxy_params
from .names import (
    CONFIGMAP,
    CONTAINER,
    FORCE_HOST_NETWORK_ANNOTATION,
    INJECT_LABEL,
    INJECTED_ANNOTATION,
    NAMESPACE_LABEL,
    PODINFO_DIR,
    PODINFO_VOLUME,
    ROUTES_DIR,
    ROUTES_VOLUME,
)
from .patchops import Op, pointer
from .qos import not_guaranteed_reason

Body = dict[str, Any]
PROMETHEUS_KEYS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
QOS_WARNING = "pod is not Guaranteed QoS"


def inject_patch(
    pod: Mapping[str, Any],
    settings: InjectSettings,
    namespace_labels: Mapping[str, str] | None,
) -> tuple[list[Op], list[str]]:
    """(JSON Patch ops, warnings). Raises InjectError for a bad override annotation.

    namespace_labels None means unknown: the webhook's namespaceSelector already chose.
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(INJECT_LABEL) == "false":
        return [], []
    if namespace_labels is not None and namespace_labels.get(NAMESPACE_LABEL) != "enabled":
        return [], []
    if spec.get("hostNetwork") and annotations.get(FORCE_HOST_NETWORK_ANNOTATION) != "true":
        return [], [f"{CONTAINER} not injected: the pod uses hostNetwork, where its listeners and admin port "
                    f"could clash with the node's; annotate {FORCE_HOST_NETWORK_ANNOTATION}=\"true\" to inject anyway"]
    other = spec.get("containers" if settings.native_sidecar else "initContainers") or ()
    if INJECTED_ANNOTATION not in annotations and any(c.get("name") == CONTAINER for c in other):
        return [], [f"{CONTAINER} not injected: the pod already has a container of that name that Ringlane did not add"]

    params = proxy_params(pod, settings)
    container = sidecar_container(params, settings, token_mount(spec))
    volumes = sidecar_volumes()
    ops = _container_ops(spec, container, settings.native_sidecar)
    ops += _volume_ops(spec, volumes)
    warnings: list[str] = []
    ops += _annotation_ops(annotations, _annotations(annotations, params, container, volumes, warnings))
    warnings += _warnings(pod, settings, params)
    return ops, warnings


def token_mount(spec: Mapping[str, Any]) -> Body | None:
    """The app's ServiceAccount token mount, for the sidecar too.

    The ServiceAccount admission plugin mounts the token into the containers that exist
    when it runs, which is before the webhooks, and it is not re-run for ours. The sidecar
    needs it to watch the routes ConfigMap; without it, it reads the mounted file.
    """
    for c in [*(spec.get("containers") or ()), *(spec.get("initContainers") or ())]:
        if c.get("name") == CONTAINER:
            continue
        for m in c.get("volumeMounts") or ():
            if m.get("mountPath") == TOKEN_DIR:
                return {"name": m["name"], "mountPath": TOKEN_DIR, "readOnly": True}
    return None


def sidecar_container(p: ProxyParams, s: InjectSettings, token: Body | None = None) -> Body:
    probe = {"httpGet": {"path": "/ready", "port": p.admin_port}, "timeoutSeconds": 1}
    amounts = {"cpu": str(p.cpu), "memory": p.memory}
    container: Body = {
        "name": CONTAINER,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy,
        "command": list(s.command),
        # $(POD_NAMESPACE) is expanded by the kubelet: the namespace is not always known at
        # admission (generateName pods of a controller), the downward API always has it.
        "args": ["run",
                 "--configmap", f"$(POD_NAMESPACE)/{CONFIGMAP}",
                 "--config", f"{ROUTES_DIR}/config.json",  # fallback when the API watch is not allowed
                 "--pod-labels", f"{PODINFO_DIR}/labels",
                 "--engine", p.engine,
                 "--admin", f"0.0.0.0:{p.admin_port}",
                 "--log-level", p.log_level],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "ports": [{"name": "ringlane-admin", "containerPort": p.admin_port, "protocol": "TCP"}],
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 60},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": p.admin_port}, "timeoutSeconds": 2,
                          "periodSeconds": 10, "failureThreshold": 3},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": s.run_as_user,
            "runAsGroup": s.run_as_user,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": seccomp_profile(profile_setting(p, s)),
        },
        "volumeMounts": [
            {"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": True},
            {"name": ROUTES_VOLUME, "mountPath": ROUTES_DIR, "readOnly": True},
            *([token] if token is not None else []),
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if p.prestop_sleep > 0:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": p.prestop_sleep}}}
    if s.native_sidecar:
        container["restartPolicy"] = "Always"
    return container


def profile_setting(p: ProxyParams, s: InjectSettings) -> str:
    """The epoll profile (no io_uring at all) for a sidecar told to use epoll, when there is one;
    else the io_uring profile, which engine auto needs and falls back from."""
    if p.engine == "epoll" and s.seccomp_profile_epoll:
        return s.seccomp_profile_epoll
    return s.seccomp_profile


def seccomp_profile(setting: str) -> Body:
    """A Localhost profile path (the default: the profile made for the sidecar), or RuntimeDefault
    where that profile is not delivered to the nodes yet (it may block io_uring: engine auto then
    falls back to epoll)."""
    if setting == "RuntimeDefault":
        return {"type": "RuntimeDefault"}
    return {"type": "Localhost", "localhostProfile": setting}


def sidecar_volumes() -> list[Body]:
    return [
        {"name": PODINFO_VOLUME,
         "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        # optional: the pod starts before the first ProxyRoute of its namespace exists
        {"name": ROUTES_VOLUME, "configMap": {"name": CONFIGMAP, "optional": True}},
    ]


def injected_stamp(container: Body, volumes: Sequence[Body]) -> str:
    digest = hashlib.sha256(json.dumps([container, volumes], sort_keys=True).encode()).hexdigest()
    return f"{__version__}-{digest[:12]}"


def covers(have: Any, want: Any) -> bool:
    """have holds everything in want (and maybe fields the API server defaulted since)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and covers(have[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(covers, have, want))
    return have == want


def _container_ops(spec: Mapping[str, Any], container: Body, native: bool) -> list[Op]:
    ops: list[Op] = []
    field, other = ("initContainers", "containers") if native else ("containers", "initContainers")
    # One leftover of an earlier injection in the other list (native sidecars switched on or off).
    for i in reversed([i for i, c in enumerate(spec.get(other) or ()) if c.get("name") == CONTAINER]):
        ops.append({"op": "remove", "path": pointer("spec", other, i)})
    items = spec.get(field)
    if items is None:
        return ops + [{"op": "add", "path": pointer("spec", field), "value": [container]}]
    found = [i for i, c in enumerate(items) if c.get("name") == CONTAINER]
    for i in reversed(found[1:]):  # duplicates: highest index first keeps the others' indices valid
        ops.append({"op": "remove", "path": pointer("spec", field, i)})
    if not found:
        # Native sidecars go first so the pod's other init containers can already use them;
        # a classic sidecar goes last so `kubectl logs/exec` still default to the app.
        where = pointer("spec", field, 0) if native else pointer("spec", field, "-")
        ops.append({"op": "add", "path": where, "value": container})
    elif not covers(items[found[0]], container):
        ops.append({"op": "replace", "path": pointer("spec", field, found[0]), "value": container})
    return ops


def _volume_ops(spec: Mapping[str, Any], volumes: Sequence[Body]) -> list[Op]:
    existing = spec.get("volumes")
    if existing is None:
        return [{"op": "add", "path": pointer("spec", "volumes"), "value": list(volumes)}]
    ops: list[Op] = []
    for vol in volumes:
        index = next((i for i, v in enumerate(existing) if v.get("name") == vol["name"]), None)
        if index is None:
            ops.append({"op": "add", "path": pointer("spec", "volumes", "-"), "value": vol})
        elif not covers(existing[index], vol):
            ops.append({"op": "replace", "path": pointer("spec", "volumes", index), "value": vol})
    return ops


def _annotations(current: Mapping[str, str], p: ProxyParams, container: Body, volumes: Sequence[Body],
                 warnings: list[str]) -> dict[str, str]:
    wanted = {INJECTED_ANNOTATION: injected_stamp(container, volumes)}
    prometheus = {"prometheus.io/scrape": "true", "prometheus.io/port": str(p.admin_port), "prometheus.io/path": "/metrics"}
    ours = INJECTED_ANNOTATION in current  # a re-invocation: the prometheus.io/* there are ours
    if not ours and any(k in current for k in PROMETHEUS_KEYS):
        warnings.append("the pod's own prometheus.io/* annotations were kept: the sidecar's metrics "
                        f"(port {p.admin_port}, /metrics) are not announced by annotations")
    else:
        wanted.update(prometheus)
    return wanted


def _annotation_ops(current: Mapping[str, str], wanted: Mapping[str, str]) -> list[Op]:
    if not current:
        return [{"op": "add", "path": pointer("metadata", "annotations"), "value": dict(wanted)}]
    return [
        {"op": "replace" if key in current else "add", "path": pointer("metadata", "annotations", key), "value": value}
        for key, value in wanted.items()
        if current.get(key) != value
    ]


def _warnings(pod: Mapping[str, Any], s: InjectSettings, p: ProxyParams) -> list[str]:
    out = []
    if token_mount(pod.get("spec") or {}) is None:
        out.append(f"no ServiceAccount token is mounted in the pod: {CONTAINER} cannot watch ConfigMap {CONFIGMAP} "
                   "and reads the mounted copy instead, which the kubelet refreshes only every minute or so")
    reason = not_guaranteed_reason(pod)
    if reason is not None:
        out.append(f"{QOS_WARNING} ({reason}): the kubelet's static CPU manager will not pin "
                   f"{CONTAINER} to dedicated CPUs")
    grace = grace_seconds(pod)
    if grace < s.prestop_sleep + s.drain_seconds:
        shortened = f" (preStop sleep shortened to {p.prestop_sleep}s)" if p.prestop_sleep < s.prestop_sleep else ""
        out.append(f"terminationGracePeriodSeconds={grace} is shorter than the sidecar's preStop sleep and drain "
                   f"({s.prestop_sleep}s + {s.drain_seconds}s){shortened}: in-flight requests may be cut at shutdown")
    return out
