"""Pod injection: the JSON Patch, its idempotence, overrides, skips and warnings.

Patches are applied with ringlane_operator.patchops.apply_patch (and cross-checked with the
`jsonpatch` package, which kopf itself depends on, when it is importable).
"""
from __future__ import annotations

import copy
from typing import Any

import pytest
from operator_builders import TOKEN_DIR, TOKEN_VOLUME, pod

from ringlane_operator.inject import inject_patch, injected_stamp, sidecar_container, sidecar_volumes
from ringlane_operator.inject_settings import InjectError, InjectSettings, proxy_params
from ringlane_operator.patchops import apply_patch, escape, pointer

ENABLED = {"ringlane.io/injection": "enabled"}
S = InjectSettings()


def run(p: dict[str, Any], settings: InjectSettings = S, ns: dict[str, str] | None = ENABLED) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    ops, warnings = inject_patch(p, settings, ns)
    patched = apply_patch(p, ops)
    try:
        import jsonpatch
    except ImportError:
        pass
    else:
        assert jsonpatch.apply_patch(p, ops) == patched
    return patched, ops, warnings


def proxy(p: dict[str, Any], field: str = "initContainers") -> dict[str, Any]:
    (c,) = [c for c in p["spec"].get(field, []) if c["name"] == "ringlane-proxy"]
    return c


def api_defaulted(p: dict[str, Any]) -> dict[str, Any]:
    """What the API server's defaulting adds between two webhook invocations."""
    out = copy.deepcopy(p)
    for c in out["spec"]["initContainers"] + out["spec"]["containers"]:
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in c:
                c[probe].setdefault("successThreshold", 1)
                c[probe]["httpGet"].setdefault("scheme", "HTTP")
    for v in out["spec"]["volumes"]:
        for kind in ("downwardAPI", "configMap"):
            if kind in v:
                v[kind].setdefault("defaultMode", 420)
    return out


def test_injects_a_native_sidecar_with_everything_architecture_asks_for() -> None:
    patched, ops, warnings = run(pod())
    assert warnings == []
    c = proxy(patched)
    assert patched["spec"]["initContainers"][0] is not None and patched["spec"]["initContainers"][0]["name"] == "ringlane-proxy"
    assert c["restartPolicy"] == "Always"
    assert c["image"] == "localhost/ringlane:dev"
    assert c["command"] == ["ringlane-sidecar"]
    assert c["args"] == ["run", "--configmap", "$(POD_NAMESPACE)/ringlane-routes",
                         "--config", "/etc/ringlane/routes/config.json",
                         "--pod-labels", "/etc/ringlane/podinfo/labels", "--engine", "auto",
                         "--admin", "0.0.0.0:9901", "--log-level", "info"]
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}
    assert c["startupProbe"]["httpGet"] == {"path": "/ready", "port": 9901}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 9901}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9901}
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "runAsUser": 65532, "runAsGroup": 65532, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "Localhost", "localhostProfile": "ringlane/proxy-io_uring.json"}}
    assert [e["name"] for e in c["env"]] == ["POD_NAME", "POD_NAMESPACE"]
    assert c["volumeMounts"] == [
        {"name": "ringlane-podinfo", "mountPath": "/etc/ringlane/podinfo", "readOnly": True},
        {"name": "ringlane-routes", "mountPath": "/etc/ringlane/routes", "readOnly": True},
        {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},  # to watch the ConfigMap
    ]
    vols = {v["name"]: v for v in patched["spec"]["volumes"]}
    assert vols["ringlane-podinfo"]["downwardAPI"]["items"] == [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]
    assert vols["ringlane-routes"]["configMap"] == {"name": "ringlane-routes", "optional": True}
    ann = patched["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9901"
    assert ann["prometheus.io/path"] == "/metrics"
    assert ann["ringlane.io/injected"] == injected_stamp(c, sidecar_volumes())
    assert patched["spec"]["containers"] == pod()["spec"]["containers"]  # the app is untouched


def test_reinvocation_is_a_no_op() -> None:
    once, _, _ = run(pod())
    ops, warnings = inject_patch(once, S, ENABLED)
    assert (ops, warnings) == ([], [])


def test_reinvocation_after_api_defaulting_is_a_no_op() -> None:
    once, _, _ = run(pod())
    ops, _ = inject_patch(api_defaulted(once), S, ENABLED)
    assert ops == []


def test_reinvocation_with_other_settings_replaces_in_place() -> None:
    once, _, _ = run(pod(init=[{"name": "migrate", "image": "m:1"}]))
    twice, ops, _ = run(once, InjectSettings(image="localhost/ringlane:v2"))
    assert [o["op"] for o in ops] == ["replace", "replace"]  # the container and the stamp
    assert [c["name"] for c in twice["spec"]["initContainers"]] == ["ringlane-proxy", "migrate"]
    assert proxy(twice)["image"] == "localhost/ringlane:v2"
    assert [v["name"] for v in twice["spec"]["volumes"]] == [TOKEN_VOLUME, "ringlane-podinfo", "ringlane-routes"]


def test_duplicates_left_by_someone_else_are_removed() -> None:
    once, _, _ = run(pod())
    doubled = copy.deepcopy(once)
    doubled["spec"]["initContainers"].append(copy.deepcopy(doubled["spec"]["initContainers"][0]))
    fixed, ops, _ = run(doubled)
    assert [c["name"] for c in fixed["spec"]["initContainers"]] == ["ringlane-proxy"]
    assert ops == [{"op": "remove", "path": "/spec/initContainers/1"}]


def test_existing_init_containers_and_volumes_are_preserved() -> None:
    p = pod(init=[{"name": "migrate", "image": "m:1"}], volumes=[{"name": "data", "emptyDir": {}}])
    patched, ops, _ = run(p)
    assert [c["name"] for c in patched["spec"]["initContainers"]] == ["ringlane-proxy", "migrate"]
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", TOKEN_VOLUME, "ringlane-podinfo", "ringlane-routes"]
    assert {"op": "add", "path": "/spec/initContainers/0", "value": proxy(patched)} in ops
    assert [o["path"] for o in ops if "volumes" in o["path"]] == ["/spec/volumes/-", "/spec/volumes/-"]


def test_pod_without_init_containers_or_volumes_gets_whole_lists() -> None:
    patched, ops, warnings = run(pod(token=False))  # automountServiceAccountToken: false
    assert {o["path"]: o["op"] for o in ops if o["path"].startswith("/spec")} == {
        "/spec/initContainers": "add", "/spec/volumes": "add"}
    assert [m["name"] for m in proxy(patched)["volumeMounts"]] == ["ringlane-podinfo", "ringlane-routes"]
    assert warnings == ["no ServiceAccount token is mounted in the pod: ringlane-proxy cannot watch ConfigMap "
                        "ringlane-routes and reads the mounted copy instead, which the kubelet refreshes only "
                        "every minute or so"]


def test_annotation_paths_are_escaped() -> None:
    p = pod(annotations={"team": "a"})
    _, ops, _ = run(p)
    paths = [o["path"] for o in ops if o["path"].startswith("/metadata")]
    assert "/metadata/annotations/ringlane.io~1injected" in paths
    assert "/metadata/annotations/prometheus.io~1scrape" in paths
    assert escape("a~b/c") == "a~0b~1c" and pointer("x", "a/b", 0) == "/x/a~1b/0"


def test_apply_patch_reads_escaped_pointers() -> None:
    doc = {"m": {"a/b": 1, "c~d": 2}}
    out = apply_patch(doc, [{"op": "replace", "path": "/m/a~1b", "value": 3}, {"op": "remove", "path": "/m/c~0d"}])
    assert out == {"m": {"a/b": 3}} and doc == {"m": {"a/b": 1, "c~d": 2}}
    with pytest.raises(KeyError):
        apply_patch(doc, [{"op": "replace", "path": "/m/zz", "value": 1}])


def test_opt_out_label_skips() -> None:
    assert inject_patch(pod(labels={"app": "web", "ringlane.io/inject": "false"}), S, ENABLED) == ([], [])


def test_namespace_without_the_label_is_skipped_and_unknown_is_trusted() -> None:
    assert inject_patch(pod(), S, {"other": "x"}) == ([], [])
    ops, _ = inject_patch(pod(), S, None)  # the webhook's namespaceSelector already chose
    assert ops


def test_host_network_is_skipped_with_a_warning_unless_forced() -> None:
    ops, warnings = inject_patch(pod(host_network=True), S, ENABLED)
    assert ops == [] and "hostNetwork" in warnings[0] and "ringlane.io/inject-host-network" in warnings[0]
    forced, ops, _ = run(pod(host_network=True, annotations={"ringlane.io/inject-host-network": "true"}))
    assert proxy(forced)


def test_qos_warning_when_the_pod_is_not_guaranteed() -> None:
    burstable = pod(containers=[{"name": "app", "image": "a", "resources": {
        "requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}}])
    _, _, warnings = run(burstable)
    assert any("not Guaranteed QoS (container app: cpu request 500m != limit 1)" in w for w in warnings)
    no_limits = pod(containers=[{"name": "app", "image": "a"}])
    assert any("container app has no cpu limit" in w for w in run(no_limits)[2])


def test_equal_quantities_in_other_spellings_are_guaranteed() -> None:
    p = pod(containers=[{"name": "app", "image": "a", "resources": {
        "requests": {"cpu": "1000m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1024Mi"}}}],
        init=[{"name": "setup", "image": "s", "resources": {"limits": {"cpu": "2", "memory": "1G"}}}])
    assert run(p)[2] == []


def test_valid_overrides() -> None:
    p = pod(annotations={"ringlane.io/proxy-cpu": "2", "ringlane.io/proxy-memory": "256Mi",
                         "ringlane.io/engine": "epoll", "ringlane.io/log-level": "debug",
                         "ringlane.io/admin-port": "15000"})
    patched, _, _ = run(p)
    c = proxy(patched)
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "256Mi"} == c["resources"]["requests"]
    assert c["args"][c["args"].index("--engine") + 1] == "epoll"
    assert c["args"][c["args"].index("--log-level") + 1] == "debug"
    assert c["args"][c["args"].index("--admin") + 1] == "0.0.0.0:15000"
    assert c["livenessProbe"]["httpGet"]["port"] == 15000
    assert patched["metadata"]["annotations"]["prometheus.io/port"] == "15000"


@pytest.mark.parametrize("annotation,value,needle", [
    ("ringlane.io/proxy-cpu", "500m", "whole number of CPUs"),
    ("ringlane.io/proxy-cpu", "0", "whole number of CPUs"),
    ("ringlane.io/proxy-cpu", "1.5", "whole number of CPUs"),
    ("ringlane.io/proxy-cpu", "300", "from 1 to 256"),
    ("ringlane.io/proxy-memory", "lots", "not a Kubernetes quantity"),
    ("ringlane.io/proxy-memory", "32Mi", "at least 64Mi"),
    ("ringlane.io/proxy-memory", "1500m", "whole number of bytes"),
    ("ringlane.io/engine", "iouring", "one of auto, io_uring, epoll"),
    ("ringlane.io/log-level", "trace", "one of debug, info, warning, error"),
    ("ringlane.io/admin-port", "70000", "port number from 1 to 65535"),
    ("ringlane.io/admin-port", "http", "port number from 1 to 65535"),
    ("ringlane.io/admin-port", "9000", "is container app's port"),
])
def test_invalid_overrides_name_the_annotation(annotation: str, value: str, needle: str) -> None:
    with pytest.raises(InjectError) as err:
        inject_patch(pod(annotations={annotation: value}), S, ENABLED)
    assert str(err.value).startswith(f"annotation {annotation}={value!r}: ")
    assert needle in str(err.value)
    assert err.value.annotation == annotation


def test_default_admin_port_clashing_with_the_app_is_refused() -> None:
    p = pod(containers=[{"name": "envoy", "image": "e", "ports": [{"containerPort": 9901}]}])
    with pytest.raises(InjectError, match="ringlane.io/admin-port"):
        inject_patch(p, S, ENABLED)


def test_users_prometheus_annotations_are_kept_with_a_warning() -> None:
    p = pod(annotations={"prometheus.io/scrape": "true", "prometheus.io/port": "9000"})
    patched, _, warnings = run(p)
    assert patched["metadata"]["annotations"]["prometheus.io/port"] == "9000"
    assert any("prometheus.io" in w for w in warnings)


def test_classic_sidecar_when_native_is_off() -> None:
    settings = InjectSettings(native_sidecar=False)
    patched, _, _ = run(pod(), settings)
    c = proxy(patched, "containers")
    assert "restartPolicy" not in c
    assert [x["name"] for x in patched["spec"]["containers"]] == ["app", "ringlane-proxy"]
    assert "initContainers" not in patched["spec"]
    # switching native on later moves it, once
    moved, _, _ = run(patched, S)
    assert [x["name"] for x in moved["spec"]["containers"]] == ["app"]
    assert proxy(moved)["restartPolicy"] == "Always"


def test_name_clash_with_an_app_container_is_not_injected() -> None:
    p = pod(containers=[{"name": "ringlane-proxy", "image": "mine"}])
    ops, warnings = inject_patch(p, S, ENABLED)
    assert ops == [] and "already has a container" in warnings[0]


def test_short_grace_period_warns_and_prestop_can_be_disabled() -> None:
    _, _, warnings = run(pod(grace=10))
    assert any("terminationGracePeriodSeconds=10" in w for w in warnings)
    patched, _, warnings = run(pod(grace=10), InjectSettings(prestop_sleep=0, drain_seconds=5))
    assert "lifecycle" not in proxy(patched) and warnings == []


def test_stamp_changes_with_what_is_injected() -> None:
    bigger = InjectSettings(memory="256Mi")
    a = sidecar_container(proxy_params(pod(), S), S)
    b = sidecar_container(proxy_params(pod(), bigger), bigger)
    assert "kube-api-access" not in str(a)  # no token mount unless the pod has one
    assert injected_stamp(a, sidecar_volumes()) != injected_stamp(b, sidecar_volumes())
    assert injected_stamp(a, sidecar_volumes()).startswith("0.1.0-")


def test_runtime_default_seccomp_where_the_profile_is_not_delivered() -> None:
    patched, _, _ = run(pod(), InjectSettings(seccomp_profile="RuntimeDefault"))
    assert proxy(patched)["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("grace,sleep", [(None, 5), (30, 5), (6, 5), (5, 4), (2, 1), (1, None), (0, None)])
def test_prestop_sleep_stays_below_the_grace_period(grace: int | None, sleep: int | None) -> None:
    """The API server refuses a preStop sleep >= terminationGracePeriodSeconds: never make a valid pod invalid."""
    patched, _, warnings = run(pod(grace=grace))
    lifecycle = proxy(patched).get("lifecycle")
    assert (lifecycle["preStop"]["sleep"]["seconds"] if lifecycle else None) == sleep
    assert any("shortened" in w for w in warnings) == (sleep is None or sleep < 5)
