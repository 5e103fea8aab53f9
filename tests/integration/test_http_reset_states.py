"""Resets (RST) in every state of an HTTP/1.1 exchange, from either side, on both engines.

A reset on a socket the proxy is not reading (paused by backpressure, held for pipelining, past
the peer's FIN) must be seen at once, as a direct peer sees POLLERR; and what a careful proxy
(HAProxy, nginx) does then is checked: the other side is told promptly (client: a reset or a
502/504; upstream: its connection closed, not pooled), nothing stays open (worker gauges back to
zero or to the pooled count), the exchange counts once, and the next requests on other
connections are served. Data that reached the proxy before a reset that ends the stream *after*
a complete message (a close-delimited body ended by FIN, or a length-framed one fully received)
is still delivered: the reset cuts nothing that was already whole."""
from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import termios
import threading
from typing import Callable

import pytest

from ringlane_sidecar.config.model import Limits, Retry

from .backends import Reader, Reply, endless, read_request, reset, stall_forever
from .helpers import (Closed, Conn, ZERO_CODES, build_request, cluster, config, fill_until_blocked,
                      free_port, get, http_listener, own_stream_sockets, recv_until_close, rule, total,
                      wait_for)

pytestmark = pytest.mark.timeout(90)

ONE = [0]  # one worker: a request on another connection is served by the same event loop
TCP_CLOSE = 7


# ---- probes ----

def gauges(c) -> dict:  # type: ignore[no-untyped-def]
    return {"conns_active": total(c, "conns_active"),
            "upstream_conns_active": total(c, "upstream_conns_active"),
            "upstream_conns_idle": total(c, "upstream_conns_idle"),
            "cluster_active": sum(cs["active"] for cs in c.cluster_stats().values())}


def wait_gauges(c, timeout: float = 5.0, what: str = "", **expected: int) -> None:  # type: ignore[no-untyped-def]
    want = {"conns_active": 0, "upstream_conns_active": 0, "upstream_conns_idle": 0, "cluster_active": 0}
    want.update(expected)
    try:
        wait_for(lambda: gauges(c) == want, timeout, "gauges")
    except AssertionError:
        raise AssertionError(f"{what}: gauges {gauges(c)} after {timeout}s, expected {want}") from None


def codes(c, route: str = "r") -> dict:  # type: ignore[no-untyped-def]
    st = c.rule_stats().get(("web", route))
    return dict(st["codes"]) if st else dict(ZERO_CODES)


def wait_codes(c, timeout: float = 5.0, route: str = "r", **expected: int) -> None:  # type: ignore[no-untyped-def]
    want = dict(ZERO_CODES)
    want.update({k.lstrip("s"): v for k, v in expected.items()})
    try:
        wait_for(lambda: codes(c, route) == want, timeout, "codes")
    except AssertionError:
        raise AssertionError(f"codes of {route!r}: {codes(c, route)}, expected {want}") from None


def outq(sock: socket.socket) -> int:
    """Bytes sock sent that its peer's kernel has not acknowledged yet (SIOCOUTQ; a FIN counts)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]


def inq(sock: socket.socket) -> int:
    """Bytes waiting unread in sock's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def proxy_upstream_socket(peer: tuple) -> socket.socket | None:  # type: ignore[type-arg]
    """A dup of the proxy's socket whose address is peer (the core runs in this process), or None."""
    for s in own_stream_sockets():
        try:
            if s.getsockname() == peer:
                return s
        except OSError:
            pass
        s.close()
    return None


def wait_hangup(conn: socket.socket, timeout_ms: int = 10000) -> str:
    """Waits, without reading, for the peer to close conn (FIN or reset): 'closed' or 'open'."""
    p = select.poll()
    p.register(conn, select.POLLRDHUP | select.POLLERR | select.POLLHUP)
    return "closed" if p.poll(timeout_ms) else "open"


def barrier_request(port: int) -> None:
    """A request on another connection, served by the same single worker: events that were
    ready before it (a reset) have been handled by the time its answer arrives; and it checks
    that the next requests are unaffected."""
    r = get(port, "/next", timeout=5)
    assert r.status == 200, r


def simple_cfg(port: int, *backends: str, retry: Retry = Retry(), limits: Limits | None = None, **kw: object):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("r", "b", retry=retry))], [cluster("b", *backends, **kw)], limits=limits)


# ======================= upstream resets =======================

PIECE = 8192
UNREAD_AT = 96 * 1024  # unread in the proxy's socket while each piece is acknowledged: it paused reading


def _paused_then(head: bytes, chunked: bool, fin: bool, then_reset: bool, sent: list, seen: list,  # type: ignore[type-arg]
                 ready: threading.Event, go: threading.Event, barrier: Callable[[], None]):  # type: ignore[no-untyped-def]
    """A raw backend action: sends head, then body pieces (chunks when chunked) one at a time,
    each acknowledged by the proxy's kernel before the next, to a client that does not read,
    until UNREAD_AT bytes sit unread in the proxy's socket and stay there across a barrier
    request (the single worker ran since, so it paused reading: backpressure, not just late);
    then ends the message (last chunk, or FIN when fin), waits until the proxy's kernel
    acknowledged that too (the proxy has the whole response), and, once the test says go,
    resets the connection (then_reset) or just waits. sent gets the body bytes."""
    def act(conn: socket.socket, r: Reader) -> None:
        peer = conn.getpeername()
        up = None
        try:
            conn.sendall(head)
            up = proxy_upstream_socket(peer)
            assert up is not None, "the proxy's upstream socket not found"
            # room for UNREAD_AT whatever the kernel's autotuning or memory pressure does
            up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            i = 0
            while True:
                piece = os.urandom(PIECE - i % 7)
                i += 1
                sent.append(piece)
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                wait_for(lambda: outq(conn) == 0, 5, "the proxy's kernel to take a piece")
                if inq(up) >= UNREAD_AT:
                    barrier()
                    if inq(up) >= UNREAD_AT:
                        break
                assert i < 2000, "the proxy never paused reading the upstream"
            if chunked:
                conn.sendall(b"0\r\n\r\n")
            if fin:
                conn.shutdown(socket.SHUT_WR)
            wait_for(lambda: outq(conn) == 0, 5, "the proxy's kernel to take the end of the response")
            seen.append(("unread", inq(up)))
            ready.set()
            go.wait(20)
            if then_reset:
                reset(conn)
                wait_for(lambda: tcp_state(up) == TCP_CLOSE, 5, "the proxy's socket to take the reset")
                seen.append(("unread at the reset", inq(up)))
            else:
                seen.append(("no reset", 0))
        except Exception as e:  # noqa: BLE001 -- reported to the test
            seen.append(("precondition", repr(e)))
        finally:
            if up is not None:
                up.close()
            ready.set()
    return act


def _whole_response_then_reset(core, http_backend, fin: bool, chunked: bool, then_reset: bool):  # type: ignore[no-untyped-def]
    if chunked:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    else:
        head = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    seen: list = []  # type: ignore[type-arg]
    sent: list[bytes] = []
    ready, go = threading.Event(), threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/next":
            return Reply(200, b"next\n")
        return _paused_then(head, chunked, fin, then_reset, sent, seen, ready, go, barrier)

    barriers: list[int] = []

    def barrier() -> None:
        barriers.append(1)
        barrier_request(port)

    port = free_port()
    be = http_backend(app)
    c = core(simple_cfg(port, be.address), cpus=ONE)
    conn = Conn(port, rcvbuf=4096, timeout=10)
    try:
        conn.send(build_request("GET", "/whole"))
        assert ready.wait(30)
        assert seen and seen[0][0] == "unread", f"precondition not reached: {seen}"
        go.set()
        wait_for(lambda: len(seen) >= 2, 10, "the backend to reset")
        if then_reset:
            assert seen[1][0] == "unread at the reset" and seen[1][1] > 0, f"precondition not reached: {seen}"
        barrier_request(port)  # the worker has handled the reset (or had the chance to)
        body = b"".join(sent)
        try:
            r = conn.read_response()
            got = (r.status, len(r.body), r.body == body)
        except (Closed, ConnectionResetError) as e:
            got = ("cut", conn.received, type(e).__name__)
        assert got == (200, len(body), True), \
            f"the whole response ({len(body)} body bytes) reached the proxy before the upstream's reset " \
            f"({seen}); the client got {got}"
        if not chunked:
            assert conn.at_eof(5)
    finally:
        conn.close()
    # only the barrier request's upstream connection is left, pooled
    wait_gauges(c, what="after the exchange", upstream_conns_active=1, upstream_conns_idle=1)
    wait_codes(c, s2xx=2 + len(barriers))


@pytest.mark.parametrize("then_reset", [False, True], ids=["fin-only", "fin-then-reset"])
def test_close_delimited_body_ended_by_fin_then_reset_is_delivered_whole(core, http_backend, then_reset) -> None:
    """The upstream sends a close-delimited 200 (no length) and FIN to a client that does not
    read: the proxy pauses reading the upstream with part of the body (64 KiB+) still in its
    socket, the FIN acknowledged. Then the upstream resets (its close with SO_LINGER 0; what a kernel also does when
    it closes with request bytes unread). The body was complete at the FIN, and every byte of it
    reached the proxy: the client must get the whole body, then EOF (the same as with a FIN
    alone); counted once as 2xx; nothing left open."""
    _whole_response_then_reset(core, http_backend, fin=True, chunked=False, then_reset=then_reset)


def test_chunked_response_fully_received_then_reset_is_delivered_whole(core, http_backend) -> None:
    """The upstream sends a whole chunked 200 (its last chunk included) to a client that does not
    read; the proxy has every byte (kernel-acknowledged) but paused reading with some still in its
    socket; then the upstream resets the connection (as a server does that closes with request
    bytes unread). The response was complete before the reset: the client must get all of it
    (nginx and HAProxy read what was received before the error); then the connection may stay
    open or close, the upstream one is gone; counted once as 2xx."""
    _whole_response_then_reset(core, http_backend, fin=False, chunked=True, then_reset=True)


def test_upstream_reset_mid_body_while_paused_reaches_the_client(core, http_backend) -> None:
    """An endless Content-Length response to a client that does not read: the proxy pauses the
    upstream. The upstream resets mid-body. As over a direct connection, the bytes that arrived
    before the reset come first (the proxy cannot tell a cut body from a whole one without
    reading them: see the whole-response tests above), then the cut: when the client reads, it
    gets the body it is owed and a reset, never a clean end; the upstream connection is gone,
    not pooled; the exchange is counted once; the next request on another connection is served."""
    hold: list[socket.socket] = []
    ready = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/next":
            return Reply(200, b"next\n")

        def act(conn: socket.socket, r: Reader) -> None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
            hold.append(conn)
            fill_until_blocked(conn)
            ready.set()
            done.wait(30)
        return act

    done = threading.Event()
    be = http_backend(app)
    port = free_port()
    c = core(simple_cfg(port, be.address), cpus=ONE)
    conn = Conn(port, rcvbuf=4096, timeout=10)
    try:
        conn.send(build_request("GET", "/endless"))
        assert ready.wait(20), "the upstream never got blocked"
        up = hold[0]
        up.setblocking(True)
        reset(up)
        barrier_request(port)  # the worker has seen the reset
        data, how = recv_until_close(conn.sock, 10)
        assert how == "reset", f"a cut body ended with {how} after {len(data)} bytes"
        assert len(data) > 100000, f"only {len(data)} bytes of what reached the proxy before the reset"
        wait_gauges(c, what="after the upstream reset", upstream_conns_active=1, upstream_conns_idle=1)
        assert sum(codes(c).values()) == 2, codes(c)
    finally:
        done.set()
        conn.close()


def test_upstream_reset_while_idle_in_the_pool(core, tcp_server) -> None:
    """After a request its upstream connection is pooled (idle 1). The upstream resets it: it
    leaves the pool at once (idle 0, active 0), and the next request goes on a new connection
    and gets its 200 (no 502), counted once."""
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        r = Reader(conn)
        if read_request(r, conn, index) is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        if index == 0:
            go.wait(20)
            reset(conn)
            return
        while read_request(r, conn, index) is not None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")

    srv = tcp_server(handler)
    port = free_port()
    c = core(simple_cfg(port, srv.address), cpus=ONE)
    assert get(port, "/one").status == 200
    wait_gauges(c, what="pooled", upstream_conns_active=1, upstream_conns_idle=1)
    go.set()
    wait_gauges(c, what="the reset pooled connection to be closed")
    r = get(port, "/two")
    assert (r.status, r.body) == (200, b"ok\n")
    wait_codes(c, s2xx=2)
    assert srv.accepted == 2


# ======================= client resets =======================

def test_client_reset_while_its_body_upload_is_paused(core, tcp_server) -> None:
    """A POST with a 1 GB Content-Length to an upstream that reads the head and then nothing:
    the proxy stops reading the client (backpressure). The client resets. At once: the client
    connection is gone, the upstream connection closed, not pooled, and the upstream told
    without having to read the partial body first (a FIN would sit behind the body bytes still
    queued toward it, so only a reset reaches it: the relay and the drain deadline do the same);
    the exchange is counted once (4xx, client closed request); the next request on another
    connection is served."""
    ups: list[socket.socket] = []
    got_head = threading.Event()
    release = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = conn.recv(65536)
            if not d:
                return
            buf += d
        if b"/next" in buf.split(b"\r\n", 1)[0]:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnext\n")
            release.wait(30)
            return
        ups.append(conn)
        got_head.set()
        release.wait(30)

    srv = tcp_server(handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        port = free_port()
        c = core(simple_cfg(port, srv.address), cpus=ONE)
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(build_request("POST", "/upload", [("Content-Length", str(10 ** 9))]))
        assert got_head.wait(10)
        fill_until_blocked(s)
        reset(s)
        wait_gauges(c, 6, what="the reset client and its upstream connection to be closed")
        assert wait_hangup(ups[0], 3000) == "closed", \
            f"the proxy closed its side (gauges zero) but the upstream, not reading, was not told 3 s later " \
            f"(TCP state {tcp_state(ups[0])}, {inq(ups[0])} bytes unread): a FIN behind the unsent body"
        wait_codes(c, s4xx=1)
        barrier_request(port)
        wait_codes(c, s4xx=1, s2xx=1)
    finally:
        release.set()


def test_client_reset_while_waiting_for_100_continue(core, tcp_server) -> None:
    """A POST with Expect: 100-continue; the upstream reads the head and sends no 100 (nor
    anything). The client, still waiting to send its body, resets. At once: both connections
    closed (the upstream sees its close), counted once as 4xx, next request fine."""
    ups: list[socket.socket] = []
    got_head = threading.Event()
    release = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = conn.recv(65536)
            if not d:
                return
            buf += d
        if b"/next" in buf.split(b"\r\n", 1)[0]:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnext\n")
            release.wait(30)
            return
        ups.append(conn)
        got_head.set()
        release.wait(30)

    srv = tcp_server(handler)
    port = free_port()
    c = core(simple_cfg(port, srv.address), cpus=ONE)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(build_request("POST", "/c", [("Expect", "100-continue"), ("Content-Length", "4")]))
        assert got_head.wait(10)
        reset(s)
        wait_gauges(c, 6, what="the reset client and its upstream connection to be closed")
        assert wait_hangup(ups[0], 3000) == "closed", "the upstream was not told"
        wait_codes(c, s4xx=1)
        barrier_request(port)
        wait_codes(c, s4xx=1, s2xx=1)
    finally:
        release.set()


def test_client_reset_during_a_big_response_it_does_not_read(core, http_backend) -> None:
    """An endless 200 to a client that reads nothing (the proxy pauses the upstream). The client
    resets: its connection and the upstream one close at once (the upstream's writes fail), the
    exchange counts once (as the 200 it was getting), the next request is served."""
    up_done = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/next":
            return Reply(200, b"next\n")

        def act(conn: socket.socket, r: Reader) -> None:
            try:
                endless(conn, r)
            finally:
                up_done.set()
        return act

    be = http_backend(app)
    port = free_port()
    c = core(simple_cfg(port, be.address), cpus=ONE)
    conn = Conn(port, rcvbuf=4096, timeout=10)
    conn.send(build_request("GET", "/big"))
    wait_for(lambda: c.listener_stats()["web"]["tx_bytes"] > 0 and
             inq_of_proxy_upstream(be) > 0, 10, "the proxy to pause the upstream")
    reset(conn.sock)
    wait_gauges(c, 6, what="the reset client and its upstream connection to be closed")
    assert up_done.wait(10), "the upstream never learnt the client left"
    wait_codes(c, s2xx=1)
    barrier_request(port)
    wait_codes(c, s2xx=2)


def inq_of_proxy_upstream(be) -> int:  # type: ignore[no-untyped-def]
    with be.lock:
        conns = list(be.conns)
    for bc in conns:
        try:
            up = proxy_upstream_socket(bc.getpeername())
        except OSError:
            continue
        if up is not None:
            with up:
                return inq(up)
    return 0


def test_client_reset_after_half_close_while_response_pending(core, http_backend) -> None:
    """GET then FIN (the client waits for its answer; HAProxy answers a half-closed client);
    the upstream sits on it. The client then resets (it gave up): both connections close at
    once, counted once as 4xx, the next request is served."""
    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/next":
            return Reply(200, b"next\n")
        return stall_forever(release)

    be = http_backend(app)
    port = free_port()
    c = core(simple_cfg(port, be.address), cpus=ONE)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(build_request("GET", "/slow"))
        s.shutdown(socket.SHUT_WR)
        wait_for(lambda: be.count == 1, 5, "the request to reach the upstream")
        reset(s)
        wait_gauges(c, 6, what="the reset client and its upstream connection to be closed")
        wait_codes(c, s4xx=1)
        barrier_request(port)
        wait_codes(c, s4xx=1, s2xx=1)
    finally:
        release.set()


def test_client_reset_while_a_retry_backoff_holds_its_body(core, http_backend) -> None:
    """Endpoints [refused, live], retry once on connect-failure after a 20 s backoff. A POST's
    1 MiB body arrives while the proxy waits out the backoff, which stops reading it at the kept
    queue's bound. The client resets: the connection is gone at once (not at the end of the
    backoff), no attempt reaches the live upstream, counted once as 4xx, nothing in flight."""
    be = http_backend(lambda req: Reply(200, b"ok\n"))
    port, dead = free_port(), free_port()
    c = core(simple_cfg(port, f"127.0.0.1:{dead}", be.address,
                        retry=Retry(attempts=1, on=("connect-failure",), backoff="20s")), cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(build_request("POST", "/upload", [("Content-Length", str(1 << 20))]))
    wait_for(lambda: c.cluster_stats()["b"]["connect_errors"] >= 1, 10, "the first connect to fail")
    fill_until_blocked(s)
    reset(s)
    wait_gauges(c, 6, what="the reset client during the backoff to be closed")
    wait_codes(c, s4xx=1)
    assert be.count == 0
    # the next request (round robin: the live endpoint after the refused one) is served
    barrier_request(port)
    assert be.count == 1


def test_client_reset_with_pipelined_requests_while_a_response_streams(core, http_backend) -> None:
    """The client pipelines three GETs; the first answer is endless and the client reads none
    of it (the proxy pauses the upstream and holds the other two requests). The client resets:
    its connection and the upstream one close at once, the two held requests never go
    upstream, the exchange counts once; next request fine."""
    up_done = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/next":
            return Reply(200, b"next\n")

        def act(conn: socket.socket, r: Reader) -> None:
            try:
                endless(conn, r)
            finally:
                up_done.set()
        return act

    be = http_backend(app)
    port = free_port()
    c = core(simple_cfg(port, be.address), cpus=ONE)
    conn = Conn(port, rcvbuf=4096, timeout=10)
    conn.send(build_request("GET", "/1") + build_request("GET", "/2") + build_request("GET", "/3"))
    wait_for(lambda: inq_of_proxy_upstream(be) > 0, 10, "the proxy to pause the upstream")
    reset(conn.sock)
    wait_gauges(c, 6, what="the reset client and its upstream connection to be closed")
    assert up_done.wait(10)
    wait_codes(c, s2xx=1)
    barrier_request(port)
    assert [q.target for q in be.requests] == ["/1", "/next"]


# ======================= tunnels =======================

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.mark.parametrize("paused,resetter", [("to-upstream", "client"), ("to-upstream", "upstream"),
                                              ("to-client", "client"), ("to-client", "upstream")])
def test_tunnel_reset_with_one_direction_paused(core, http_backend, paused, resetter) -> None:
    """A WebSocket tunnel where one direction is blocked (its receiver does not read, so the
    proxy pauses reading the sender). Then one side resets. The other side, not reading, must
    be told by a reset within a deadline (POLLERR, as over a direct connection), the tunnel is
    gone (gauges zero), counted once (1xx), and the next request is served."""
    up_socks: list[socket.socket] = []
    up_ready = threading.Event()
    done = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/next":
            return Reply(200, b"next\n")

        def act(conn: socket.socket, r: Reader) -> None:
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            up_socks.append(conn)
            if paused == "to-client":
                fill_until_blocked(conn)
            up_ready.set()
            done.wait(30)
        return act

    be = http_backend(app)
    be.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    conn = Conn(port, rcvbuf=4096, timeout=10)
    try:
        conn.send(UPGRADE)
        status, *_ = conn.read_head()
        assert status == 101
        assert up_ready.wait(20)
        if paused == "to-upstream":
            fill_until_blocked(conn.sock)
        up = up_socks[0]
        up.setblocking(True)
        if resetter == "client":
            reset(conn.sock)
            told = wait_hangup(up, 6000)
        else:
            reset(up)
            told = wait_hangup(conn.sock, 6000)
        assert told == "closed", f"{resetter} reset of a tunnel ({paused} paused) not passed on: {gauges(c)}"
        wait_gauges(c, what="the tunnel to be gone")
        wait_codes(c, s1xx=1)
        barrier_request(port)
    finally:
        done.set()
        conn.close()
