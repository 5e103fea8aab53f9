"""Minimised reproductions of what a seeded chaos soak of the data plane found (harness: many
concurrent clients and hostile backends, reloads, a drain; see the review report). Each test
asserts the correct behaviour and fails on the code it was found on."""
from __future__ import annotations

import socket
import threading

import pytest

from .backends import Reply, recv_head, reset_action
from .helpers import Conn, build_request, cluster, config, free_port, get, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(30)


def test_proxy_error_to_head_has_no_body(core) -> None:
    """A proxy-generated error (here 503: nothing listens on the endpoint) answering a HEAD must
    not carry a body (RFC 9110 9.3.2): the bytes of "Service Unavailable\\n" are otherwise read
    by the client as the start of the next response on the keep-alive connection."""
    port = free_port()
    core(config([http_listener(port, rule("all", "dead"))], [cluster("dead", f"127.0.0.1:{free_port()}")]))
    with Conn(port) as c:
        c.send(b"HEAD /one HTTP/1.1\r\nHost: x\r\n\r\nHEAD /two HTTP/1.1\r\nHost: x\r\n\r\n")
        first = c.read_response(head=True)
        assert first.status in (502, 503)
        # the next bytes must be the second response's status line, not the first one's body
        second = c.read_response(head=True)
        assert second.status in (502, 503), second


def test_http10_upstream_status_line_is_not_relayed(core, tcp_server) -> None:
    """An HTTP/1.0 upstream's status line goes to the (HTTP/1.1, keep-alive) client unchanged, with
    no Connection header, while the proxy keeps the connection open: RFC 9110 2.5 wants an
    intermediary to send its own version, and an HTTP/1.1 client reading "HTTP/1.0" without
    keep-alive must assume the connection closes after this response (RFC 9112 9.3)."""
    def handler(conn: socket.socket, index: int) -> None:
        while recv_head(conn) is not None:
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi")

    be = tcp_server(handler)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        line = c._line()
        assert line.startswith(b"HTTP/1.1 200"), line


def test_reset_request_is_not_replayed_on_every_pooled_connection(core, http_backend) -> None:
    """A GET that makes the backend reset its connection (after reading the request) went to the
    backend once per idle pooled connection, plus once on a fresh one, on a rule that allows no
    retry at all: the keep-alive-race retry (not counted as an attempt) repeats for as long as
    the pool has connections, so a "request of death" is amplified by the pool size, with no
    backoff. The soak saw a request delivered 6 times with attempts: 2."""
    barrier = threading.Barrier(4, timeout=5)
    seen: list[str] = []

    def app(req):  # type: ignore[no-untyped-def]
        seen.append(req.target)
        if req.target.startswith("/warm"):
            barrier.wait()  # 4 requests in flight at once: 4 upstream connections, then pooled
            return Reply(200, b"warm")
        return reset_action

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]), cpus=[0])
    conns = [Conn(port) for _ in range(4)]
    try:
        for i, k in enumerate(conns):
            k.send(build_request("GET", f"/warm/{i}"))
        for k in conns:
            assert k.read_response().status == 200
        wait_for(lambda: sum(t.upstream_conns_idle for t in c.totals()) == 4, 3, "4 pooled connections")
        r = get(port, "/boom")
        assert r.status == 502
        boom = [t for t in seen if t == "/boom"]
        assert len(boom) <= 2, f"the request reached the backend {len(boom)} times (rule allows no retry)"
    finally:
        for k in conns:
            k.close()
