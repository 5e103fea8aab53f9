"""The user journey on the local cluster, in order: helm install, opt a namespace in, deploy,
route with a ProxyRoute, check pinning/seccomp/engine and the traffic split, scrape with a real
Prometheus, change the route and measure convergence, then delete and uninstall. The faults
it must survive are in test_faults.py."""
from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from cluster_steps import NS, ROOT, SYSTEM, deploy_app, helm_install, sidecar_exec
from journey_support import get, percentile, proxyroute, send, wait_until

pytestmark = pytest.mark.e2e
RESULTS = ROOT / "e2e" / "results"


@pytest.fixture(scope="module")
def installed(cluster: Any) -> Iterator[Any]:
    """Step 1: helm install from the image the Dockerfile built; the operator becomes Ready."""
    r = helm_install(cluster)
    assert "kubectl label namespace" in r.stdout  # NOTES.txt tells the user what to do next
    yield cluster


@pytest.fixture(scope="module")
def app(installed: Any) -> Iterator[dict[str, Any]]:
    """Step 2-3: label the namespace, deploy backends and the app, apply the ProxyRoute."""
    yield deploy_app(installed)



def test_each_app_pod_has_exactly_one_sidecar(app: dict[str, Any]) -> None:
    inits = [c for c in app["spec"].get("initContainers", []) if c["name"] == "ringlane-proxy"]
    plain = [c for c in app["spec"]["containers"] if c["name"] == "ringlane-proxy"]
    assert len(inits) + len(plain) == 1
    assert app["status"]["qosClass"] == "Guaranteed"


def test_sidecar_is_pinned_confined_and_on_io_uring(installed: Any, app: dict[str, Any]) -> None:
    status = sidecar_exec(installed, app, "cat", "/proc/1/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Seccomp"].strip() == "2", "the sidecar must run under its Localhost profile"
    assert fields["Cpus_allowed_list"].strip() == "1", "kubelet's static CPU manager gives the sidecar CPU 1"
    spec = next(c for c in app["spec"].get("initContainers", []) + app["spec"]["containers"]
                if c["name"] == "ringlane-proxy")
    assert spec["securityContext"]["seccompProfile"]["type"] == "Localhost"
    view = json.loads(sidecar_exec(installed, app, "python3", "-c",
                                   "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9901/config').read().decode())"))
    assert view["engine"] == "io_uring", view
    assert view["cpus"] == [1], view
    assert view["confinement"]["seccomp_profile"] == "filter" and view["confinement"]["seccomp_lock"].startswith("on")


def test_traffic_split_and_header_rewrites(app: dict[str, Any]) -> None:
    seen, bodies = send(app["status"]["podIP"], 8080, 1000)
    assert sum(seen.values()) == 1000 and set(seen) <= {"api", "api-canary"}, seen
    # 10% canary: binomial(1000, 0.1) has sd 9.5; 5 sd either side.
    assert abs(seen["api-canary"] - 100) <= 5 * math.sqrt(1000 * 0.1 * 0.9), seen
    b = bodies[0]
    assert b["path"] == "/v1/items"                     # ReplacePrefixMatch /api -> /v1
    assert b["headers"]["x-env"] == "e2e"               # set
    assert "x-debug" not in b["headers"]                # removed
    assert b["headers"]["x-forwarded-for"]              # appended by the proxy
    assert len({x["pod"] for x in bodies if x["backend"] == "api"}) == 3  # every replica serves
    # The header match: without x-user the rule does not apply (no other rule: 404).
    status, _ = get(app["status"]["podIP"], 8080, "/api/items", {"Host": "shop.example.com"})
    assert status == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _promql(port: int, query: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        data = json.load(r)
    assert data["status"] == "success", data
    return list(data["data"]["result"])


def pod_scrape_targets(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus file_sd targets from the prometheus.io/* annotations injection adds (pure)."""
    out = []
    for p in pods:
        ann = p["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") != "true" or not p["status"].get("podIP"):
            continue
        out.append({"targets": [f'{p["status"]["podIP"]}:{ann.get("prometheus.io/port", "9901")}'],
                    "labels": {"pod": p["metadata"]["name"], "namespace": p["metadata"]["namespace"],
                               "__metrics_path__": ann.get("prometheus.io/path", "/metrics")}})
    return out


def test_prometheus_discovers_and_scrapes_every_sidecar(installed: Any, app: dict[str, Any], tmp_path: Path) -> None:
    """Step 5: Prometheus from Debian scrapes every sidecar found through the pods' prometheus.io
    annotations; PromQL returns exactly the requests this test sent. (Debian builds Prometheus
    without kubernetes_sd_configs, so discovery is a file_sd written from the pod list.)"""
    prom = shutil.which("prometheus")
    assert prom, "prometheus (Debian) is installed by make setup"
    pods = json.loads(installed.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    targets_file = tmp_path / "sidecars.json"
    targets_file.write_text(json.dumps(pod_scrape_targets(pods)))
    port = _free_port()
    (tmp_path / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "ringlane-sidecars",
                            "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": "1s"}]}],
    }))
    proc = subprocess.Popen([prom, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def targets_up() -> list[dict[str, Any]] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2) as r:
                    active = json.load(r)["data"]["activeTargets"]
            except OSError:
                return None
            return active if active and all(t["health"] == "up" for t in active) else None

        targets = wait_until(targets_up, 60, "Prometheus to discover and scrape the sidecars", 0.5)
        assert {t["labels"]["pod"] for t in targets} == {app["metadata"]["name"]}  # every injected pod

        def total() -> float:
            res = _promql(port, "sum(ringlane_http_requests_total)")
            return float(res[0]["value"][1]) if res else -1.0

        before = wait_until(lambda: total() >= 0 and total(), 30, "a first sample", 0.5)
        sent = 137
        seen, _ = send(app["status"]["podIP"], 8080, sent)
        assert sum(seen.values()) == sent
        wait_until(lambda: total() == before + sent, 30, f"PromQL to count {sent} more requests", 0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_route_changes_converge_quickly(installed: Any, app: dict[str, Any]) -> None:
    """Step 6: 20 changes (new weights, a new rule), time from `kubectl apply` to the new
    behaviour on the wire; then scale a backend and see its endpoints follow."""
    ip = app["status"]["podIP"]
    times = []
    for i in range(20):
        weights, expect = ((100, 0), "api") if i % 2 == 0 else ((0, 100), "api-canary")
        extra = [{"matches": [{"path": {"type": "Exact", "value": f"/gen/{i}"}}],
                  "backendRefs": [{"name": "api-canary" if expect == "api" else "api", "port": 80}]}]
        start = time.monotonic()
        installed.apply(proxyroute(NS, weights, extra))

        def converged() -> bool:
            seen, _ = send(ip, 8080, 5)
            status, body = get(ip, 8080, f"/gen/{i}", {"Host": "shop.example.com"})
            return seen == {expect: 5} and status == 200
        wait_until(converged, 20, f"change {i} to be served", 0.01)
        times.append(time.monotonic() - start)
    p50, p99 = percentile(times, 50), percentile(times, 99)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "convergence.json").write_text(json.dumps({"changes": len(times), "p50_s": p50, "p99_s": p99,
                                                          "samples_s": times}, indent=2))
    print(f"\nconvergence over {len(times)} changes: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert len(times) == 20
    # Scale a backend: the operator re-renders endpoints, traffic keeps flowing, every replica serves.
    installed.apply(proxyroute(NS, (100, 0)))
    installed.kubectl("scale", "-n", NS, "deployment/api", "--replicas=1")
    wait_until(lambda: len({b["pod"] for b in send(ip, 8080, 30)[1]}) == 1, 60, "scale down to be seen")
    installed.kubectl("scale", "-n", NS, "deployment/api", "--replicas=3")
    installed.kubectl("rollout", "status", "-n", NS, "deployment/api", "--timeout=120s", timeout=150)
    wait_until(lambda: len({b["pod"] for b in send(ip, 8080, 60)[1]}) == 3, 60, "scale up to be seen")


def test_delete_and_uninstall_leave_nothing(installed: Any, app: dict[str, Any]) -> None:
    """Step 7: deleting the ProxyRoute stops the routing; helm uninstall leaves only the CRD."""
    ip = app["status"]["podIP"]
    installed.kubectl("delete", "proxyroute", "-n", NS, "shop")

    def unrouted() -> bool:
        try:
            status, _ = get(ip, 8080, "/api/x", {"Host": "shop.example.com", "x-user": "demo"}, timeout=2)
            return status == 404
        except OSError:
            return True  # no route left: the listener is gone
    wait_until(unrouted, 30, "traffic to stop being routed")
    def rules_left() -> int:
        out = installed.kubectl("get", "configmap", "-n", NS, "ringlane-routes", "-o", "jsonpath={.data.config\\.json}",
                                check=False).stdout
        return len(json.loads(out)["listeners"]) if out else 0
    # The operator publishes an empty config (sidecars stop serving) rather than deleting it
    # (which would leave them on their last rules).
    wait_until(lambda: rules_left() == 0, 60, "the route's rules to leave the routes ConfigMap")
    installed.kubectl("delete", "namespace", NS, "--wait=true", timeout=180)
    r = subprocess.run([str(installed.helm_bin), "uninstall", "ringlane", "--namespace", SYSTEM, "--wait",
                        "--timeout", "120s"], env=installed.env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    def leftovers() -> list[str]:
        left = installed.kubectl("get", "all,secrets,configmaps,serviceaccounts", "-n", SYSTEM, "-o", "name",
                                 check=False).stdout.split()
        return [x for x in left if "ringlane" in x and "kube-root-ca" not in x]
    # Pods terminate after their owners are gone (grace period): wait for the namespace to empty.
    wait_until(lambda: not leftovers(), 120, "the release's objects to be gone", 1.0)
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations", "clusterroles",
                 "clusterrolebindings"):
        names = installed.kubectl("get", kind, "-o", "name").stdout.split()
        assert not [n for n in names if "ringlane" in n], (kind, names)
    assert installed.kubectl("get", "crd", "proxyroutes.ringlane.io", check=False).returncode == 0  # as Helm does
