"""Edges of config hot swap, drain and the TCP relay: a drain finishes a response still being
flushed, pooled connections to a removed endpoint do not block its replacement, a reset on one
side of the relay is a reset on the other (after what came before it), listeners that swap addresses keep their stats."""
from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
import threading

import pytest

from .backends import Reply, echo_handler, recv_all, reset
from .conftest import apply_and_wait
from .helpers import (Conn, build_request, cluster, config, free_port, get, http_listener, proxy_side, rule,
                      tcp_listener, wait_codes, wait_for)

pytestmark = pytest.mark.timeout(60)


def shrink_proxy_sndbuf(client: socket.socket) -> None:
    """Make the proxy's kernel send buffer toward this client small (no autotuning), so what the
    client does not read stays queued inside the proxy."""
    s = wait_for(lambda: proxy_side(client), 3, "the proxy to accept")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s.close()


def test_drain_does_not_truncate_response_being_flushed(core, http_backend) -> None:
    """A keep-alive response fully received from upstream but still queued for a slow client
    must reach the client whole when drain starts ("in-flight requests finish")."""
    body = os.urandom(64 * 1024)
    be = http_backend(lambda req: Reply(200, body))
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]), cpus=[0])
    conn = Conn(port, rcvbuf=4096, timeout=10)
    try:
        shrink_proxy_sndbuf(conn.sock)
        conn.send(build_request("GET", "/big"))
        # the proxy counted the response: all of it came from the upstream; the client read nothing
        wait_codes(c, "web", "all", s2xx=1, timeout=5)
        c.drain(5000)
        r = conn.read_response()
        assert r.status == 200
        assert len(r.body) == len(body) and r.body == body
    finally:
        conn.close()


def test_pooled_conns_to_removed_endpoint_do_not_block_new_endpoint(core, http_backend) -> None:
    """max_connections counts idle pooled connections to an endpoint the new config dropped:
    the cluster's new endpoint gets 503 until the old ones time out (60 s by default)."""
    a = http_backend(lambda req: Reply(200, b"A"))
    b = http_backend(lambda req: Reply(200, b"B"))
    port = free_port()

    def cfg(ep: str, gen: int):  # type: ignore[no-untyped-def]
        return config([http_listener(port, rule("all", "up"))], [cluster("up", ep, max_connections=1)], gen)

    c = core(cfg(a.address, 1), cpus=[0])
    assert get(port, "/1").text == "A"
    wait_for(lambda: sum(t.upstream_conns_idle for t in c.totals()) == 1, 3, "the upstream conn to be pooled")
    apply_and_wait(c, cfg(b.address, 2))
    r = get(port, "/2")
    assert (r.status, r.text) == (200, "B")


def test_relay_upstream_half_close_client_keeps_sending(core, tcp_server) -> None:
    """The backend shuts down its write side first; the client still sends 512 KiB, then FIN:
    the backend gets every byte."""
    got: list[int] = []
    done = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        got.append(len(recv_all(conn)))
        done.set()

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([tcp_listener(port, "up")], [cluster("up", srv.address)]))
    payload = os.urandom(512 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert recv_all(s) == b"hello"
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        assert done.wait(5)
    assert got == [len(payload)]
    wait_for(lambda: c.listener_stats()["tcp"]["conns_closed"] == 1, 5, "the relay to close")


def queued(s: socket.socket, request: int) -> int:
    """Bytes in a socket's receive (FIONREAD) or send (TIOCOUTQ, i.e. SIOCOUTQ) queue."""
    return int(struct.unpack("i", fcntl.ioctl(s.fileno(), request, b"\0" * 4))[0])


def test_relay_upstream_half_close_then_slow_reader_gets_every_byte(core, tcp_server) -> None:
    """As above, but the backend reads only once the proxy's sends toward it wait for room (its
    window closed while it is half-closed). io_uring (6.18) then completes the send with EAGAIN,
    which the relay took for a failed peer: it reset both sides and the upload was lost."""
    got: list[bytes] = []
    done = threading.Event()
    read_now = threading.Event()

    upc: list[socket.socket] = []

    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        upc.append(conn)
        read_now.wait(10)
        try:
            got.append(recv_all(conn))
        except OSError as e:  # the relay reset it
            got.append(repr(e).encode())
        finally:
            done.set()

    srv = tcp_server(handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: a small window
    port = free_port()
    c = core(config([tcp_listener(port, "up")], [cluster("up", srv.address)]), cpus=[0])
    payload = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        assert recv_all(s) == b"hello"
        wait_for(lambda: upc, 5, "the backend to half-close")
        ps = wait_for(lambda: proxy_side(upc[0]), 3, "the proxy's socket to the backend")  # its peer: upc[0]
        try:
            ps.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # what waits, waits in the proxy
            sender = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)), daemon=True)
            sender.start()
            # The backend's window is full and the proxy holds more for it: its send waits for room.
            wait_for(lambda: queued(upc[0], termios.FIONREAD) > 0 and queued(ps, termios.TIOCOUTQ) > 0, 5,
                     "the proxy's sends to the backend to wait for room")
        finally:
            ps.close()
        read_now.set()
        assert done.wait(10)
        sender.join(5)
    assert len(got[0]) == len(payload) and got[0] == payload, f"{got[0][:60]!r}: {len(got[0])} of {len(payload)} bytes"
    wait_for(lambda: c.listener_stats()["tcp"]["conns_closed"] == 1, 5, "the relay to close")


def test_reload_http_to_tcp_same_address(core, nginx, tcp_server) -> None:
    """Same address, protocol changes: new connections get the relay, the idle keep-alive HTTP
    connection is not served by the old config forever."""
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)], 1))
    with Conn(port) as conn:
        assert conn.request("GET", "/x").status == 200
        apply_and_wait(c, config([tcp_listener(port, "e")], [cluster("e", srv.address)], 2))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"ping")
            assert s.recv(10) == b"ping"
        # the keep-alive connection of the old HTTP listener: at most this one request, then closed
        r = conn.request("GET", "/y")
        assert r.status == 200
        assert conn.at_eof(3)



def test_relay_client_fin_before_upstream_connects(core, tcp_server) -> None:
    """Request + FIN sent before the relay's upstream connect completes: the backend gets the
    bytes and the EOF, and its answer comes back."""
    gate = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        got = recv_all(conn)
        conn.sendall(b"%d" % len(got))

    srv = tcp_server(handler)
    port = free_port()
    core(config([tcp_listener(port, "up")], [cluster("up", srv.address)]))
    payload = os.urandom(300 * 1024)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"%d" % len(payload)


def test_relay_upstream_reset_reaches_client_as_reset(core, tcp_server) -> None:
    """The backend aborts (RST) mid-stream: a transparent relay must abort the client side too,
    not end it with a FIN that looks like a complete stream."""
    delivered = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(b"partial")
        delivered.wait(5)
        reset(conn)

    srv = tcp_server(handler)
    port = free_port()
    core(config([tcp_listener(port, "up")], [cluster("up", srv.address)]))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        got = b""
        with pytest.raises(ConnectionResetError):
            while True:
                d = s.recv(100)
                assert d, f"clean EOF after {got!r}: the backend's reset became a FIN"
                got += d
                if got == b"partial":
                    delivered.set()


def test_relay_client_reset_reaches_backend_as_reset(core, tcp_server) -> None:
    """The client aborts an upload (RST): the backend must not see a clean EOF, which it would
    take for the end of a complete upload."""
    outcome: list[str] = []
    done = threading.Event()
    first = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        try:
            n = 0
            while True:
                d = conn.recv(65536)
                if not d:
                    outcome.append(f"clean EOF after {n} bytes")
                    return
                n += len(d)
                first.set()
        except ConnectionResetError:
            outcome.append("reset")
        finally:
            done.set()

    srv = tcp_server(handler)
    port = free_port()
    core(config([tcp_listener(port, "up")], [cluster("up", srv.address)]))
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"upload-part-1")
    assert first.wait(5)
    reset(s)
    assert done.wait(5)
    assert outcome == ["reset"], outcome


def test_ports_swapped_between_listeners_keeps_listener_stats_consistent(core, nginx) -> None:
    """Listeners a and b swap ports; a keep-alive connection opened on a is counted closed on b
    (adopt_newest_cfg moves it by address), so a never closes and b closes more than it opened."""
    p1, p2 = free_port(), free_port()
    cl = [cluster("u", nginx.a)]

    def cfg(pa: int, pb: int, gen: int):  # type: ignore[no-untyped-def]
        return config([http_listener(pa, rule("r", "u"), name="a"), http_listener(pb, rule("r", "u"), name="b")],
                      cl, gen)

    c = core(cfg(p1, p2, 1))
    with Conn(p1) as conn:
        assert conn.request("GET", "/1").status == 200
        apply_and_wait(c, cfg(p2, p1, 2))
        assert conn.request("GET", "/2").status == 200
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 3, "the connection to close")
    st = c.listener_stats()
    for name in ("a", "b"):
        assert st[name]["conns_closed"] <= st[name]["conns_opened"], st


def test_relay_reset_delivers_what_came_before_it(core, tcp_server) -> None:
    """The backend sends 256 KiB and resets; the client reads only afterwards. As with a direct
    connection (the receiver reads what arrived before the reset), every byte the proxy took in
    reaches the client, then the reset. on_recv_end discarded the queue toward the client and
    reset it at once, so it got a prefix of the data."""
    payload = os.urandom(256 << 10)
    sent = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(payload)
        # Every byte acknowledged by the proxy's kernel (SIOCOUTQ == 0), then the reset.
        wait_for(lambda: struct.unpack("i", fcntl.ioctl(conn, termios.TIOCOUTQ, b"\0" * 4))[0] == 0, 5,
                 "the proxy to take in the payload")
        reset(conn)
        sent.set()

    srv = tcp_server(handler)
    port = free_port()
    core(config([tcp_listener(port, "up")], [cluster("up", srv.address)]))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the proxy holds most of it
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    with s:
        assert sent.wait(5)
        got = bytearray()
        with pytest.raises(ConnectionResetError):
            while d := s.recv(65536):
                got += d
            raise AssertionError(f"clean EOF after {len(got)} bytes")
    assert len(got) == len(payload) and got == payload, f"{len(got)} of {len(payload)} bytes before the reset"


def test_relay_reset_toward_a_client_that_never_reads_is_bounded(core, tcp_server) -> None:
    """Passing a reset on waits for delivery only while the other side takes bytes: a client that
    stops reading for RESET_STALL_MS (1 s) does not keep the relay (and its buffers) forever."""
    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(os.urandom(1 << 20))
        reset(conn)

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([tcp_listener(port, "up")], [cluster("up", srv.address)]))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    with s:
        wait_for(lambda: srv.accepted == 1, 5, "the relay to connect upstream")
        wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 15, "the relay to give up and reset")
        s.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while s.recv(1 << 16):
                pass
