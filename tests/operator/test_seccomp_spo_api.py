"""--seccomp-delivery spo against a real kube-apiserver (e2e/cluster/up.sh), operator in --dev.

    .venv/bin/pytest -q -m e2e tests/operator/test_seccomp_spo_api.py

SPO itself cannot run here (its images come from a registry we cannot reach), so a stand-in
CRD with SPO's coordinates (security-profiles-operator.x-k8s.io/v1beta1 SeccompProfile,
cluster-scoped, spec kept as given) takes its place: what is tested is the operator's side
of the contract: the CRD check, the objects it writes, idempotent restarts (also under the
chart's ClusterRole, through a ServiceAccount token), and the path injected pods get. The
stand-in CRD, namespaces and RBAC objects are removed at the end; a real SPO CRD found in
the cluster is left alone (the tests are skipped).
"""
from __future__ import annotations

import contextlib
import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_operator_api as base
import yaml
from test_operator_api import OPERATOR, RUN, Kubectl, pod, running_operator, wait_for

from ringlane_operator.rbac import operator_cluster_role
from ringlane_operator.seccomp_spo import CRD_NAME, spo_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
kubeconfig, kubectl, crd = base.kubeconfig, base.kubectl, base.crd  # the same cluster fixtures

SIDECAR = OPERATOR.with_name("ringlane-sidecar")
NS = f"rlspo-{RUN}"  # injection enabled
STAND_IN_LABEL = {"ringlane.io/test": "spo-stand-in"}
NAMES = {"io_uring": "ringlane-proxy-io-uring", "epoll": "ringlane-proxy-epoll"}


def stand_in_crd(scope: str = "Cluster") -> dict[str, Any]:
    """SPO's SeccompProfile as far as the API server needs to know it: coordinates, scope, a status
    subresource, and a spec kept as given (SPO's real schema is typed; this one checks nothing)."""
    kept = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": STAND_IN_LABEL},
        "spec": {
            "group": "security-profiles-operator.x-k8s.io", "scope": scope,
            "names": {"kind": "SeccompProfile", "listKind": "SeccompProfileList", "plural": "seccompprofiles",
                      "singular": "seccompprofile", "shortNames": ["sp"]},
            "versions": [{"name": "v1beta1", "served": True, "storage": True, "subresources": {"status": {}},
                          "schema": {"openAPIV3Schema": {"type": "object",
                                                         "properties": {"spec": kept, "status": kept}}}}],
        },
    }


def existing_crd(kubectl: Kubectl) -> dict[str, Any] | None:
    out = kubectl.run("get", "crd", CRD_NAME, "-o", "json", "--ignore-not-found")
    return json.loads(out.stdout) if out.stdout.strip() else None


def remove_stand_in(kubectl: Kubectl) -> None:
    found = existing_crd(kubectl)
    if found is not None:
        assert found["metadata"].get("labels", {}).get("ringlane.io/test") == "spo-stand-in"
        kubectl.run("delete", "crd", CRD_NAME, "--timeout=60s")


def install_stand_in(kubectl: Kubectl, scope: str = "Cluster") -> None:
    kubectl.apply(stand_in_crd(scope))
    kubectl.run("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=30s")
    # the API server serves a new CRD a moment after it is Established
    wait_for("seccompprofiles served", lambda: kubectl.run("get", "seccompprofiles", check=False).returncode == 0)


@pytest.fixture(scope="module")
def clean_slate(kubectl: Kubectl, crd: None) -> Iterator[None]:
    found = existing_crd(kubectl)
    if found is not None and found["metadata"].get("labels", {}).get("ringlane.io/test") != "spo-stand-in":
        pytest.skip(f"{CRD_NAME} is installed for real here: not replacing it with a stand-in")
    remove_stand_in(kubectl)  # a previous run's, if it was interrupted
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": NS, "labels": {"ringlane.io/injection": "enabled"}}})
    yield
    remove_stand_in(kubectl)
    kubectl.run("delete", "namespace", NS, "--wait=false", check=False)


def sidecar_profile(engine: str) -> dict[str, Any]:
    """What `ringlane-sidecar seccomp-profile` prints: the source the objects must carry."""
    out = subprocess.run([str(SIDECAR), "seccomp-profile", "--engine", engine], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def profiles(kubectl: Kubectl, namespace: str | None = None) -> dict[str, dict[str, Any]]:
    ns = ["-n", namespace] if namespace else []
    out = kubectl.run(*ns, "get", "seccompprofiles", "-l", "app.kubernetes.io/managed-by=ringlane", "-o", "json")
    return {o["metadata"]["name"]: o for o in json.loads(out.stdout)["items"]}


def injected_profile(kubectl: Kubectl, name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    out = kubectl.run("-n", NS, "create", "-o", "json", "-f", "-", stdin=json.dumps(pod(name, annotations=annotations)))
    (proxy,) = [c for c in json.loads(out.stdout)["spec"]["initContainers"] if c["name"] == "ringlane-proxy"]
    return proxy["securityContext"]["seccompProfile"]


def run_to_exit(kubectl: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(OPERATOR), "--dev", "-n", NS, "--webhook-name", f"rlspo-{RUN}", *args],
                          env=kubectl.env, capture_output=True, text=True, timeout=90)


# ------------------------------------------------------------------ tests (in order)
def test_without_the_crd_spo_delivery_fails_clearly(kubectl: Kubectl, clean_slate: None) -> None:
    assert existing_crd(kubectl) is None
    out = run_to_exit(kubectl, "--seccomp-delivery", "spo")
    assert out.returncode == 2, out.stdout + out.stderr
    said = f"ringlane-operator: --seccomp-delivery spo: CustomResourceDefinition {CRD_NAME} is not installed: " \
           "install the Security Profiles Operator, or deliver the profiles with the node installer"
    assert said in out.stderr, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    gone = kubectl.run("get", "mutatingwebhookconfiguration", f"rlspo-{RUN}", "--ignore-not-found", "-o", "name")
    assert gone.stdout.strip() == "", "no webhook may be published when start-up failed"


def test_profiles_are_created_and_injected(kubectl: Kubectl, clean_slate: None, tmp_path: Path) -> None:
    install_stand_in(kubectl)
    with running_operator(kubectl, [NS], tmp_path / "operator.log", "--seccomp-delivery", "spo"):
        got = profiles(kubectl)
        assert set(got) == set(NAMES.values())
        for engine, name in NAMES.items():
            obj = got[name]
            assert obj["apiVersion"] == "security-profiles-operator.x-k8s.io/v1beta1" and obj["kind"] == "SeccompProfile"
            assert "namespace" not in obj["metadata"]
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ringlane"
            assert obj["metadata"]["labels"]["ringlane.io/engine"] == engine
            assert obj["spec"] == spo_spec(sidecar_profile(engine))
        spec = got[NAMES["io_uring"]]["spec"]
        assert spec["defaultAction"] == "SCMP_ACT_ERRNO" and spec["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]
        register = [r["args"] for r in spec["syscalls"] if "io_uring_register" in r["names"]]
        assert register and all(a == [{"index": 1, "value": a[0]["value"], "valueTwo": 0, "op": "SCMP_CMP_EQ"}]
                                for a in register)
        assert not any("io_uring" in n for r in got[NAMES["epoll"]]["spec"]["syscalls"] for n in r["names"])
        log = (tmp_path / "operator.log").read_text()
        assert f"SeccompProfile {NAMES['io_uring']} created" in log, log[-3000:]

        wait_for("the default ServiceAccount", lambda: kubectl.get("serviceaccount", "default", NS))
        assert injected_profile(kubectl, "uring") == {"type": "Localhost",
                                                      "localhostProfile": "operator/ringlane-proxy-io-uring.json"}
        assert injected_profile(kubectl, "epoll", {"ringlane.io/engine": "epoll"}) == {
            "type": "Localhost", "localhostProfile": "operator/ringlane-proxy-epoll.json"}


@contextlib.contextmanager
def scoped_kubeconfig(kubectl: Kubectl, kubeconfig: str, path: Path, spo: bool = True) -> Iterator[Kubectl]:
    """A kubeconfig with the token of a ServiceAccount bound to exactly the operator's ClusterRole
    (what the chart grants, with seccomp.securityProfilesOperator=<spo>, plus webhook
    configurations, which --dev manages)."""
    role = operator_cluster_role(f"rlspo-{RUN}", peering=False, spo=spo)
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": f"rlspo-{RUN}"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"rlspo-{RUN}"},
               "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": NS}]}
    kubectl.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator", "namespace": NS}},
                   role, binding])
    try:
        token = kubectl.run("-n", NS, "create", "token", "operator", "--duration=1h").stdout.strip()
        config = yaml.safe_load(Path(kubeconfig).read_text())
        config["users"] = [{"name": "operator", "user": {"token": token}}]
        for ctx in config["contexts"]:
            ctx["context"]["user"] = "operator"
        path.write_text(yaml.safe_dump(config))
        scoped = copy.copy(kubectl)
        scoped.env = {**kubectl.env, "KUBECONFIG": str(path)}
        yield scoped
    finally:
        kubectl.run("delete", "clusterrolebinding,clusterrole", f"rlspo-{RUN}", "--ignore-not-found", check=False)


def test_restart_is_idempotent_and_restores_the_spec(kubectl: Kubectl, kubeconfig: str, clean_slate: None,
                                                     tmp_path: Path) -> None:
    before = profiles(kubectl)
    assert set(before) == set(NAMES.values()), "needs the previous test's objects"
    versions = {n: o["metadata"]["resourceVersion"] for n, o in before.items()}
    with scoped_kubeconfig(kubectl, kubeconfig, tmp_path / "kubeconfig") as scoped:
        with running_operator(scoped, [NS], tmp_path / "restart.log", "--seccomp-delivery", "spo"):
            after = profiles(kubectl)
            assert {n: o["metadata"]["resourceVersion"] for n, o in after.items()} == versions
            log = (tmp_path / "restart.log").read_text()
            assert f"SeccompProfile {NAMES['io_uring']} unchanged" in log and "Traceback" not in log, log[-3000:]
            assert "Forbidden" not in log and "403" not in log, log[-3000:]  # the ClusterRole is enough

        # Someone edits a profile and labels it: the next start puts the spec back, keeps their label.
        epoll = NAMES["epoll"]
        kubectl.run("patch", "seccompprofile", epoll, "--type=json", "-p",
                    json.dumps([{"op": "add", "path": "/spec/syscalls/0/names/-", "value": "ptrace"}]))
        kubectl.run("label", "seccompprofile", epoll, "team=security")
        edited = profiles(kubectl)[epoll]
        assert edited["spec"] != before[epoll]["spec"]
        with running_operator(scoped, [NS], tmp_path / "repair.log", "--seccomp-delivery", "spo"):
            repaired = profiles(kubectl)
            assert repaired[epoll]["spec"] == before[epoll]["spec"]
            assert repaired[epoll]["metadata"]["labels"]["team"] == "security"
            assert repaired[NAMES["io_uring"]]["metadata"]["resourceVersion"] == versions[NAMES["io_uring"]]
            assert f"SeccompProfile {epoll} updated" in (tmp_path / "repair.log").read_text()


def test_without_the_rbac_spo_delivery_fails_clearly(kubectl: Kubectl, kubeconfig: str, clean_slate: None,
                                                    tmp_path: Path) -> None:
    with scoped_kubeconfig(kubectl, kubeconfig, tmp_path / "kubeconfig", spo=False) as scoped:
        out = run_to_exit(scoped, "--seccomp-delivery", "spo")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "ringlane-operator: --seccomp-delivery spo: not allowed to write seccompprofiles: 403" in out.stderr
    assert "seccomp.securityProfilesOperator=true" in out.stderr, out.stderr[-3000:]


def test_status_path_from_spo_wins(kubectl: Kubectl, clean_slate: None, tmp_path: Path) -> None:
    """SPO records where it wrote the profile in status.localhostProfile: pods get that path."""
    name = NAMES["io_uring"]
    kubectl.run("patch", "seccompprofile", name, "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": {"status": "Installed", "localhostProfile": "operator/elsewhere/uring.json"}}))
    with running_operator(kubectl, [NS], tmp_path / "operator.log", "--seccomp-delivery", "spo"):
        assert injected_profile(kubectl, "status-path") == {"type": "Localhost",
                                                            "localhostProfile": "operator/elsewhere/uring.json"}


def test_namespaced_crd_of_older_spo_releases(kubectl: Kubectl, clean_slate: None, tmp_path: Path) -> None:
    remove_stand_in(kubectl)
    install_stand_in(kubectl, "Namespaced")
    out = run_to_exit(kubectl, "--seccomp-delivery", "spo")
    assert out.returncode == 2 and "is namespaced" in out.stderr and "--spo-namespace" in out.stderr, out.stderr[-3000:]
    with running_operator(kubectl, [NS], tmp_path / "operator.log", "--seccomp-delivery", "spo", "--spo-namespace", NS):
        assert set(profiles(kubectl, NS)) == set(NAMES.values())
        assert injected_profile(kubectl, "namespaced") == {
            "type": "Localhost", "localhostProfile": f"operator/{NS}/ringlane-proxy-io-uring.json"}
    remove_stand_in(kubectl)
