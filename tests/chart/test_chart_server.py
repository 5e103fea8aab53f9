"""The chart's rendered manifests against the real kube-apiserver of the local cluster:
`helm template --include-crds | kubectl apply --dry-run=server` for the default values and
every variant of test_chart.VARIANTS (cert-manager, monitoring, SPO, custom resources). The
server runs admission, schema, RBAC-object and webhook-configuration validation on each
object without storing it.

    .venv/bin/pytest -q -m e2e tests/chart/test_chart_server.py
"""
from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_chart import CHART, HELM, VARIANTS

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not HELM.exists(), reason="helm not installed (make setup)")]

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "e2e" / "cluster" / "up.sh"
STUBS = Path(__file__).with_name("stub_crds.yaml")
NS = f"rlchart-{uuid.uuid4().hex[:6]}"


class Kubectl:
    def __init__(self, kubeconfig: str) -> None:
        self.binary = str(HELM.with_name("kubectl"))
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True, env=self.env,
                           timeout=120)
        if check:
            assert r.returncode == 0, f"kubectl {' '.join(args)}:\n{r.stderr}"
        return r


@pytest.fixture(scope="module")
def kubectl() -> Iterator[Kubectl]:
    """The local cluster (up.sh reuses a running one), a scratch namespace, and the add-on CRD
    stand-ins that were not already there (only those are removed afterwards)."""
    up = subprocess.run([str(UP)], capture_output=True, text=True, timeout=3600)
    assert up.returncode == 0, f"up.sh failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}"
    k = Kubectl(up.stdout.strip().splitlines()[-1].split("=", 1)[1])
    names = ["certificates.cert-manager.io", "issuers.cert-manager.io", "podmonitors.monitoring.coreos.com"]
    missing = [n for n in names if k("get", "crd", n, check=False).returncode != 0]
    k("create", "-f", str(STUBS), check=False)  # the ones that exist already are left alone
    k("wait", "--for=condition=Established", *[f"crd/{n}" for n in names], "--timeout=60s")
    k("create", "namespace", NS)
    try:
        yield k
    finally:
        k("delete", "namespace", NS, "--wait=false", check=False)
        if missing:
            k("delete", "crd", *missing, "--wait=false", check=False)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_chart_passes_server_side_dry_run(kubectl: Kubectl, variant: str) -> None:
    t = subprocess.run([str(HELM), "template", "ringlane", str(CHART), "--namespace", NS, "--include-crds",
                        *VARIANTS[variant]], capture_output=True, text=True, timeout=120)
    assert t.returncode == 0, t.stderr
    r = kubectl("apply", "--dry-run=server", "-f", "-", stdin=t.stdout, check=False)
    assert r.returncode == 0, f"{variant}:\n{r.stderr}"
    created = [line for line in r.stdout.splitlines() if "(server dry run)" in line]
    # Every object the template rendered went through the server.
    assert len(created) == t.stdout.count("\nkind: ") + t.stdout.startswith("kind: "), r.stdout


def test_server_rejects_a_broken_render(kubectl: Kubectl) -> None:
    """The dry run can fail: a Deployment the API server refuses (negative replicas) is reported."""
    t = subprocess.run([str(HELM), "template", "ringlane", str(CHART), "--namespace", NS,
                        "--show-only", "templates/deployment.yaml"], capture_output=True, text=True, timeout=120)
    assert t.returncode == 0, t.stderr
    broken = t.stdout.replace("replicas: 1", "replicas: -1")
    assert broken != t.stdout
    r = kubectl("apply", "--dry-run=server", "-f", "-", stdin=broken, check=False)
    assert r.returncode != 0 and "replicas" in r.stderr, r.stderr
