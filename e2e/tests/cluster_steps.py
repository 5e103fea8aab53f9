"""Steps shared by the journey and the fault tests: install the chart, deploy the demo app,
look at its sidecar, and clean up. Each takes the `cluster` fixture (e2e/conftest.py)."""
from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from journey_support import echo_deployment, get, proxyroute, service, wait_until

ROOT = Path(__file__).resolve().parents[2]
NS = "shop-e2e"
SYSTEM = "ringlane-system"
APP_RESOURCES = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}


def helm_install(c: Any) -> subprocess.CompletedProcess[str]:
    """helm install from the image the Dockerfile built; waits for the operator to be Ready."""
    r = subprocess.run([str(c.helm_bin), "upgrade", "--install", "ringlane", str(ROOT / "charts" / "ringlane"),
                        "--namespace", SYSTEM, "--create-namespace", "--wait", "--timeout", "240s",
                        "--set", f"seccomp.hostDir={c.seccomp_dir}", "--set", "image.pullPolicy=Never"],
                       env=c.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def pod_of(c: Any, selector: str) -> dict[str, Any]:
    pods = json.loads(c.kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json").stdout)["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]
    assert running, f"no running pod for {selector}"
    return running[0]


def deploy_app(c: Any) -> dict[str, Any]:
    """Label the namespace, deploy backends and the app, apply the ProxyRoute; the app pod."""
    c.kubectl("create", "namespace", NS, check=False)
    c.kubectl("label", "namespace", NS, "ringlane.io/injection=enabled", "ringlane.io/e2e=true", "--overwrite")
    c.apply([echo_deployment(NS, "api", 3, {"app": "api"}), service(NS, "api", {"app": "api"}),
             echo_deployment(NS, "api-canary", 1, {"app": "api-canary"}),
             service(NS, "api-canary", {"app": "api-canary"}),
             # One Guaranteed app pod: this 2-CPU node can pin one sidecar (CPU 0 is the shared pool).
             echo_deployment(NS, "web", 1, {"app": "web"}, port=9000, resources=APP_RESOURCES, inject=True)])
    for d in ("api", "api-canary", "web"):
        c.kubectl("rollout", "status", "-n", NS, f"deployment/{d}", "--timeout=180s", timeout=200)
    c.apply(proxyroute(NS))
    wait_until(lambda: condition(c, "Programmed") == "True", 30, "ProxyRoute Programmed")
    pod = pod_of(c, "app=web")
    wait_until(lambda: get_ok(pod["status"]["podIP"]), 30, "the sidecar to serve the route")
    return pod


def replace_app_pod(c: Any, old: dict[str, Any]) -> dict[str, Any]:
    """After the app pod was deleted: wait for its replacement to serve (it needs the old pod's
    exclusive CPU, so it starts only once the old one is gone) and update `old` in place."""
    c.kubectl("wait", "--for=delete", "pod", "-n", NS, old["metadata"]["name"], "--timeout=120s", timeout=150,
              check=False)
    c.kubectl("rollout", "status", "-n", NS, "deployment/web", "--timeout=180s", timeout=200)
    new = wait_until(lambda: _running(c, "app=web"), 120, "the replacement app pod", 0.5)
    old.clear()
    old.update(new)
    wait_until(lambda: get_ok(old["status"]["podIP"]), 60, "the new sidecar to serve")
    return old


def _running(c: Any, selector: str) -> dict[str, Any] | None:
    try:
        return pod_of(c, selector)
    except AssertionError:
        return None


def remove_all(c: Any) -> None:
    """Delete the demo namespace and the release (the fault tests' clean-up)."""
    c.kubectl("delete", "namespace", NS, "--wait=true", "--ignore-not-found", timeout=240)
    subprocess.run([str(c.helm_bin), "uninstall", "ringlane", "--namespace", SYSTEM, "--wait", "--timeout", "120s"],
                   env=c.env(), capture_output=True, text=True, timeout=180)


def condition(c: Any, kind: str) -> str | None:
    pr = json.loads(c.kubectl("get", "proxyroute", "-n", NS, "shop", "-o", "json", check=False).stdout or "{}")
    for cond in pr.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return str(cond["status"])
    return None


def get_ok(ip: str) -> bool:
    try:
        status, _ = get(ip, 8080, "/api/x", {"Host": "shop.example.com", "x-user": "demo"}, timeout=2)
        return status == 200
    except OSError:
        return False


def sidecar_exec(c: Any, pod: dict[str, Any], *cmd: str) -> str:
    return str(c.kubectl("exec", "-n", NS, pod["metadata"]["name"], "-c", "ringlane-proxy", "--", *cmd).stdout)


def sidecar_metric(pod: dict[str, Any], name: str) -> float:
    """Sum of one metric's samples, scraped from the sidecar's admin port like Prometheus does."""
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:9901/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))
