"""The agent's lifecycle and admin port at their edges: SIGTERM during a big reload, /config
under --pod-labels, the open-files limit, admin clients that stall or speak HTTP/1.0, a request
in flight on a removed route. From a review pass: each failed before. (The scrape-during-reload
stall it found is tested where it was fixed: test_metrics_semantics.py, one C call per table.)"""
from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Nginx, SidecarFactory
from .util import free_port, http_config, http_get, wait_for, write_atomic


def big_config(listen: int, admin: int, cluster_addr: str, generation: int, n_rules: int = 1500) -> dict[str, Any]:
    """A valid config of a few MiB (takes seconds to validate)."""
    rules = [{"name": f"ns/route-{i}/0",
              "matches": [{"path": {"type": "PathPrefix", "value": f"/p{i}/{j}"},
                           "headers": [{"name": "x-h", "value": str(j)}], "method": "GET"} for j in range(8)],
              "backends": [{"cluster": "a"}],
              "filters": [{"requestHeaderModifier": {"set": [{"name": f"x-s{k}", "value": "v"} for k in range(8)]}}]}
             for i in range(n_rules)]
    rules.append({"name": "ns/all/0", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                  "backends": [{"cluster": "a"}]})
    return {"version": 1, "generation": generation, "admin": {"address": f"127.0.0.1:{admin}"},
            "limits": {"drainTimeout": "5s"},
            "listeners": [{"name": "web", "address": f"127.0.0.1:{listen}", "protocol": "http", "rules": rules}],
            "clusters": [{"name": "a", "endpoints": [{"address": cluster_addr}]}]}


def test_sigterm_during_a_reload_exits_at_the_drain_not_after_the_parse(
        sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    """ARCHITECTURE "Drain": stop accepting, finish in-flight requests, "exit when empty or at
    the drain deadline". With no connection open the drain is over in milliseconds (the agent
    logs "drained" and "exit" at once), so the process must be gone within a second or two of
    SIGTERM, whatever the config reader is doing. A reload of a big (valid, < 4 MiB) config is
    under way when SIGTERM lands (SIGHUP, then its log line): its result can never be applied
    (the agent is draining). Before, the process stayed alive until the parse had finished,
    seconds after it logged "exit" (interpreter shutdown joined the default executor's thread)."""
    listen, admin = free_port(), free_port()
    path = tmp_path / "config.json"
    sc = sidecar(http_config(listen, admin, routes=[("app/0", "/", "a")], clusters={"a": [nginx.a]}),
                 config_path=path, admin_port=admin, listen_port=listen)
    big = json.dumps(big_config(listen, admin, nginx.a, 2, n_rules=2500))
    assert len(big) < 4 * 1024 * 1024
    write_atomic(path, big)
    sc.proc.send_signal(signal.SIGHUP)
    sc.wait_log("signal received: reloading", signal="SIGHUP")  # a read+validate is under way now
    sc.signal(signal.SIGTERM)
    sc.wait_log("exit", timeout=5, code=0)
    logged_exit = time.monotonic()
    assert sc.signalled_at is not None
    try:
        code = sc.proc.wait(30)
    except Exception:
        raise AssertionError(f"sidecar still running 30 s after SIGTERM\n{sc.stderr()[-2000:]}") from None
    gone = time.monotonic()
    assert code == 0, sc.stderr()[-2000:]
    assert not sc.find_logs("config applied", generation=2), "the big config was not meant to be applied"
    assert gone - sc.signalled_at < 3, (  # before: 6.5-7.4 s, the parse's whole length
        f"drained and logged 'exit' {logged_exit - sc.signalled_at:.2f}s after SIGTERM, but the process "
        f"only ended {gone - sc.signalled_at:.2f}s after it (waiting for a config parse it will never use)")


def test_config_lists_only_the_listeners_this_pod_serves(sidecar: SidecarFactory, nginx: Nginx,
                                                         tmp_path: Path) -> None:
    """With --pod-labels the sidecar serves only the rules whose selector matches its pod, and
    drops listeners left without a rule (config/select.py). /config reports the hash of that
    selected config and "listeners" must be the ones it serves too: a listener of another pod's
    route is not open here. /config lists the whole namespace's listeners instead."""
    listen, other, admin = free_port(), free_port(), free_port()
    cfg = http_config(listen, admin, routes=[("app/0", "/", "a")], clusters={"a": [nginx.a]})
    cfg["listeners"][0]["rules"][0]["selector"] = {"matchLabels": {"app": "web"}}
    cfg["listeners"].append({"name": "other", "address": f"127.0.0.1:{other}", "protocol": "http",
                             "rules": [{"name": "o/0", "selector": {"matchLabels": {"app": "other"}},
                                        "backends": [{"cluster": "a"}]}]})
    labels = tmp_path / "labels"
    labels.write_text('app="web"\n')
    sc = sidecar(cfg, admin_port=admin, listen_port=listen, args=["--pod-labels", str(labels)])
    assert http_get(f"{sc.listener}/x") == (200, b"backend-a /x\n")
    with pytest.raises(OSError):  # not served by this pod: nothing listens there
        socket.create_connection(("127.0.0.1", other), timeout=2).close()
    assert sc.find_logs("config applied", listeners=["web"]), sc.stderr()
    assert sc.config()["listeners"] == ["web"], sc.config()["listeners"]


def test_sidecar_raises_its_open_files_soft_limit(sidecar: SidecarFactory, nginx: Nginx) -> None:
    """A proxy needs a file descriptor per client connection (and per upstream one). Containers
    often start with a soft RLIMIT_NOFILE of 1024 and a much higher hard limit (containerd 2.x
    runs containers with systemd's default 1024:524288); the Go runtime, HAProxy and nginx's
    worker_rlimit_nofile raise the soft limit themselves. Before, the sidecar did not, so ~1000
    concurrent client connections was all it could ever hold: the next ones waited in the
    accept queue, unanswered. Here the soft limit is 1024 and the hard one 16384:
    1200 keep-alive clients each send a request; every one must get its answer."""
    listen, admin = free_port(), free_port()
    sc = sidecar(http_config(listen, admin, routes=[("app/0", "/", "a")], clusters={"a": [nginx.a]}),
                 admin_port=admin, listen_port=listen, prefix=["prlimit", "--nofile=1024:16384", "--"])
    limits = Path(f"/proc/{sc.proc.pid}/limits").read_text()
    conns: list[socket.socket] = []
    answered = 0
    try:
        for i in range(1200):
            c = socket.create_connection(("127.0.0.1", listen), timeout=3)
            conns.append(c)
            c.sendall(f"GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            try:
                data = c.recv(4096)
            except socket.timeout:
                data = b""
            if not data.startswith(b"HTTP/1.1 200"):
                break
            answered += 1
    finally:
        for c in conns:
            c.close()
    open_files = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert answered == 1200, (f"only {answered} of 1200 concurrent client connections were served "
                              f"({open_files[0] if open_files else limits})")


def test_admin_closes_a_client_that_stalls_inside_a_request_body(sidecar: SidecarFactory, nginx: Nginx) -> None:
    """admin.py gives a client 30 s per request/header line (_line: asyncio.wait_for(..., 30)) and
    then closes it, so a stuck or vanished client (no FIN: a dead scraper behind NAT) does not hold
    a descriptor (shared with the data plane's connections) forever. A client that announces a
    body (Content-Length: 100) and stalls after 10 bytes was read with reader.readexactly() and no
    timeout: held forever. Expected: closed like a stalled header line, within ~30 s."""
    listen, admin = free_port(), free_port()
    sc = sidecar(http_config(listen, admin, routes=[("app/0", "/", "a")], clusters={"a": [nginx.a]}),
                 admin_port=admin, listen_port=listen)
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as line_client, \
            socket.create_connection(("127.0.0.1", admin), timeout=5) as body_client:
        line_client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # stalls inside the headers
        body_client.sendall(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        started = time.monotonic()
        line_client.settimeout(45)
        assert line_client.recv(100) == b"", "the admin port closes a client stalled in its headers"
        line_closed = time.monotonic() - started
        body_client.settimeout(max(1.0, 45 - line_closed))
        try:
            got = body_client.recv(100)
        except socket.timeout:
            got = None
        assert got is not None, (f"a client stalled in its headers was closed after {line_closed:.0f}s; one "
                                 f"stalled in its body was still held {time.monotonic() - started:.0f}s later")
    assert sc.running()


def test_admin_closes_an_http_1_0_connection_after_the_response(sidecar: SidecarFactory, nginx: Nginx) -> None:
    """RFC 9112 section 9.3: an HTTP/1.0 connection is not persistent unless the client sends
    "Connection: keep-alive"; the server closes it after the response. Simple probes and checkers
    speak HTTP/1.0 and read to EOF. Before, admin.py kept every connection open unless the client
    sent "Connection: close", so such a client waited for the 30 s idle timeout."""
    listen, admin = free_port(), free_port()
    sc = sidecar(http_config(listen, admin, routes=[("app/0", "/", "a")], clusters={"a": [nginx.a]}),
                 admin_port=admin, listen_port=listen)
    with socket.create_connection(("127.0.0.1", admin), timeout=5) as c:
        c.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        data = b""
        started = time.monotonic()
        try:
            while chunk := c.recv(4096):
                data += chunk
        except socket.timeout:
            pass
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok\n"), data
    assert time.monotonic() - started < 4, f"no EOF {time.monotonic() - started:.1f}s after an HTTP/1.0 response"
    assert sc.running()


def test_request_in_flight_on_a_removed_route_is_counted(sidecar: SidecarFactory, nginx: Nginx,
                                                          slow_backend: Any, tmp_path: Path) -> None:
    """ARCHITECTURE "Hot reload": open connections finish on the config they started with; the
    metrics contract: ringlane_http_requests_total{listener,route,code} counts requests. A route
    is removed (its ProxyRoute deleted) while a request on it is in flight; the request finishes
    (200) on the old config. It must show up in http_requests_total{route="slow"} (Prometheus
    needs at least one scrape with the increment).

    Before, the route's counters were reported only while a live config still had it
    (slots.py names(): hidden once every worker let go of the older configs). The response
    completed, the client's connection closed, the old config was released, and the route was
    hidden at once: no scrape ever showed the request (before it finished the
    count was 0, and zero code classes are not exported)."""
    import threading

    listen, admin = free_port(), free_port()
    path = tmp_path / "config.yaml"
    clusters = {"slow": [slow_backend.address], "a": [nginx.a]}
    v1 = http_config(listen, admin, routes=[("shop/slow/0", "/slow", "slow"), ("shop/a/0", "/", "a")],
                     clusters=clusters, generation=1)
    v2 = http_config(listen, admin, routes=[("shop/a/0", "/", "a")], clusters=clusters, generation=2)
    sc = sidecar(v1, config_path=path, admin_port=admin, listen_port=listen)
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.setdefault("r", http_get(f"{sc.listener}/slow/2/x", 15)),
                         daemon=True)
    t.start()
    wait_for(lambda: slow_backend.started == 1, 5, "the request in flight")
    write_atomic(path, v2)
    wait_for(lambda: sc.config()["generation"] == 2, 5, "the route removed")
    seen: list[float] = []

    def scrape() -> bool:
        v = sc.metric("ringlane_http_requests_total", listener="web", route="shop/slow/0", code="2xx")
        if v is not None:
            seen.append(v)
        return "r" in result and not t.is_alive()

    wait_for(scrape, 10, "the in-flight request to finish")  # scrapes all along, every ~20 ms
    assert result["r"] == (200, b"slow /slow/2/x\n")
    for _ in range(3):  # and a few scrapes after it finished
        scrape()
    assert seen and max(seen) == 1, (
        f"the request on the removed route finished 200, but no scrape reported it "
        f"(values seen for route shop/slow/0: {seen})")


def test_admin_answers_head_and_names_the_allowed_methods(sidecar: SidecarFactory, nginx: Nginx) -> None:
    """Probes and checkers send HEAD (RFC 9110 9.3.2: a GET without the body); a wrong method on a
    known path is 405 with Allow (15.5.6). Before, HEAD /metrics was 404 and 405 had no Allow."""
    listen, admin = free_port(), free_port()
    sc = sidecar(http_config(listen, admin, routes=[("app/0", "/", "a")], clusters={"a": [nginx.a]}),
                 admin_port=admin, listen_port=listen)

    def exchange(request: bytes) -> tuple[bytes, bytes]:
        with socket.create_connection(("127.0.0.1", admin), timeout=5) as c:
            c.sendall(request)
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return head, body

    head, body = exchange(b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"\r\nContent-Length: " in head and body == b"", (head, body)
    head, body = exchange(b"HEAD /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"\r\nContent-Length: 3" in head and body == b"", (head, body)
    head, _ = exchange(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405") and b"\r\nAllow: GET, HEAD" in head, head
    head, _ = exchange(b"GET /drain HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405") and b"\r\nAllow: POST" in head, head
    assert http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200  # a GET /drain drained nothing
    assert sc.running()
    head, body = exchange(b"POST /drain HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202") and body == b"draining\n", (head, body)
    sc.wait_log("draining", reason="admin /drain")
    assert http_get(f"http://127.0.0.1:{admin}/ready")[0] == 503
