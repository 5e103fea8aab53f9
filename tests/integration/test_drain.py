"""Drain: stop accepting, finish in-flight requests, close idle keep-alive connections, and
let every worker exit before the deadline."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from .backends import Reply, echo_handler
from .helpers import Closed, Conn, build_request, cluster, config, free_port, http_listener, port_open, rule, tcp_listener, wait_for

pytestmark = pytest.mark.timeout(30)


def test_drain_finishes_inflight_closes_idle(core, http_backend) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def app(req):  # type: ignore[no-untyped-def]
        if req.target.startswith("/slow"):
            started.release()
            release.wait(10)
        # like nginx, the backend announces its own keep-alive (hop-by-hop, for the proxy only)
        return Reply(200, f"done {req.target}".encode(), headers=[("Connection", "keep-alive")])

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    busy = [Conn(port) for _ in range(6)]
    idle = [Conn(port) for _ in range(4)]
    try:
        for conn in idle:  # one request each, then idle on keep-alive
            assert conn.request("GET", "/warm").status == 200
        for i, conn in enumerate(busy):
            conn.send(build_request("GET", f"/slow/{i}"))
        for _ in busy:
            assert started.acquire(timeout=5), "the slow requests did not reach the backend"
        c.drain(5000)
        # idle keep-alive connections are closed at once
        for conn in idle:
            assert conn.at_eof(3), "an idle keep-alive connection was not closed by drain"
        # no new connections are accepted
        wait_for(lambda: not port_open(port), 3, "the listener to close")
        assert c.running_workers() >= 1  # the workers holding in-flight requests are still there
        release.set()
        for i, conn in enumerate(busy):
            r = conn.read_response()
            assert r.status == 200 and r.text == f"done /slow/{i}"
            assert [v.lower() for v in r.header_all("connection")] == ["close"], r.headers  # announced, only that
            assert conn.at_eof(3)
        wait_for(lambda: c.running_workers() == 0, 3, "every worker to exit after drain")
    finally:
        release.set()
        for conn in busy + idle:
            conn.close()


def test_drain_deadline_cuts_stuck_requests(core, http_backend) -> None:
    release = threading.Event()
    seen = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        seen.set()
        release.wait(20)
        return Reply(200, b"too late")

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    try:
        with Conn(port) as conn:
            conn.send(build_request("GET", "/stuck"))
            assert seen.wait(5)
            start = time.monotonic()
            c.drain(400)
            wait_for(lambda: c.running_workers() == 0, 3, "workers to exit at the drain deadline")
            elapsed = time.monotonic() - start
            assert 0.3 <= elapsed <= 1.5, elapsed
            with pytest.raises((Closed, ConnectionResetError)):
                conn.read_response()
    finally:
        release.set()


def test_drain_with_nothing_open_exits_at_once(core, nginx) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]))
    with Conn(port) as conn:
        assert conn.request("GET", "/").status == 200
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 3, "the client connection to close")
    start = time.monotonic()
    c.drain(10_000)
    wait_for(lambda: c.running_workers() == 0, 2, "workers to exit")
    assert time.monotonic() - start < 1.0
    # io_uring: the listening socket goes with the ring, which the kernel tears down asynchronously
    wait_for(lambda: not port_open(port), 2, "the listener to close")


def test_drain_lets_tcp_relay_run_until_deadline(core, tcp_server) -> None:
    """A byte stream has no request boundary: it keeps flowing until the drain deadline."""
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(config([tcp_listener(port, "e")], [cluster("e", srv.address)]))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"before")
        assert s.recv(100) == b"before"
        c.drain(600)
        s.sendall(b"during")
        assert s.recv(100) == b"during"
        wait_for(lambda: c.running_workers() == 0, 3, "workers to exit at the deadline")
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
