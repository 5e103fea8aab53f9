"""The demo after the cluster is up: helm install, a demo namespace, a ProxyRoute, traffic."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "e2e" / "tests"))
from journey_support import echo_deployment, get, proxyroute, send, service, wait_until  # noqa: E402

NS, SYSTEM = "shop", "ringlane-system"
BIN = sorted((Path.home() / ".cache" / "ringlane" / "bin").glob("*/kubectl"))[-1].parent
STATE = Path(os.environ.get("RINGLANE_CLUSTER_DIR", "/tmp/ringlane-cluster"))


def run(*cmd: str, inp: str | None = None, check: bool = True) -> str:
    p = subprocess.run(cmd, input=inp, capture_output=True, text=True, timeout=300)
    if check and p.returncode:
        sys.exit(f"demo: {' '.join(cmd[:3])} failed:\n{p.stderr}{p.stdout}")
    return p.stdout


def kubectl(*args: str, inp: str | None = None, check: bool = True) -> str:
    return run(str(BIN / "kubectl"), *args, inp=inp, check=check)


def apply(docs: list[dict]) -> None:
    kubectl("apply", "-f", "-", inp="\n---\n".join(json.dumps(d) for d in docs))


def main() -> None:
    print("==> helm install ringlane charts/ringlane (operator, CRD, webhooks, seccomp profiles)")
    run(str(BIN / "helm"), "upgrade", "--install", "ringlane", str(ROOT / "charts" / "ringlane"), "-n", SYSTEM,
        "--create-namespace", "--wait", "--timeout", "240s", "--set", f"seccomp.hostDir={STATE}/kubelet/seccomp",
        "--set", "image.pullPolicy=Never")
    print(f"==> namespace {NS}, labelled ringlane.io/injection=enabled; backends api (3) and api-canary (1)")
    kubectl("create", "namespace", NS, check=False)
    # ringlane.io/demo: the e2e tests remove it (its pinned sidecar holds the node's exclusive CPU).
    kubectl("label", "namespace", NS, "ringlane.io/injection=enabled", "ringlane.io/demo=true", "--overwrite")
    small = {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}}
    apply([echo_deployment(NS, "api", 3, {"app": "api"}), service(NS, "api", {"app": "api"}),
           echo_deployment(NS, "api-canary", 1, {"app": "api-canary"}), service(NS, "api-canary", {"app": "api-canary"}),
           echo_deployment(NS, "web", 1, {"app": "web"}, port=9000, resources=small, inject=True)])
    for d in ("api", "api-canary", "web"):
        kubectl("rollout", "status", "-n", NS, f"deployment/{d}", "--timeout=180s")
    print("==> kubectl apply ProxyRoute shop: /api with x-user: demo -> api 90% / api-canary 10%")
    apply([proxyroute(NS)])
    wait_until(lambda: "True" in kubectl("get", "proxyroute", "-n", NS, "shop", "-o",
                                         "jsonpath={.status.conditions[?(@.type=='Programmed')].status}"),
               60, "the ProxyRoute to be Programmed")
    print(kubectl("get", "proxyroutes", "-n", NS))
    pod = json.loads(kubectl("get", "pods", "-n", NS, "-l", "app=web", "-o", "json"))["items"][0]
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    def serving() -> bool:
        try:
            return get(ip, 8080, "/api/x", {"Host": "shop.example.com", "x-user": "demo"}, timeout=2)[0] == 200
        except OSError:
            return False
    wait_until(serving, 60, "the sidecar to serve the route")
    status = kubectl("exec", "-n", NS, name, "-c", "ringlane-proxy", "--", "cat", "/proc/1/status")
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines() if ":" in line)}
    cfg = json.loads(kubectl("exec", "-n", NS, name, "-c", "ringlane-proxy", "--", "python3", "-c",
                             "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9901/config').read().decode())"))
    print(f"==> pod {name}: sidecar ringlane-proxy injected")
    print(f"    engine {cfg['engine']} ({cfg['engine_reason']}), pinned to CPU {fields['Cpus_allowed_list']} "
          f"(kubelet's static CPU manager), Seccomp: {fields['Seccomp']} (Localhost profile ringlane/proxy-io_uring.json)")
    print(f"    confinement: {cfg['confinement']}")
    print(f"==> 1000 requests to {ip}:8080/api/items (Host shop.example.com, x-user: demo)")
    seen, bodies = send(ip, 8080, 1000)
    for backend, n in sorted(seen.items()):
        print(f"    {n:5d}  {backend}")
    b = bodies[0]
    print(f"    the backend saw: path {b['path']} (rewritten from /api/items), x-env={b['headers'].get('x-env')}, "
          f"x-debug removed: {'x-debug' not in b['headers']}, x-forwarded-for={b['headers'].get('x-forwarded-for')}")
    metrics = kubectl("exec", "-n", NS, name, "-c", "ringlane-proxy", "--", "python3", "-c",
                      "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9901/metrics').read().decode())")
    print("==> metrics (GET :9901/metrics, excerpt)")
    for line in metrics.splitlines():
        if line.startswith(("ringlane_http_requests_total", "ringlane_upstream_requests_total", "ringlane_engine_info",
                            "ringlane_config_generation")):
            print("    " + line)
    kc = STATE / "kubeconfig"
    print(f"""==> done. Poke at it:
    export KUBECONFIG={kc}
    {BIN}/kubectl -n {NS} get proxyroutes,pods
    {BIN}/kubectl explain proxyroute.spec
    {BIN}/kubectl -n {NS} logs {name} -c ringlane-proxy
  Tear it down:  make cluster-down""")


if __name__ == "__main__":
    main()
