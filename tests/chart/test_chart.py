"""The Helm chart: lint, render variants, schema errors, CRDs in sync, README in sync, RBAC."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ringlane"
HELM = Path(sys.executable).parent / "helm"

pytestmark = pytest.mark.skipif(not HELM.exists(), reason="helm not installed (make setup)")

VARIANTS: dict[str, list[str]] = {
    "default": [],
    "cert-manager": ["--set", "certManager.enabled=true"],
    "cert-manager-issuer": ["--set", "certManager.enabled=true", "--set", "certManager.issuerRef.name=corp-ca",
                            "--set", "certManager.issuerRef.kind=ClusterIssuer"],
    "monitoring": ["--set", "monitoring.podMonitor.enabled=true", "--set", "monitoring.podMonitor.labels.release=prom"],
    "spo": ["--set", "seccomp.securityProfilesOperator=true"],
    "custom-resources": ["--set", "sidecar.cpu=2", "--set", "sidecar.memory=256Mi", "--set", "operator.resources.limits.memory=768Mi",
                         "--set", "podDisruptionBudget.minAvailable=1", "--set", "networkPolicy.enabled=true",
                         "--set", "operator.replicas=2", "--set", "operator.peering=ringlane"],
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def render(*args: str) -> list[dict[str, Any]]:
    r = helm("template", "rl", str(CHART), "--namespace", "ringlane-system", *args)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def kinds(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def test_lint_strict() -> None:
    r = helm("lint", "--strict", str(CHART))
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_render(variant: str) -> None:
    docs = render(*VARIANTS[variant])
    k = kinds(docs)
    for kind in ("Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
                 "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert kind in k, (variant, kind)
    if variant.startswith("cert-manager"):
        assert "Certificate" in k and "Secret" not in k
        assert ("Issuer" in k) == (variant == "cert-manager")
    else:
        assert "Secret" in k and "Certificate" not in k
    assert ("PodMonitor" in k) == (variant == "monitoring")
    assert ("DaemonSet" in k) == (variant != "spo")
    args = k["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    spo_args = ["--seccomp-delivery=spo", "--spo-namespace=ringlane-system"]
    assert [a for a in args if a in spo_args] == (spo_args if variant == "spo" else [])
    if variant == "custom-resources":
        assert "PodDisruptionBudget" in k and "NetworkPolicy" in k
        assert "--proxy-cpu=2" in k["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]


def test_webhooks_follow_the_contract() -> None:
    k = kinds(render())
    (mut,) = k["MutatingWebhookConfiguration"]["webhooks"]
    assert mut["failurePolicy"] == "Fail" and mut["reinvocationPolicy"] == "IfNeeded"
    assert mut["timeoutSeconds"] == 5 and mut["sideEffects"] == "None"
    assert mut["namespaceSelector"] == {"matchLabels": {"ringlane.io/injection": "enabled"}}
    assert mut["objectSelector"]["matchExpressions"][0]["key"] == "ringlane.io/inject"
    assert mut["clientConfig"]["service"]["path"] == "/inject-ringlane"
    (val,) = k["ValidatingWebhookConfiguration"]["webhooks"]
    assert val["clientConfig"]["service"]["path"] == "/validate-proxyroute"
    # one CA per render: the Secret and both caBundles agree
    ca = k["Secret"]["data"]["ca.crt"]
    assert mut["clientConfig"]["caBundle"] == ca == val["clientConfig"]["caBundle"]


def test_operator_pod_is_restricted() -> None:
    spec = kinds(render())["Deployment"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"livenessProbe", "readinessProbe", "startupProbe", "resources"} <= set(c)


@pytest.mark.parametrize("args,message", [
    (["--set", "sidecar.engine=uring"], "/sidecar/engine"),
    (["--set", "sidecar.cpu=0"], "/sidecar/cpu"),
    (["--set", "webhook.failurePolicy=Maybe"], "/webhook/failurePolicy"),
    (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["--set", "seccomp.hostDir=relative/dir"], "/seccomp/hostDir"),
    (["--set", "sidecar.memory=lots"], "/sidecar/memory"),
    (["--set", "operatr.replicas=2"], "additional properties 'operatr' not allowed"),
])
def test_bad_values_are_rejected_readably(args: list[str], message: str) -> None:
    r = helm("template", "rl", str(CHART), *args)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
    assert "panic" not in r.stderr.lower()


def test_spo_flags_are_ones_the_operator_takes() -> None:
    from ringlane_operator.options import parse_options

    (c,) = kinds(render(*VARIANTS["spo"]))["Deployment"]["spec"]["template"]["spec"]["containers"]
    opts = parse_options(c["args"], {})
    assert opts.seccomp_delivery == "spo" and opts.spo_namespace == "ringlane-system"
    assert opts.inject.seccomp_profile == "operator/ringlane-proxy-io-uring.json"


@pytest.mark.parametrize("variant", ["default", "spo"])
def test_notes_say_how_seccomp_is_delivered(variant: str) -> None:
    r = subprocess.run([str(HELM), "install", "rl", str(CHART), "--namespace", "ringlane-system", "--dry-run=client",
                        *VARIANTS[variant]], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "KUBECONFIG": os.devnull})
    assert r.returncode == 0, r.stderr
    notes = r.stdout.split("\nNOTES:\n", 1)[1]
    assert ("operator/ringlane-proxy-io-uring.json" in notes) == (variant == "spo"), notes


def test_chart_crds_match_the_source_of_truth() -> None:
    for crd in (ROOT / "crds").glob("*.yaml"):
        assert (CHART / "crds" / crd.name).read_text() == crd.read_text(), crd.name


def test_readme_is_generated_from_values() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "chart_readme.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("peering,spo", [(True, True), (False, False), (True, False), (False, True)])
def test_cluster_role_is_what_the_operator_declares(peering: bool, spo: bool) -> None:
    from ringlane_operator.rbac import operator_cluster_role

    args = [*(["--set", "operator.peering=x"] if peering else []),
            *(["--set", "seccomp.securityProfilesOperator=true"] if spo else [])]
    chart_rules = kinds(render(*args))["ClusterRole"]["rules"]
    want = [r for r in operator_cluster_role(peering=peering, spo=spo)["rules"]
            if "admissionregistration.k8s.io" not in r["apiGroups"]]  # the chart owns the webhooks

    def norm(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {(g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]}

    assert norm(chart_rules) == norm(want)
