"""limits.tunnelIdleTimeout: a TCP relay or an upgraded tunnel with no byte moving either way
that long is closed (with a reset when bytes were still owed to a side that stopped reading);
one that keeps moving, in either direction alone, is never cut."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from ringlane_sidecar.config.model import Limits

from .backends import echo_handler, recv_all, upgrade_echo
from .helpers import Conn, cluster, config, free_port, http_listener, recv_until_close, rule, tcp_listener, wait_for
from .test_upgrade import UPGRADE, recv_exact

pytestmark = pytest.mark.timeout(30)

IDLE_MS = 400
LIMITS = Limits(request_header_timeout="2s", tunnel_idle_timeout=f"{IDLE_MS}ms")
# The "keeps moving" tests: a byte every 100 ms for 2.5 timeouts of 1 s. The slack (900 ms
# without a byte) is what a stalled test thread or a slow ASan worker may take.
MOVING_LIMITS = Limits(request_header_timeout="2s", tunnel_idle_timeout="1s")
STEP, STEPS = 0.1, 25


def relay_cfg(port: int, backend: str, limits: Limits = LIMITS):  # type: ignore[no-untyped-def]
    return config([tcp_listener(port, "up")], [cluster("up", backend)], limits=limits)


def tunnel_cfg(port: int, backend: str, limits: Limits = LIMITS):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("ws", "w"))], [cluster("w", backend)], limits=limits)


def wait_closed(s: socket.socket, deadline_s: float = 5.0) -> float:
    """Seconds until the proxy closed s (EOF); fails if it stays open past the deadline."""
    start = time.monotonic()
    s.settimeout(deadline_s)
    assert s.recv(10) == b"", "bytes arrived on a connection that should be idle"
    return time.monotonic() - start


def test_idle_relay_is_closed_both_ways(core, tcp_server) -> None:
    backend_eof = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        echo_handler(conn, index)
        backend_eof.set()

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
        assert wait_closed(s) >= IDLE_MS / 1000 * 0.9  # not before the timeout (the wheel rounds to 16 ms)
    assert backend_eof.wait(5), "the upstream side stayed open"
    wait_for(lambda: c.listener_stats()["tcp"]["conns_closed"] == 1, 5, "the relay to be counted closed")


def test_relay_moving_one_way_is_not_cut(core, tcp_server) -> None:
    """The client only sends (the backend only reads), then the backend only sends: each is movement."""
    def handler(conn: socket.socket, index: int) -> None:
        got = recv_all(conn)  # until the client's FIN
        for _ in range(STEPS):
            conn.sendall(b"d")
            time.sleep(STEP)
        conn.sendall(b"%d" % len(got))
        conn.shutdown(socket.SHUT_WR)

    srv = tcp_server(handler)
    port = free_port()
    core(relay_cfg(port, srv.address, MOVING_LIMITS))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for _ in range(STEPS):  # 2.5 timeouts' worth of client-to-backend bytes only
            s.sendall(b"u")
            time.sleep(STEP)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"d" * STEPS + b"%d" % STEPS


def test_idle_relay_owing_bytes_is_reset(core, tcp_server) -> None:
    """The client stopped reading a download: cut with a reset, so it cannot pass for complete."""
    def handler(conn: socket.socket, index: int) -> None:
        try:
            conn.sendall(b"x" * (64 << 20))
        except OSError:
            pass

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert s.recv(1) == b"x"
        wait_for(lambda: c.listener_stats()["tcp"]["conns_closed"] == 1, 10, "the stalled relay to be cut")
        with pytest.raises(ConnectionResetError):
            while s.recv(1 << 20):
                pass


def test_idle_websocket_tunnel_is_closed(core, http_backend) -> None:
    be = http_backend(lambda req: upgrade_echo())
    port = free_port()
    c = core(tunnel_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        conn.send(b"hello")
        assert recv_exact(conn, 5) == b"hello"
        assert wait_closed(conn.sock) >= IDLE_MS / 1000 * 0.9
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "the tunnel to close")


def test_websocket_tunnel_moving_is_not_cut(core, http_backend) -> None:
    be = http_backend(lambda req: upgrade_echo())
    port = free_port()
    core(tunnel_cfg(port, be.address, MOVING_LIMITS))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        for i in range(STEPS):  # 2.5 timeouts long
            conn.send(b"%02d" % i)
            assert recv_exact(conn, 2) == b"%02d" % i
            time.sleep(STEP)
        conn.send(b"still-open")
        assert recv_exact(conn, 10) == b"still-open"


def test_idle_websocket_tunnel_owing_bytes_is_reset(core, http_backend) -> None:
    def flood(conn: socket.socket, r) -> None:  # type: ignore[no-untyped-def]
        try:
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                         + b"x" * (64 << 20))
        except OSError:
            pass

    be = http_backend(lambda req: flood)
    port = free_port()
    c = core(tunnel_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 10, "the stalled tunnel to be cut")
        with pytest.raises(ConnectionResetError):
            while conn.sock.recv(1 << 20):
                pass


# An upstream that half-closed leaves the client's direction open: that rest is a tunnel too,
# cut after tunnelIdleTimeout of silence, as a relay's (it waited for idleTimeout, 60 s here).
HALF_LIMITS = Limits(request_header_timeout="2s", idle_timeout="60s", tunnel_idle_timeout=f"{IDLE_MS}ms")


def test_half_closed_tunnel_is_cut_after_the_tunnel_idle_timeout(core, http_backend) -> None:
    upstream_eof = threading.Event()

    def switch_then_fin(conn: socket.socket, r) -> None:  # type: ignore[no-untyped-def]
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        recv_until_close(conn)
        upstream_eof.set()

    be = http_backend(lambda req: switch_then_fin)
    port = free_port()
    c = core(tunnel_cfg(port, be.address, HALF_LIMITS))
    with Conn(port) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        assert conn.sock.recv(10) == b"", "the upstream's FIN was not passed on"
        start = time.monotonic()
        wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "the half-closed tunnel to be cut")
        assert time.monotonic() - start >= IDLE_MS / 1000 * 0.5
    assert upstream_eof.wait(5), "the upstream side stayed open"


def test_half_closed_relay_is_cut_after_the_tunnel_idle_timeout(core, tcp_server) -> None:
    """The same through the TCP relay (right already: the pair shows the two agree)."""
    def fin_then_read(conn: socket.socket, index: int) -> None:
        conn.shutdown(socket.SHUT_WR)
        recv_until_close(conn)

    srv = tcp_server(fin_then_read)
    port = free_port()
    c = core(relay_cfg(port, srv.address, HALF_LIMITS))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert s.recv(10) == b""
        wait_for(lambda: c.listener_stats()["tcp"]["conns_closed"] == 1, 5, "the half-closed relay to be cut")
