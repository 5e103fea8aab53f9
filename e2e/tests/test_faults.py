"""The faults the journey must survive, each its own test, on one install of the chart and the
demo app (the journey's steps 1-3): operator killed, API server restarted, a backend pod killed
mid-traffic, the app pod deleted with requests in flight, io_uring blocked on the node, the
webhook unavailable, malformed ProxyRoutes and hostile HTTP. Nothing may be lost."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from typing import Any, Iterator

import pytest
from cluster_steps import (NS, ROOT, SYSTEM, deploy_app, get_ok, helm_install, pod_of, remove_all, replace_app_pod,
                           sidecar_exec, sidecar_metric)
from journey_support import get, proxyroute, send, wait_until

pytestmark = pytest.mark.e2e
UP = ROOT / "e2e" / "cluster" / "up.sh"


@pytest.fixture(scope="module")
def installed(cluster: Any) -> Iterator[Any]:
    helm_install(cluster)
    yield cluster
    remove_all(cluster)  # the journey module installs afresh


@pytest.fixture(scope="module")
def app(installed: Any) -> dict[str, Any]:
    return deploy_app(installed)


class Load:
    """Keep-alive GETs through the sidecar from `threads` threads until stopped; counts every
    answer by backend or by `status-N`, and transport errors as `error-<Exception>`."""

    def __init__(self, ip: str, threads: int = 2, path: str = "/api/items") -> None:
        self.ip, self.path, self.seen = ip, path, Counter[str]()
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                seen, _ = send(self.ip, 8080, 20, self.path)
            except (OSError, http.client.HTTPException) as e:  # counted: a dead thread would hide failures
                seen = Counter({f"error-{type(e).__name__}": 1})
            with self.lock:
                self.seen.update(seen)

    def total(self) -> int:
        with self.lock:
            return sum(self.seen.values())

    def failures(self) -> dict[str, int]:
        with self.lock:
            return {k: v for k, v in self.seen.items() if k.startswith(("status-", "error-"))}

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        wait_until(lambda: self.total() >= 40, 30, "load to flow")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def route_all_to(c: Any, ip: str, backend: str) -> None:
    weights = (100, 0) if backend == "api" else (0, 100)
    body = json.dumps(proxyroute(NS, weights))
    # The validating webhook (failurePolicy Fail) refuses changes while the operator restarts: retry.
    wait_until(lambda: c.kubectl("apply", "-f", "-", input=body, check=False).returncode == 0, 60,
               "the operator's webhook to accept the change", 0.5)
    wait_until(lambda: send(ip, 8080, 5)[0] == {backend: 5}, 60, f"all traffic to reach {backend}")


def _raw(ip: str, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection((ip, 8080), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            pass
        return out


@pytest.mark.parametrize("payload,status", [
    (b"POST /api HTTP/1.1\r\nHost: shop.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b" 400 "),
    (b"GET /api HTTP/1.1\nHost: shop.example.com\n\n", b" 400 "),
    (b"GET /api HTTP/1.1\r\nHost: shop.example.com\r\nX: a\r\n b\r\n\r\n", b" 400 "),
    (b"GET /api HTTP/1.1\r\nHost: shop.example.com\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", b" 431 "),
], ids=["cl-te", "bare-lf", "obs-fold", "oversized-head"])
def test_hostile_http_is_rejected_and_the_sidecar_stays_healthy(app: dict[str, Any], payload: bytes,
                                                                 status: bytes) -> None:
    ip = app["status"]["podIP"]
    assert status in _raw(ip, payload).split(b"\r\n", 1)[0]
    seen, _ = send(ip, 8080, 20)
    assert sum(seen.values()) == 20 and not [k for k in seen if k.startswith("status-")]


def test_slowloris_is_cut_and_the_sidecar_stays_healthy(app: dict[str, Any]) -> None:
    """A client trickling its request head one header a second is answered 408 and cut when the
    header-read timeout (10 s by default) expires, while other clients are served meanwhile."""
    ip = app["status"]["podIP"]
    with socket.create_connection((ip, 8080), timeout=30) as s:
        s.sendall(b"GET /api HTTP/1.1\r\nHost: shop.example.com\r\n")
        start, answer = time.monotonic(), b""
        s.settimeout(1.0)
        for i in range(25):
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                break  # cut while sending
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                seen, _ = send(ip, 8080, 2)  # others are served while this one trickles
                assert sum(seen.values()) == 2 and not [k for k in seen if k.startswith("status-")], seen
                continue
            except OSError:
                break
            answer += chunk
            if not chunk:
                break
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert 8 <= elapsed <= 20, elapsed


def test_malformed_proxyroutes_are_rejected_with_the_field(installed: Any) -> None:
    bad = proxyroute(NS)
    bad["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    r = installed.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert r.returncode != 0 and "weight" in r.stderr, r.stderr
    bad = proxyroute(NS)
    bad["spec"]["rules"][0]["timeouts"] = {"request": "1s", "backendRequest": "5s"}
    r = installed.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert r.returncode != 0 and "backendRequest" in r.stderr, r.stderr


def test_webhook_unavailable_fails_closed_only_where_injected(installed: Any, app: dict[str, Any]) -> None:
    c = installed
    c.kubectl("scale", "-n", SYSTEM, "deployment/ringlane", "--replicas=0")
    try:
        c.kubectl("wait", "--for=delete", "pod", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator",
                  "--timeout=60s", timeout=90, check=False)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
               "spec": {"containers": [{"name": "c", "image": "localhost/ringlane-testbox:dev",
                                        "imagePullPolicy": "Never", "command": ["sleep", "1"]}]}}
        r = c.kubectl("apply", "-n", NS, "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert r.returncode != 0 and "inject.ringlane.io" in r.stderr, r.stderr  # fails closed, says why
        r = c.kubectl("apply", "-n", "default", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)
        assert r.returncode == 0, r.stderr                                          # others unaffected
        seen, _ = send(app["status"]["podIP"], 8080, 50)                             # the data plane does not care
        assert sum(seen.values()) == 50
    finally:
        c.kubectl("scale", "-n", SYSTEM, "deployment/ringlane", "--replicas=1")
        c.kubectl("rollout", "status", "-n", SYSTEM, "deployment/ringlane", "--timeout=180s", timeout=200)


def test_operator_killed_while_traffic_flows(installed: Any, app: dict[str, Any]) -> None:
    ip = app["status"]["podIP"]
    with Load(ip) as load:
        installed.kubectl("delete", "pod", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator", "--wait=true")
        installed.kubectl("rollout", "status", "-n", SYSTEM, "deployment/ringlane", "--timeout=180s", timeout=200)
        route_all_to(installed, ip, "api-canary")  # after the restart the operator converges
    assert load.total() > 0 and not load.failures(), load.seen
    pod = json.loads(installed.kubectl("get", "pod", "-n", NS, app["metadata"]["name"], "-o", "json").stdout)
    assert [c["name"] for c in pod["spec"].get("initContainers", [])].count("ringlane-proxy") == 1


def test_helm_upgrade_while_traffic_flows(installed: Any, app: dict[str, Any]) -> None:
    """`helm upgrade` with a changed value rolls the operator; the webhook keeps its certificate
    (the chart looks the Secret up), injection still works and the data plane is untouched."""
    c, ip = installed, app["status"]["podIP"]
    ca = c.kubectl("get", "secret", "-n", SYSTEM, "ringlane-webhook-tls", "-o", "jsonpath={.data.ca\\.crt}").stdout
    with Load(ip) as load:
        r = subprocess.run([str(c.helm_bin), "upgrade", "ringlane", str(ROOT / "charts" / "ringlane"), "-n", SYSTEM,
                            "--reuse-values", "--set", "operator.resources.limits.memory=320Mi", "--wait",
                            "--timeout", "240s"], env=c.env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
    assert not load.failures(), load.seen
    dep = json.loads(c.kubectl("get", "deployment", "-n", SYSTEM, "ringlane", "-o", "json").stdout)
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "320Mi"
    assert c.kubectl("get", "secret", "-n", SYSTEM, "ringlane-webhook-tls",
                     "-o", "jsonpath={.data.ca\\.crt}").stdout == ca
    probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "upgrade-probe", "labels": {"app": "probe"}},
             "spec": {"containers": [{"name": "c", "image": "localhost/ringlane-testbox:dev", "command": ["true"]}]}}
    def admitted() -> dict[str, Any] | None:
        r = c.kubectl("create", "-n", NS, "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(probe),
                      check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None
    pod = wait_until(admitted, 60, "the upgraded operator's webhook to answer", 0.5)
    names = [x["name"] for x in pod["spec"].get("initContainers", [])]
    assert names.count("ringlane-proxy") == 1, names


def _operator_restarts(c: Any) -> int:
    pods = json.loads(c.kubectl("get", "pods", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator",
                                "-o", "json").stdout)["items"]
    return sum(s.get("restartCount", 0) for p in pods for s in p["status"].get("containerStatuses", []))


def _exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def _stop(pid: int) -> None:
    """SIGTERM (graceful shutdown), SIGKILL if it has not exited after 30 s."""
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: _exited(pid), 30, "kube-apiserver to shut down", 0.2)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _exited(pid), 10, "kube-apiserver to die", 0.2)


def test_api_server_restart(installed: Any, app: dict[str, Any]) -> None:
    """The sidecars keep serving their last config while the API server is down, and catch up
    after; the operator recovers by itself (no container restart)."""
    ip = app["status"]["podIP"]
    route_all_to(installed, ip, "api")
    restarts = _operator_restarts(installed)
    pid = int((installed.state_dir / "run" / "kube-apiserver.pid").read_text())
    with Load(ip) as load:
        try:
            _stop(pid)
            assert installed.kubectl("get", "--raw", "/readyz", check=False, timeout=20).returncode != 0
            before = load.total()
            wait_until(lambda: load.total() >= before + 200, 60, "traffic while the API server is down")
        finally:
            up = subprocess.run([str(UP)], text=True, capture_output=True, timeout=600)  # restarts it
        assert up.returncode == 0, up.stdout + up.stderr
        route_all_to(installed, ip, "api-canary")  # the operator and the sidecar's watch caught up
    assert not load.failures(), load.seen
    assert _operator_restarts(installed) == restarts, "the operator needed a restart to recover"


def _backend_state(c: Any, app: dict[str, Any]) -> str:
    """What a failed wait for the replacement backend needs explained: the api pods, their
    EndpointSlices, the endpoints the sidecar was given, the operator's last log lines."""
    pods = c.kubectl("get", "pods", "-n", NS, "-l", "app=api", "-o", "wide", check=False).stdout
    slices = c.kubectl("get", "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=api", "-o",
                       "jsonpath={range .items[*].endpoints[*]}{.addresses[0]} {.conditions}{\"\\n\"}{end}",
                       check=False).stdout
    try:
        with urllib.request.urlopen(f"http://{app['status']['podIP']}:9901/config", timeout=5) as r:
            clusters = json.loads(r.read()).get("clusters")
    except (OSError, ValueError) as e:
        clusters = f"unreadable: {e}"
    logs = c.kubectl("logs", "-n", SYSTEM, "-l", "app.kubernetes.io/component=operator", "--tail=40",
                     check=False).stdout
    return f"\npods:\n{pods}\nendpoint slices:\n{slices}\nsidecar clusters: {clusters}\noperator log:\n{logs}"


def test_backend_pod_killed_mid_traffic(installed: Any, app: dict[str, Any]) -> None:
    """One of three backend pods is killed while requests flow: retries (connect failure, reset,
    503; GETs are idempotent) and the endpoint's removal keep every request successful."""
    ip = app["status"]["podIP"]
    route_all_to(installed, ip, "api")
    victim = pod_of(installed, "app=api")["metadata"]["name"]
    with Load(ip, threads=3) as load:
        installed.kubectl("delete", "pod", "-n", NS, victim, "--grace-period=0", "--force", "--wait=false")
        installed.kubectl("rollout", "status", "-n", NS, "deployment/api", "--timeout=120s", timeout=150)
        # The replacement serves: the operator re-rendered the endpoints and the sidecar follows.
        pods: set[str] = set()

        def replacement_serves() -> bool:
            pods.clear()
            pods.update(b["pod"] for b in send(ip, 8080, 60)[1])
            return victim not in pods and len(pods) == 3

        try:
            wait_until(replacement_serves, 60, "the new backend pod to serve")
        except AssertionError as e:
            raise AssertionError(f"{e}; pods that answered: {sorted(pods)}; "
                                 f"{_backend_state(installed, app)}") from None
        served = load.total()
    assert served > 0 and not load.failures(), load.seen


def test_app_pod_deleted_with_requests_in_flight(installed: Any, app: dict[str, Any]) -> None:
    """Requests held by the backend while the app pod is deleted: the sidecar drains (kubelet
    stops it after the app container; it finishes what it holds, then exits); none fails."""
    c, ip, n = installed, app["status"]["podIP"], 8
    slow = [{"matches": [{"path": {"type": "PathPrefix", "value": "/slow"}}],
             "backendRefs": [{"name": "api", "port": 80}], "timeouts": {"request": "30s", "backendRequest": "30s"}}]
    c.apply(proxyroute(NS, (100, 0), slow))
    wait_until(lambda: get(ip, 8080, "/slow", {"Host": "shop.example.com"})[0] == 200, 60, "the /slow rule")
    started = sidecar_metric(app, "ringlane_upstream_requests_total")
    results: list[int | str] = []

    def slow_get() -> None:
        try:
            status, _ = get(ip, 8080, "/slow?delay_ms=10000", {"Host": "shop.example.com"}, timeout=30)
            results.append(status)
        except OSError as e:
            results.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=slow_get) for _ in range(n)]
    for t in threads:
        t.start()
    # Every request has reached a backend before the pod is deleted.
    wait_until(lambda: sidecar_metric(app, "ringlane_upstream_requests_total") >= started + n, 30,
               "the requests to be in flight")
    name = app["metadata"]["name"]
    c.kubectl("delete", "pod", "-n", NS, name, "--wait=false")

    def sidecar_told_to_stop() -> bool:
        events = c.kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={name},reason=Killing",
                           "-o", "jsonpath={.items[*].message}").stdout
        return "ringlane-proxy" in events  # kubelet: "Stopping container ringlane-proxy"
    wait_until(sidecar_told_to_stop, 30, "kubelet to stop the sidecar (after the app container)", 0.2)
    assert not results, "the requests should still be in flight when the sidecar is stopped"
    for t in threads:
        t.join(timeout=60)
    assert results == [200] * n, results
    replace_app_pod(c, app)


def test_io_uring_blocked_on_the_node_falls_back_to_epoll(installed: Any, app: dict[str, Any]) -> None:
    """The node's profile for the sidecar stops allowing io_uring: a new sidecar says so and serves on epoll."""
    profile = installed.seccomp_dir / "ringlane" / "proxy-io_uring.json"
    original = profile.read_text()
    epoll = (installed.seccomp_dir / "ringlane" / "proxy-epoll.json").read_text()
    name = app["metadata"]["name"]
    try:
        profile.write_text(epoll)
        installed.kubectl("delete", "pod", "-n", NS, name, "--wait=true")
        installed.kubectl("rollout", "status", "-n", NS, "deployment/web", "--timeout=180s", timeout=200)
        pod = pod_of(installed, "app=web")
        view = json.loads(sidecar_exec(installed, pod, "python3", "-c",
                                       "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9901/config').read().decode())"))
        assert view["engine"] == "epoll" and "EPERM" in view["engine_reason"], view
        logs = installed.kubectl("logs", "-n", NS, pod["metadata"]["name"], "-c", "ringlane-proxy").stdout
        assert '"engine": "epoll"' in logs
        wait_until(lambda: get_ok(pod["status"]["podIP"]), 60, "the epoll sidecar to serve")
    finally:
        profile.write_text(original)
    current = pod_of(installed, "app=web")
    installed.kubectl("delete", "pod", "-n", NS, current["metadata"]["name"], "--wait=false")
    replace_app_pod(installed, app)  # later tests use the new pod, back on io_uring


