"""What a seeded chaos soak of the data plane (many concurrent clients, hostile backends,
reloads, a drain) found, each as a small deterministic test: proxy errors to HEAD have no body,
an HTTP/1.0 upstream's status line goes out as HTTP/1.1, and the keep-alive-race replay is
bounded."""
from __future__ import annotations

import socket
import threading

import pytest

from .backends import Reply, recv_head, reset_action
from .helpers import Conn, build_request, cluster, config, free_port, get, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(30)


def test_proxy_error_to_head_has_no_body(core) -> None:
    """A proxy-generated error (here 503: nothing listens on the endpoint) answering a HEAD has
    no body (RFC 9110 9.3.2): its bytes would be read as the start of the next response."""
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
    """An HTTP/1.0 upstream's status line reaches the HTTP/1.1 keep-alive client as HTTP/1.1 (RFC
    9110 2.5: an intermediary sends its own version); as "HTTP/1.0" with no keep-alive the client
    would take the connection, which the proxy keeps open, for a closing one (RFC 9112 9.3)."""
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
    """A GET that makes the backend reset its connection after reading it, on a rule with no
    retry, reaches the backend at most twice (the keep-alive-race replay, once, on a new
    connection), not once per idle pooled connection."""
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
