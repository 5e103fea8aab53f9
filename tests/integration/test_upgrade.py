"""Upgrade: websocket switches the connection to a byte tunnel after the backend's 101."""
from __future__ import annotations

import os
import socket

import pytest

from .backends import Reply, upgrade_echo
from .helpers import Conn, cluster, config, free_port, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(30)

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def ws_cfg(port: int, backend: str):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("ws", "w"))], [cluster("w", backend)])


def recv_exact(conn: Conn, n: int) -> bytes:
    while len(conn.buf) < n:
        conn._fill()
    out, conn.buf = conn.buf[:n], conn.buf[n:]
    return out


def test_websocket_tunnel_echo_both_ways(core, http_backend) -> None:
    be = http_backend(lambda req: upgrade_echo())
    port = free_port()
    c = core(ws_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        r = conn.read_response()
        assert r.status == 101
        assert (r.header("upgrade") or "").lower() == "websocket"
        for i in range(20):
            msg = b"frame-%d|" % i * (i + 1)
            conn.send(msg)
            assert recv_exact(conn, len(msg)) == msg
        big = os.urandom(2 * 1024 * 1024)  # far more than the tunnel's queues hold: backpressure both ways
        conn.send(big)
        assert recv_exact(conn, len(big)) == big
        conn.sock.shutdown(socket.SHUT_WR)  # half-close through the tunnel: the backend answers FIN
        assert conn.at_eof(5)
    # the upgrade reached the backend as an upgrade (hop-by-hop Upgrade/Connection kept for it)
    req = be.requests[0]
    assert (req.header("upgrade") or "").lower() == "websocket"
    assert "upgrade" in (req.header("connection") or "").lower()
    assert req.header("sec-websocket-key") == "dGhlIHNhbXBsZSBub25jZQ=="
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "the tunnel to close")


def test_bytes_right_after_upgrade_request(core, http_backend) -> None:
    """Tunnel bytes sent in the same segment as the upgrade request arrive after the 101."""
    be = http_backend(lambda req: upgrade_echo())
    port = free_port()
    core(ws_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(UPGRADE + b"early-bytes")
        assert conn.read_response().status == 101
        assert recv_exact(conn, len(b"early-bytes")) == b"early-bytes"
        conn.send(b"later")
        assert recv_exact(conn, 5) == b"later"


def test_backend_greeting_in_same_segment_as_101(core, http_backend) -> None:
    be = http_backend(lambda req: upgrade_echo(greeting=b"hello-from-server"))
    port = free_port()
    core(ws_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        assert recv_exact(conn, len(b"hello-from-server")) == b"hello-from-server"
        conn.send(b"ping")
        assert recv_exact(conn, 4) == b"ping"


def test_backend_closes_tunnel(core, http_backend) -> None:
    def act(conn: socket.socket, r) -> None:  # type: ignore[no-untyped-def]
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nbye")

    be = http_backend(lambda req: act)
    port = free_port()
    core(ws_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        assert conn.read_to_close() == b"bye"


def test_after_a_refused_upgrade_requests_are_routed_again(core, http_backend) -> None:
    """The upgrade goes to one backend, which answers 200: the next request on the connection
    is parsed and routed by the rules (to the other backend, with the rule's header), not piped
    to the first one."""
    ws = http_backend(lambda req: Reply(200, b"no tunnel\n"))
    web = http_backend(lambda req: Reply(200, req.header("x-route").encode()))
    port = free_port()
    core(config([http_listener(port, rule("ws", "ws", exact="/ws"), rule("web", "web", tag=True))],
                [cluster("ws", ws.address), cluster("web", web.address)]))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().body == b"no tunnel\n"
        r = conn.request("GET", "/page")
        assert (r.status, r.body) == (200, b"web")
    assert [q.target for q in ws.requests] == ["/ws"]
    assert [q.target for q in web.requests] == ["/page"]
    assert web.requests[0].header("x-forwarded-for") == "127.0.0.1"


def test_refused_upgrade_stays_http(core, http_backend) -> None:
    """A backend that answers the upgrade with a plain 200 keeps the connection in HTTP."""
    be = http_backend(lambda req: Reply(200, b"no tunnel for you\n"))
    port = free_port()
    core(ws_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        r = conn.read_response()
        assert r.status == 200 and r.body == b"no tunnel for you\n"
        r2 = conn.request("GET", "/plain")
        assert r2.status == 200
    assert [q.target for q in be.requests] == ["/ws", "/plain"]
