"""Drain on SIGTERM/SIGINT with slow requests in flight, and the second-signal escape hatch."""
from __future__ import annotations

import http.client
import signal
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest

from .conftest import Sidecar, SidecarFactory, SlowBackend
from .util import free_port, http_config, http_get, wait_for

DRAIN_TIMEOUT = 10.0
SLOW_S = 3  # the backend answers after this: the window in which the drain must be seen starting
CLIENTS = 20


@dataclass
class Result:
    status: int | None = None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    done_at: float | None = None
    conn: http.client.HTTPConnection | None = None


def slow_request(port: int, path: str, out: Result) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    out.conn = conn  # left open after the response: an idle keep-alive connection the drain must close
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        out.status, out.body = resp.status, resp.read()
        out.headers = {k.lower(): v for k, v in resp.getheaders()}
    except Exception as exc:  # noqa: BLE001 -- recorded, asserted on
        out.error = f"{type(exc).__name__}: {exc}"
    out.done_at = time.monotonic()


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def peer_closed(conn: http.client.HTTPConnection | None) -> bool:
    """True when the proxy has closed this client connection (EOF or reset on read)."""
    if conn is None or conn.sock is None:
        return True
    conn.sock.settimeout(2)
    try:
        return conn.sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def start(sidecar: SidecarFactory, backend: SlowBackend, drain: str) -> tuple[Sidecar, int]:
    listen, admin = free_port(), free_port()
    cfg = http_config(listen, admin, routes=[("slow", "/", "slow")], clusters={"slow": [backend.address]},
                      drain_timeout=drain)
    return sidecar(cfg, admin_port=admin, listen_port=listen), listen


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_requests_then_exits_0(sidecar: SidecarFactory, slow_backend: SlowBackend,
                                                       sig: signal.Signals) -> None:
    sc, listen = start(sidecar, slow_backend, f"{int(DRAIN_TIMEOUT)}s")
    results = [Result() for _ in range(CLIENTS)]
    threads = [threading.Thread(target=slow_request, args=(listen, f"/slow/{SLOW_S}/{i}", results[i]), daemon=True)
               for i in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        # All 20 requests are at the backend, which answers each after SLOW_S.
        wait_for(lambda: slow_backend.started == CLIENTS, 5, "20 requests in flight at the backend")
        sc.signal(sig)
        t_sig = time.monotonic()
        sc.wait_log("draining", timeout=2, reason=sig.name)

        # Drain started: new connections are refused while the old requests are still running.
        wait_for(lambda: refused(listen), 1.0, "new connections to be refused")
        t_refused = time.monotonic()
        assert not any(r.done_at for r in results), "refusal must start with the drain, not after it"
        status, body = http_get(sc.admin + "/ready", 2)
        assert status == 503, (status, body)
        assert sc.config()["draining"] is True
        assert http_get(sc.admin + "/healthz", 2)[0] == 200

        code = sc.wait_exit(DRAIN_TIMEOUT + 2)
        t_exit = time.monotonic()
        for t in threads:
            t.join(5)
    finally:
        for r in results:
            if r.conn:
                r.conn.close()

    failures = [(i, r.status, r.error) for i, r in enumerate(results) if r.status != 200]
    assert not failures, f"{len(failures)} in-flight requests failed during the drain: {failures}"
    for i, r in enumerate(results):
        assert r.body == f"slow /slow/{SLOW_S}/{i}\n".encode(), r.body
        assert r.done_at is not None and r.done_at > t_refused
    assert code == 0, sc.stderr()
    assert t_exit - t_sig < DRAIN_TIMEOUT, f"exit took {t_exit - t_sig:.2f}s (drain timeout {DRAIN_TIMEOUT}s)"
    msgs = [r["msg"] for r in sc.logs()]
    assert msgs.index("draining") < msgs.index("drained") < msgs.index("exit"), msgs
    assert sc.find_logs("exit", code=0), sc.stderr()


def test_idle_keepalive_connections_are_closed_by_the_drain(sidecar: SidecarFactory,
                                                            slow_backend: SlowBackend) -> None:
    """Idle keep-alive client connections do not hold the drain until its deadline: the proxy closes
    them when the drain starts, and exits long before the timeout."""
    sc, listen = start(sidecar, slow_backend, "20s")
    conns = []
    for i in range(5):
        c = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
        c.request("GET", f"/fast/{i}")
        r = c.getresponse()
        assert r.status == 200 and r.read() == f"slow /fast/{i}\n".encode()
        conns.append(c)
    wait_for(lambda: sc.metric("ringlane_tcp_connections_active", listener="web") == 5, 5, "5 idle connections")
    sc.signal(signal.SIGTERM)
    t_sig = time.monotonic()
    try:
        assert all(peer_closed(c) for c in conns), "an idle keep-alive connection stayed open during the drain"
        assert sc.wait_exit(10) == 0, sc.stderr()
        assert time.monotonic() - t_sig < 10.0  # not the 20 s drain timeout
    finally:
        for c in conns:
            c.close()


def test_second_signal_during_drain_exits_at_once(sidecar: SidecarFactory, slow_backend: SlowBackend) -> None:
    sc, listen = start(sidecar, slow_backend, "20s")
    results = [Result() for _ in range(3)]
    threads = [threading.Thread(target=slow_request, args=(listen, f"/slow/8/{i}", results[i]), daemon=True)
               for i in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: slow_backend.started == 3, 5, "3 requests in flight")
        sc.signal(signal.SIGTERM)
        sc.wait_log("draining", timeout=2)
        assert sc.running(), "the first signal must drain, not exit"
        t_second = time.monotonic()
        sc.proc.send_signal(signal.SIGTERM)
        code = sc.wait_exit(5)
        elapsed = time.monotonic() - t_second
    finally:
        for r in results:
            if r.conn:
                r.conn.close()
    assert code != 0, sc.stderr()
    assert elapsed < 5.0, f"second signal took {elapsed:.2f}s"  # not the 20 s drain timeout, nor the 8 s requests
    assert sc.find_logs("second signal: exiting now"), sc.stderr()
    assert not sc.find_logs("exit", code=0)


def test_responses_finished_during_drain_announce_connection_close(sidecar: SidecarFactory,
                                                                   slow_backend: SlowBackend) -> None:
    """A response completed while draining is the last on its connection; saying so
    (Connection: close, RFC 9112 9.6) keeps pooled clients from reusing a socket the proxy is
    about to close -- the request they would send on it fails instead of going to another pod."""
    sc, listen = start(sidecar, slow_backend, "10s")
    r = Result()
    t = threading.Thread(target=slow_request, args=(listen, f"/slow/{SLOW_S}/last", r), daemon=True)
    t.start()
    try:
        wait_for(lambda: slow_backend.started == 1, 5, "the request in flight")
        sc.signal(signal.SIGTERM)
        t.join(SLOW_S + 5)
    finally:
        if r.conn:
            r.conn.close()
    assert r.status == 200, r.error
    assert r.headers.get("connection", "").lower() == "close", r.headers
    assert sc.wait_exit(5) == 0
