"""The sidecar's seccomp profiles as Security Profiles Operator objects (pure).

SPO (security-profiles-operator.x-k8s.io) writes each SeccompProfile on every node, under
the kubelet's seccomp directory, as `operator/[<namespace>/]<name>.json`; pods reference it
as a Localhost profile. Its spec carries the OCI profile's fields under the same names
(defaultAction, architectures, syscalls with names/action/args{index, value, valueTwo, op},
flags, listenerPath, listenerMetadata), with two differences handled here:

- no `defaultErrnoRet`: the runtimes answer SCMP_ACT_ERRNO without one with EPERM, so a
  profile whose default errno is EPERM (ours) is delivered exactly; any other errno cannot be.
- no `comment` on a rule: comments are documentation only and are left out (SPO's
  structural schema would prune them, and the stored object would never equal ours).

Anything else the mapping does not know is an error rather than something silently dropped:
a lost `args` restriction would widen the sandbox.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .names import MANAGED_BY

Body = dict[str, Any]

GROUP = "security-profiles-operator.x-k8s.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SeccompProfile"
PLURAL = "seccompprofiles"
CRD_NAME = f"{PLURAL}.{GROUP}"
PROFILE_ROOT = "operator"  # SPO's directory under the kubelet's seccomp root

ENGINES = ("io_uring", "epoll")
EPERM = 1
ENGINE_LABEL = "ringlane.io/engine"
LABELS = {**MANAGED_BY, "app.kubernetes.io/name": "ringlane", "app.kubernetes.io/component": "seccomp-profile"}

_TOP_KEYS = {"defaultAction", "defaultErrnoRet", "architectures", "syscalls", "flags", "listenerPath",
             "listenerMetadata"}
_RULE_KEYS = {"names", "action", "args", "comment"}
_ARG_KEYS = {"index", "value", "valueTwo", "op"}
MAX_ARGS = 6  # SPO's schema (and the kernel: six syscall arguments)


class ProfileError(ValueError):
    """The OCI profile has something an SPO SeccompProfile cannot carry."""


class SpoUnavailable(RuntimeError):
    """SPO delivery was asked for, but the cluster cannot take it; the message says why and what to do."""


class SpoNotReady(SpoUnavailable):
    """The CRD is there but not usable yet (being installed): worth waiting for."""


def profile_name(engine: str) -> str:
    """Object name: a DNS subdomain, so io_uring is spelled io-uring."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (io_uring or epoll)")
    return "ringlane-proxy-" + engine.replace("_", "-")


def localhost_profile(name: str, namespace: str | None = None) -> str:
    """Where SPO writes the profile, relative to the kubelet's seccomp root (the pods' localhostProfile)."""
    return "/".join([PROFILE_ROOT, *([namespace] if namespace else []), f"{name}.json"])


def _uint(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProfileError(f"{where}: {value!r} is not an unsigned integer")
    return value


def _arg(where: str, arg: Mapping[str, Any]) -> Body:
    unknown = set(arg) - _ARG_KEYS
    if unknown:
        raise ProfileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    for key in ("index", "value", "op"):
        if key not in arg:
            raise ProfileError(f"{where}: {key} is required")
    index = _uint(f"{where}.index", arg["index"])
    if index >= MAX_ARGS:
        raise ProfileError(f"{where}.index: {index} (a system call has arguments 0 to {MAX_ARGS - 1})")
    out: Body = {"index": index, "value": _uint(f"{where}.value", arg["value"])}
    if "valueTwo" in arg:
        out["valueTwo"] = _uint(f"{where}.valueTwo", arg["valueTwo"])
    if not isinstance(arg["op"], str) or not arg["op"].startswith("SCMP_CMP_"):
        raise ProfileError(f"{where}.op: {arg['op']!r} is not an SCMP_CMP_* operator")
    out["op"] = arg["op"]
    return out


def _rule(where: str, rule: Mapping[str, Any]) -> Body:
    unknown = set(rule) - _RULE_KEYS
    if unknown:  # errnoRet among them: SPO releases disagree on its type, and we never need it
        raise ProfileError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    names = rule.get("names")
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ProfileError(f"{where}.names: a non-empty list of system call names is required")
    if not isinstance(rule.get("action"), str):
        raise ProfileError(f"{where}.action is required")
    out: Body = {"names": list(names), "action": rule["action"]}
    args = rule.get("args")
    if args:
        if len(args) > MAX_ARGS:
            raise ProfileError(f"{where}.args: {len(args)} conditions, at most {MAX_ARGS}")
        out["args"] = [_arg(f"{where}.args[{i}]", a) for i, a in enumerate(args)]
    return out


def spo_spec(oci: Mapping[str, Any]) -> Body:
    """OCI seccomp profile (what `ringlane-sidecar seccomp-profile` prints) -> SeccompProfile spec."""
    unknown = set(oci) - _TOP_KEYS
    if unknown:
        raise ProfileError(f"unknown field(s) {', '.join(sorted(unknown))}")
    if not isinstance(oci.get("defaultAction"), str):
        raise ProfileError("defaultAction is required")
    errno = oci.get("defaultErrnoRet")
    if errno is not None and errno != EPERM:
        raise ProfileError(f"defaultErrnoRet: {errno!r}: SeccompProfile has no such field and the runtimes "
                           f"default to EPERM ({EPERM}), so only EPERM can be delivered")
    spec: Body = {"defaultAction": oci["defaultAction"]}
    if oci.get("architectures"):
        spec["architectures"] = list(oci["architectures"])
    for key in ("listenerPath", "listenerMetadata"):
        if oci.get(key):
            spec[key] = oci[key]
    if oci.get("flags"):
        spec["flags"] = list(oci["flags"])
    spec["syscalls"] = [_rule(f"syscalls[{i}]", r) for i, r in enumerate(oci.get("syscalls") or ())]
    return spec


def seccomp_profile_object(engine: str, oci: Mapping[str, Any], namespace: str | None = None) -> Body:
    """The SeccompProfile for one engine (cluster-scoped unless namespace is given: older SPO releases)."""
    meta: Body = {"name": profile_name(engine), "labels": {**LABELS, ENGINE_LABEL: engine}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spo_spec(oci)}


def replacement(have: Mapping[str, Any], want: Mapping[str, Any]) -> Body | None:
    """What to PUT so that `have` (read from the API) holds `want`, or None when it already does.

    Only our spec and labels are ours: other labels, annotations, finalizers (SPO adds its
    own) and status are kept; resourceVersion makes the write conditional.
    """
    meta = have.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    want_labels = want["metadata"].get("labels") or {}
    if have.get("spec") == want["spec"] and all(labels.get(k) == v for k, v in want_labels.items()):
        return None
    fresh = copy.deepcopy(dict(have))
    fresh.pop("status", None)
    fresh["metadata"] = {**copy.deepcopy(dict(meta)), "labels": {**labels, **want_labels}}
    fresh["spec"] = copy.deepcopy(want["spec"])
    return fresh


def crd_scope(crd: Mapping[str, Any] | None, version: str = VERSION) -> bool:
    """The installed SeccompProfile CRD -> True when namespaced (older SPO), False when
    cluster-scoped. Raises SpoUnavailable with the fix when it cannot be used."""
    fix = ("install the Security Profiles Operator, or deliver the profiles with the node installer "
           "(--seccomp-delivery node; chart: seccomp.securityProfilesOperator=false)")
    if crd is None:
        raise SpoUnavailable(f"--seccomp-delivery spo: CustomResourceDefinition {CRD_NAME} is not installed: {fix}")
    spec = crd.get("spec") or {}
    served = [v.get("name") for v in spec.get("versions") or () if v.get("served")]
    if version not in served:
        raise SpoUnavailable(f"--seccomp-delivery spo: {CRD_NAME} does not serve {version} "
                             f"(served: {', '.join(map(str, served)) or 'none'}): use an SPO release that does, or {fix}")
    established = any(c.get("type") == "Established" and c.get("status") == "True"
                      for c in (crd.get("status") or {}).get("conditions") or ())
    if not established:
        raise SpoNotReady(f"--seccomp-delivery spo: {CRD_NAME} is not Established yet")
    return spec.get("scope") == "Namespaced"


def delivered_path(obj: Mapping[str, Any]) -> str:
    """The localhostProfile for pods: SPO's status.localhostProfile once it has one, else where SPO puts it."""
    status = (obj.get("status") or {}).get("localhostProfile")
    if status:
        return str(status)
    meta = obj.get("metadata") or {}
    return localhost_profile(meta["name"], meta.get("namespace"))
