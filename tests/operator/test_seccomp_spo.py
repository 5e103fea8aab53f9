"""Seccomp delivery through the Security Profiles Operator: the OCI profile -> SeccompProfile
mapping, the update decision, the CRD check, the paths pods get, and the options/RBAC/inject
wiring of --seccomp-delivery spo."""
from __future__ import annotations

import copy
from typing import Any

import pytest
from operator_builders import pod

from ringlane_operator.inject import inject_patch
from ringlane_operator.inject_settings import InjectSettings
from ringlane_operator.options import parse_options
from ringlane_operator.patchops import apply_patch
from ringlane_operator.rbac import operator_cluster_role
from ringlane_operator.seccomp_spo import (
    API_VERSION,
    CRD_NAME,
    ProfileError,
    SpoNotReady,
    SpoUnavailable,
    crd_scope,
    delivered_path,
    localhost_profile,
    profile_name,
    replacement,
    seccomp_profile_object,
    spo_spec,
)
from ringlane_sidecar.confine.profile import seccomp_profile
from ringlane_sidecar.confine.uring_ops import SETUP_REGISTER_OPS, UringAllowlist

ALLOWLIST = UringAllowlist(sqe_ops=(13, 26, 27), sqe_flags=1 | 32, runtime_register_ops=(20, 22))


def rule(names: list[str], args: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ALLOW", **extra}
    if args is not None:
        out["args"] = args
    return out


def oci(*rules: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1, "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": list(rules), **top}


def to_oci(spec: dict[str, Any]) -> dict[str, Any]:
    """The inverse mapping (what SPO writes on the node), to show nothing was lost."""
    out = copy.deepcopy(spec)
    out["defaultErrnoRet"] = 1  # what the runtimes use for SCMP_ACT_ERRNO without one
    return out


def without_comments(profile: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(profile)
    for r in out["syscalls"]:
        r.pop("comment", None)
    return out


# ------------------------------------------------------------------ the mapping
MAPPINGS = [
    ("plain allow list", oci(rule(["read", "write"])),
     {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}),
    ("EQ on argument 1 with valueTwo 0 (profile.py's io_uring_register rules)",
     oci(rule(["io_uring_register"], [{"index": 1, "value": 22, "valueTwo": 0, "op": "SCMP_CMP_EQ"}], comment="opcode 22")),
     {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "syscalls": [{"names": ["io_uring_register"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 1, "value": 22, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]}),
    ("no valueTwo stays without one", oci(rule(["socket"], [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}])),
     {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]}]}),
    ("masked EQ keeps its mask, two conditions keep their order",
     oci(rule(["clone"], [{"index": 0, "value": 0, "valueTwo": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"},
                          {"index": 5, "value": 2**64 - 1, "op": "SCMP_CMP_NE"}])),
     {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "syscalls": [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 0, "valueTwo": 0x7E020000, "op": "SCMP_CMP_MASKED_EQ"},
                             {"index": 5, "value": 2**64 - 1, "op": "SCMP_CMP_NE"}]}]}),
    ("flags, listener, no errno, no architectures",
     {"defaultAction": "SCMP_ACT_LOG", "flags": ["SECCOMP_FILTER_FLAG_LOG"], "listenerPath": "/run/agent.sock",
      "listenerMetadata": "x", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     {"defaultAction": "SCMP_ACT_LOG", "flags": ["SECCOMP_FILTER_FLAG_LOG"], "listenerPath": "/run/agent.sock",
      "listenerMetadata": "x", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
    ("empty args list is no condition", oci(rule(["read"], [])),
     {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}),
]


@pytest.mark.parametrize("profile,want", [m[1:] for m in MAPPINGS], ids=[m[0] for m in MAPPINGS])
def test_mapping(profile: dict[str, Any], want: dict[str, Any]) -> None:
    assert spo_spec(profile) == want


REFUSED = [
    ("errno other than EPERM", {**oci(), "defaultErrnoRet": 38}, "only EPERM"),
    ("per-rule errnoRet", oci(rule(["mkdir"], errnoRet=13)), "syscalls[0]: unknown field(s) errnoRet"),
    ("unknown top-level field", {**oci(), "includes": {}}, "unknown field(s) includes"),
    ("no defaultAction", {"syscalls": []}, "defaultAction is required"),
    ("unknown arg field", oci(rule(["x"], [{"index": 1, "value": 2, "op": "SCMP_CMP_EQ", "mask": 3}])),
     "syscalls[0].args[0]: unknown field(s) mask"),
    ("arg without op", oci(rule(["x"], [{"index": 1, "value": 2}])), "syscalls[0].args[0]: op is required"),
    ("arg without value", oci(rule(["x"], [{"index": 1, "op": "SCMP_CMP_EQ"}])), "value is required"),
    ("index 6", oci(rule(["x"], [{"index": 6, "value": 2, "op": "SCMP_CMP_EQ"}])), "arguments 0 to 5"),
    ("negative value", oci(rule(["x"], [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}])), "not an unsigned integer"),
    ("boolean value", oci(rule(["x"], [{"index": 0, "value": True, "op": "SCMP_CMP_EQ"}])), "not an unsigned integer"),
    ("bad operator", oci(rule(["x"], [{"index": 0, "value": 1, "op": "=="}])), "not an SCMP_CMP_* operator"),
    ("seven conditions", oci(rule(["x"], [{"index": i % 6, "value": 0, "op": "SCMP_CMP_EQ"} for i in range(7)])),
     "7 conditions, at most 6"),
    ("no names", oci(rule([])), "syscalls[0].names"),
    ("no action", oci({"names": ["read"]}), "syscalls[0].action is required"),
]


@pytest.mark.parametrize("profile,message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_what_cannot_be_carried_is_refused(profile: dict[str, Any], message: str) -> None:
    with pytest.raises(ProfileError) as info:
        spo_spec(profile)
    assert message in str(info.value)


@pytest.mark.parametrize("engine", ["io_uring", "epoll"])
def test_the_sidecar_profiles_survive_the_round_trip(engine: str) -> None:
    profile = seccomp_profile(engine, ALLOWLIST if engine == "io_uring" else None)
    obj = seccomp_profile_object(engine, profile)
    assert to_oci(obj["spec"]) == without_comments(profile)


def test_io_uring_register_keeps_its_opcode_allowlist() -> None:
    spec = spo_spec(seccomp_profile("io_uring", ALLOWLIST))
    register = [r for r in spec["syscalls"] if "io_uring_register" in r["names"]]
    assert all(r["names"] == ["io_uring_register"] and r["action"] == "SCMP_ACT_ALLOW" for r in register)
    assert [r["args"] for r in register] == [[{"index": 1, "value": op, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]
                                             for op in sorted({20, 22} | set(SETUP_REGISTER_OPS))]
    unconditional = {n for r in spec["syscalls"] if "args" not in r for n in r["names"]}
    assert "io_uring_register" not in unconditional and {"io_uring_setup", "io_uring_enter"} <= unconditional


def test_with_the_real_core_allowlist() -> None:
    from ringlane_sidecar.confine.uring_ops import from_core

    profile = seccomp_profile("io_uring", from_core())
    assert to_oci(spo_spec(profile)) == without_comments(profile)


# ------------------------------------------------------------------ objects and paths
@pytest.mark.parametrize("engine,name,path", [
    ("io_uring", "ringlane-proxy-io-uring", "operator/ringlane-proxy-io-uring.json"),
    ("epoll", "ringlane-proxy-epoll", "operator/ringlane-proxy-epoll.json"),
])
def test_names_and_paths(engine: str, name: str, path: str) -> None:
    assert profile_name(engine) == name and localhost_profile(name) == path
    obj = seccomp_profile_object(engine, seccomp_profile(engine, ALLOWLIST if engine == "io_uring" else None))
    assert obj["apiVersion"] == API_VERSION == "security-profiles-operator.x-k8s.io/v1beta1"
    assert obj["kind"] == "SeccompProfile" and obj["metadata"]["name"] == name and "namespace" not in obj["metadata"]
    assert obj["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "ringlane", "app.kubernetes.io/name": "ringlane",
                                         "app.kubernetes.io/component": "seccomp-profile", "ringlane.io/engine": engine}
    assert delivered_path(obj) == path


def test_unknown_engine() -> None:
    with pytest.raises(ValueError, match="unknown engine 'auto'"):
        profile_name("auto")


@pytest.mark.parametrize("obj,path", [
    ({"metadata": {"name": "ringlane-proxy-epoll"}}, "operator/ringlane-proxy-epoll.json"),
    ({"metadata": {"name": "ringlane-proxy-epoll", "namespace": "ringlane-system"}},
     "operator/ringlane-system/ringlane-proxy-epoll.json"),  # namespaced CRD (older SPO)
    ({"metadata": {"name": "ringlane-proxy-epoll"}, "status": {"localhostProfile": "operator/elsewhere.json"}},
     "operator/elsewhere.json"),  # SPO says where it wrote it
    ({"metadata": {"name": "ringlane-proxy-epoll"}, "status": {"status": "Pending"}}, "operator/ringlane-proxy-epoll.json"),
])
def test_delivered_path(obj: dict[str, Any], path: str) -> None:
    assert delivered_path(obj) == path


def test_namespaced_object() -> None:
    obj = seccomp_profile_object("epoll", seccomp_profile("epoll", None), namespace="ringlane-system")
    assert obj["metadata"]["namespace"] == "ringlane-system"


# ------------------------------------------------------------------ create or update
def stored(want: dict[str, Any]) -> dict[str, Any]:
    """As the API server (and SPO) hand it back: server fields, SPO's finalizer and status."""
    have = copy.deepcopy(want)
    have["metadata"].update(resourceVersion="41", uid="u-1", creationTimestamp="2026-01-01T00:00:00Z",
                            finalizers=["node-1-deleted"], annotations={"note": "kept"})
    have["metadata"]["labels"]["team"] = "security"
    have["status"] = {"status": "Installed", "localhostProfile": "operator/ringlane-proxy-epoll.json"}
    return have


WANT = seccomp_profile_object("epoll", seccomp_profile("epoll", None))


def test_nothing_to_write_when_it_holds_ours() -> None:
    assert replacement(stored(WANT), WANT) is None


@pytest.mark.parametrize("change", ["spec", "label", "label value"])
def test_replacement_keeps_what_is_not_ours(change: str) -> None:
    have = stored(WANT)
    if change == "spec":
        have["spec"]["syscalls"][0]["names"].append("mkdir")
    elif change == "label":
        del have["metadata"]["labels"]["ringlane.io/engine"]
    else:
        have["metadata"]["labels"]["app.kubernetes.io/managed-by"] = "someone"
    fresh = replacement(have, WANT)
    assert fresh is not None
    assert fresh["spec"] == WANT["spec"] and "status" not in fresh
    meta = fresh["metadata"]
    assert meta["resourceVersion"] == "41" and meta["finalizers"] == ["node-1-deleted"]
    assert meta["annotations"] == {"note": "kept"}
    assert meta["labels"] == {**WANT["metadata"]["labels"], "team": "security"}
    assert have["spec"] != WANT["spec"] or change != "spec"  # the input is not modified


# ------------------------------------------------------------------ the CRD
def crd(scope: str = "Cluster", versions: tuple[tuple[str, bool], ...] = (("v1alpha1", False), ("v1beta1", True)),
        established: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": CRD_NAME},
            "spec": {"scope": scope, "versions": [{"name": n, "served": s} for n, s in versions]},
            "status": {"conditions": [{"type": "Established", "status": "True" if established else "False"}]}}


@pytest.mark.parametrize("body,namespaced", [(crd(), False), (crd("Namespaced"), True)])
def test_crd_scope(body: dict[str, Any], namespaced: bool) -> None:
    assert crd_scope(body) is namespaced


@pytest.mark.parametrize("body,error,message", [
    (None, SpoUnavailable, f"CustomResourceDefinition {CRD_NAME} is not installed: install the Security Profiles "
                           "Operator, or deliver the profiles with the node installer"),
    (crd(versions=(("v1alpha1", True), ("v1beta1", False))), SpoUnavailable, "does not serve v1beta1 (served: v1alpha1)"),
    (crd(established=False), SpoNotReady, "not Established yet"),
])
def test_crd_problems(body: dict[str, Any] | None, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        crd_scope(body)
    assert message in str(info.value)
    assert type(info.value) is error


# ------------------------------------------------------------------ wiring
@pytest.mark.parametrize("argv,env,delivery,io_uring,epoll", [
    (["--dev"], {}, "node", "ringlane/proxy-io_uring.json", None),
    (["--dev", "--seccomp-profile", "RuntimeDefault"], {}, "node", "RuntimeDefault", None),
    (["--dev", "--seccomp-delivery", "spo"], {}, "spo", "operator/ringlane-proxy-io-uring.json",
     "operator/ringlane-proxy-epoll.json"),
    (["--dev"], {"RINGLANE_SECCOMP_DELIVERY": "spo"}, "spo", "operator/ringlane-proxy-io-uring.json",
     "operator/ringlane-proxy-epoll.json"),
    (["--dev", "--seccomp-delivery", "node"], {"RINGLANE_SECCOMP_DELIVERY": "spo"}, "node",
     "ringlane/proxy-io_uring.json", None),
])
def test_delivery_options(argv: list[str], env: dict[str, str], delivery: str, io_uring: str, epoll: str | None) -> None:
    o = parse_options(argv, env)
    assert (o.seccomp_delivery, o.inject.seccomp_profile, o.inject.seccomp_profile_epoll) == (delivery, io_uring, epoll)


@pytest.mark.parametrize("argv,env,message", [
    (["--dev", "--seccomp-delivery", "spo", "--seccomp-profile", "x.json"], {}, "do not go together"),
    (["--dev", "--seccomp-delivery", "nodes"], {}, "invalid choice"),
    (["--dev"], {"RINGLANE_SECCOMP_DELIVERY": "SPO"}, "RINGLANE_SECCOMP_DELIVERY='SPO'"),
])
def test_bad_delivery_options(argv: list[str], env: dict[str, str], message: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(argv, env)
    assert message in capsys.readouterr().err


def test_spo_namespace_option() -> None:
    assert parse_options(["--dev", "--spo-namespace", "ops"], {}).spo_namespace == "ops"
    assert parse_options(["--dev"], {"RINGLANE_SPO_NAMESPACE": "ops"}).spo_namespace == "ops"
    assert parse_options(["--dev"], {}).spo_namespace is None


SPO = InjectSettings(seccomp_profile="operator/ringlane-proxy-io-uring.json",
                     seccomp_profile_epoll="operator/ringlane-proxy-epoll.json")


@pytest.mark.parametrize("settings,engine,annotation,path", [
    (SPO, "auto", None, "operator/ringlane-proxy-io-uring.json"),
    (SPO, "io_uring", None, "operator/ringlane-proxy-io-uring.json"),
    (SPO, "epoll", None, "operator/ringlane-proxy-epoll.json"),
    (SPO, "epoll", "io_uring", "operator/ringlane-proxy-io-uring.json"),  # the pod's own engine decides
    (SPO, "auto", "epoll", "operator/ringlane-proxy-epoll.json"),
    (InjectSettings(), "auto", "epoll", "ringlane/proxy-io_uring.json"),  # node delivery: as before
    (InjectSettings(engine="epoll"), "epoll", None, "ringlane/proxy-io_uring.json"),
])
def test_injected_profile_follows_the_engine(settings: InjectSettings, engine: str, annotation: str | None,
                                             path: str) -> None:
    import dataclasses

    p = pod(annotations={"ringlane.io/engine": annotation} if annotation else None)
    ops, _ = inject_patch(p, dataclasses.replace(settings, engine=engine), {"ringlane.io/injection": "enabled"})
    (proxy,) = [c for c in apply_patch(p, ops)["spec"]["initContainers"] if c["name"] == "ringlane-proxy"]
    assert proxy["securityContext"]["seccompProfile"] == {"type": "Localhost", "localhostProfile": path}


@pytest.mark.parametrize("spo", [True, False])
def test_cluster_role_has_exactly_the_calls_of_spo_delivery(spo: bool) -> None:
    rules = [r for r in operator_cluster_role(spo=spo)["rules"] if "seccompprofiles" in r["resources"]]
    assert rules == ([{"apiGroups": ["security-profiles-operator.x-k8s.io"], "resources": ["seccompprofiles"],
                       "verbs": ["get", "create", "update"]}] if spo else [])
    crds = next(r for r in operator_cluster_role(spo=spo)["rules"] if r["resources"] == ["customresourcedefinitions"])
    assert "get" in crds["verbs"]  # the CRD check
