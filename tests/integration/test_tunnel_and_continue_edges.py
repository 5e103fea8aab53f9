"""Edges of tunnels and of Expect: 100-continue found in a review; each test failed before its
fix. A tunnel passes half-closes both ways (a FIN that came before the 101 included) and resets
as resets; an upstream that fails after a 100 Continue gets the client a 502/504, not a cut; a
CONNECT is refused (405) and never reaches an upstream."""
from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import struct
import termios
import threading

import pytest

from ringlane_sidecar.config.model import Limits, Timeouts

from .backends import Reply, recv_head, reset
from .helpers import (Closed, Conn, Response, build_request, cluster, config, free_port, http_listener, proxy_side,
                      rule, wait_for)
from .test_upgrade import recv_exact

pytestmark = pytest.mark.timeout(40)

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
CLOSE_WAIT = 8  # tcp_info.tcpi_state: the peer's FIN is in
SIOCOUTQ = 0x5411
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def ws_cfg(port: int, backend: str, limits: Limits | None = None):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("ws", "w"))], [cluster("w", backend)], limits=limits)


def inq(s: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def outq(s: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(s.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]


def tcp_state(s: socket.socket) -> int:
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def totals(c) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    ts = list(c.totals())
    return sum(t.conns_active for t in ts), sum(t.upstream_conns_active for t in ts)


def read_to_eof(conn: socket.socket, received: list[bytes], done: threading.Event) -> None:
    """A backend's last act: read what the client still sends, to EOF; keep it (or the part that
    came before an error), then say done."""
    conn.settimeout(10)
    data = b""
    try:
        while True:
            b = conn.recv(65536)
            if not b:
                break
            data += b
    finally:
        received.append(data)
        done.set()


# ---- (1) tunnels: half-close ----

def test_client_fin_before_101_reaches_upstream(core, tcp_server) -> None:
    """The client sends its upgrade request and at once half-closes (it has nothing more to
    say, e.g. `printf ... | nc`). The upstream takes a moment before switching; then it sends
    a greeting and waits for the client's EOF before closing. The client's FIN, seen while the
    proxy waited for the 101 (C_WAIT), is never passed on: start_tunnel does not set
    shut_pending when client_eof is already set, so the upstream never sees EOF and the
    tunnel hangs."""
    got_eof = threading.Event()
    fin_in = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        fin_in.wait(5)  # switch only once the proxy has the client's FIN
        conn.sendall(SWITCH + b"hello")
        conn.settimeout(10)
        while conn.recv(65536):
            pass
        got_eof.set()
        conn.sendall(b"bye")
        conn.shutdown(socket.SHUT_WR)

    be = tcp_server(handler)
    port = free_port()
    core(ws_cfg(port, be.address))
    with Conn(port, timeout=5) as conn:
        conn.send(UPGRADE)
        conn.sock.shutdown(socket.SHUT_WR)
        side = wait_for(lambda: proxy_side(conn.sock), 3, "the proxy to accept")
        wait_for(lambda: side.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == CLOSE_WAIT, 3,
                 "the proxy's side to take the FIN")
        side.close()
        fin_in.set()
        assert conn.read_response().status == 101
        assert recv_exact(conn, 5) == b"hello"
        assert got_eof.wait(5), "the client's FIN never reached the upstream through the tunnel"
        assert conn.read_to_close() == b"bye"


def test_upstream_fin_does_not_drop_client_data(core, tcp_server) -> None:
    """Half-close the other way: the upstream switches, sends its last bytes and FIN, and
    keeps reading (as a TCP relay would allow). The proxy closes the upstream socket as soon
    as it reads the FIN (on_recv_end -> up_close) and discards what the client sends next
    (close_when_flushed -> lingering close): the upstream receives nothing."""
    received: list[bytes] = []
    done = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(SWITCH + b"results-follow")
        conn.shutdown(socket.SHUT_WR)
        read_to_eof(conn, received, done)

    be = tcp_server(handler)
    port = free_port()
    c = core(ws_cfg(port, be.address))
    payload = os.urandom(100_000)
    with Conn(port, timeout=5) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        assert conn.read_to_close() == b"results-follow"
        try:
            conn.send(payload)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        assert done.wait(10)
    assert len(received[0]) == len(payload), f"upstream got {len(received[0])} of {len(payload)} client bytes"
    assert hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()
    wait_for(lambda: sum(t.conns_active + t.upstream_conns_active for t in c.totals()) == 0, 5,
             "both sides of the tunnel to be released once both sent FIN")


def test_upstream_reset_in_tunnel_is_not_a_clean_eof(core, tcp_server) -> None:
    """The upstream resets the tunnel mid-stream. The proxy ends the client side with a FIN
    (on_up_end -> close_when_flushed ignores err), so a stream cut short looks complete to the
    client; the TCP relay (rl_relay.c side_failed) propagates the reset."""
    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(SWITCH + b"partial")
        conn.settimeout(10)
        conn.recv(100)  # the client's "go"
        reset(conn)

    be = tcp_server(handler)
    port = free_port()
    core(ws_cfg(port, be.address))
    with Conn(port, timeout=5) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        assert recv_exact(conn, 7) == b"partial"
        conn.send(b"go")
        with pytest.raises(ConnectionResetError):
            while True:
                if not conn.sock.recv(65536):
                    break


def test_client_reset_in_tunnel_reaches_upstream_as_reset(core, tcp_server) -> None:
    """The mirror case: the client resets the tunnel. client_close -> rl_http_up_detach ->
    up_close closes the upstream socket gracefully, so the upstream reads a clean EOF, as if
    the client had finished normally."""
    seen: list[str] = []
    ended = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(SWITCH)
        conn.settimeout(10)
        try:
            while conn.recv(65536):
                pass
            seen.append("eof")
        except ConnectionResetError:
            seen.append("reset")
        finally:
            ended.set()

    be = tcp_server(handler)
    port = free_port()
    core(ws_cfg(port, be.address))
    conn = Conn(port, timeout=5)
    conn.send(UPGRADE)
    assert conn.read_response().status == 101
    conn.send(b"x")
    reset(conn.sock)
    assert ended.wait(5)
    assert seen == ["reset"], "a client reset reached the upstream as a clean end of stream"


def test_upstream_fin_after_client_fin_drops_queued_client_bytes(core, tcp_server) -> None:
    """Client half-closes first while part of what it sent is still queued in the proxy for a
    slow upstream (u->out); then the upstream half-closes and reads on. rl_http_on_up_eof took
    client_eof for "both sides are done" and the tunnel ended at once: up_close cleared u->out,
    and the upstream read a truncated stream ending in a clean EOF. It now ends once that queue
    is out (as the TCP relay's check_done)."""
    go = threading.Event()
    done = threading.Event()
    upc: list[socket.socket] = []
    received: list[bytes] = []

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(SWITCH)
        upc.append(conn)
        go.wait(20)
        conn.shutdown(socket.SHUT_WR)  # the upstream is done talking, still reads
        read_to_eof(conn, received, done)

    be = tcp_server(handler)
    be.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow upstream: small window
    port = free_port()
    c = core(ws_cfg(port, be.address))
    payload = os.urandom(60_000)
    with Conn(port, timeout=5) as conn:
        conn.send(UPGRADE)
        assert conn.read_response().status == 101
        wait_for(lambda: upc, 5, "the upstream to switch")
        # The proxy's socket to the upstream: a small send buffer, so most of the payload waits
        # in the proxy's own queue (u->out) rather than in the kernel.
        ps = proxy_side(upc[0])
        assert ps is not None
        ps.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ps.close()
        conn.send(payload)
        conn.sock.shutdown(socket.SHUT_WR)
        cs = proxy_side(conn.sock)
        assert cs is not None
        try:
            # The proxy read everything the client sent, FIN included.
            wait_for(lambda: outq(conn.sock) == 0 and inq(cs) == 0 and tcp_state(cs) == CLOSE_WAIT, 5,
                     "the proxy to read the client's bytes and FIN")
        finally:
            cs.close()
        go.set()
        assert done.wait(15), "the upstream never saw EOF"
    got = received[0]
    assert len(got) == len(payload), f"the upstream got {len(got)} of {len(payload)} bytes, then a clean EOF"
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    wait_for(lambda: totals(c) == (0, 0), 5, "the tunnel to be released")


def test_tunnel_client_that_stops_reading_after_upstream_fin_is_cut(core, tcp_server) -> None:
    """The upstream switches, sends its last 60 kB and closes (FIN). The client reads nothing,
    so most of that waits in the proxy's queue to the client. With the half-close, the rest of
    the tunnel (and the upstream connection, counted against the cluster's max connections)
    was held forever: it is now cut after a tunnel idle timeout without progress either way
    (limits.tunnelIdleTimeout, as the open tunnel and a relay; idleTimeout is for HTTP)."""
    go = threading.Event()
    sent = threading.Event()
    upc: list[socket.socket] = []

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        upc.append(conn)
        go.wait(20)
        conn.sendall(SWITCH + b"x" * 60_000)
        conn.shutdown(socket.SHUT_WR)
        # The proxy took everything, FIN included (this side stays open, reading).
        wait_for(lambda: outq(conn) == 0, 5, "the proxy to read the upstream's bytes")
        sent.set()
        conn.settimeout(30)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    be = tcp_server(handler)
    port = free_port()
    c = core(ws_cfg(port, be.address, Limits(request_header_timeout="1s", idle_timeout="60s", tunnel_idle_timeout="1s")))
    conn = Conn(port, timeout=5, rcvbuf=4096)
    try:
        conn.send(UPGRADE)
        cs = wait_for(lambda: proxy_side(conn.sock), 5, "the proxy to accept")
        cs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the bytes wait in the proxy
        cs.close()
        wait_for(lambda: upc, 5, "the upgrade request to reach the upstream")
        go.set()
        assert sent.wait(10), "the proxy never read the upstream's last bytes"
        # Not one byte read by the client since: it is silent far longer than the idle timeout.
        wait_for(lambda: totals(c) == (0, 0), 10,
                 lambda: f"the client silent past the 1 s tunnel idle timeout to be cut (active client, upstream: {totals(c)})")
    finally:
        conn.sock.close()


# ---- (2) Expect: 100-continue ----

EXPECT = b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n"


def final_after_continue(conn: Conn) -> Response:
    """Sends EXPECT, takes the 100 Continue, sends the body: the final response that must follow."""
    conn.send(EXPECT)
    assert conn.read_head()[0] == 100
    conn.send(b"0123456789")
    try:
        return conn.read_response()
    except Closed as e:
        pytest.fail(f"no final response after a 100 Continue: {e}")


def test_upstream_close_after_100_continue_gets_502(core, tcp_server) -> None:
    """The upstream answers 100 Continue, reads the body, then closes without a final
    response. The 100 set resp_started (forward_to_client / write_head), so respond_error
    cuts the client connection instead of answering 502: the client sees an interim
    response and then EOF, no final status (and the request is never counted in the stats)."""
    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        conn.settimeout(10)
        conn.recv(10)

    be = tcp_server(handler)
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        assert final_after_continue(conn).status == 502


def test_backend_timeout_after_100_continue_gets_504(core, tcp_server) -> None:
    """Same root cause with a timer: the upstream sends 100 Continue and then never answers;
    the backend timeout cuts the connection instead of answering 504 (only an interim response
    went out, a final one is still owed and honest)."""
    release = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        release.wait(10)

    be = tcp_server(handler)
    port = free_port()
    core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(backend_request="300ms")))],
                [cluster("b", be.address)]))
    try:
        with Conn(port) as conn:
            assert final_after_continue(conn).status == 504
    finally:
        release.set()


# ---- upgrade-like requests that are refused ----

def test_connection_usable_after_refused_connect(core, http_backend) -> None:
    """A CONNECT (llhttp treats it as an upgrade: parser->upgrade = 1) was routed and refused
    by the upstream with 405; finish_request only reset the client parser when c->upgrade (an
    Upgrade header) was set, so llhttp then stopped with HPE_PAUSED_UPGRADE on the next request
    and the proxy answered a valid GET with 400. A reverse proxy opens no tunnels to arbitrary
    hosts: CONNECT is a 405 from the proxy, and the connection either closes or stays usable."""
    be = http_backend(lambda req: Reply(405, b"no connect\n") if req.method == "CONNECT" else Reply(200, b"ok"))
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        conn.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        r = conn.read_response()
        assert r.status == 405 and r.header("allow") and "CONNECT" not in r.header("allow"), r
        assert be.count == 0, "a CONNECT reached the upstream"
        if (r.header("connection") or "").lower() == "close":
            return
        conn.send(build_request("GET", "/after"))
        r2 = conn.read_response()
        assert (r2.status, r2.body) == (200, b"ok"), (r2.status, r2.body)
