"""Resets on sockets the proxy is not reading: the relay's client before its upstream is
connected, sockets waiting for receive buffers, a FIN followed at once by a reset; the io_uring
error watch does not spin; RL_S_DATA_FIRST on HTTP upstreams; client_close resets an upstream
only when it holds part of a request. Every test runs on both engines; the expectation is the
same on both (epoll is the reference: it reports EPOLLERR whatever the socket's read state)."""
from __future__ import annotations

import socket
import threading

import pytest

from ringlane_sidecar.config.model import Limits, Retry

from .backends import Reader, read_request, reset
from .helpers import (Conn, build_request, cluster, config, fill_all_until_blocked, free_port, http_listener,
                      relay_cfg, rule, tcp_listener, total, wait_error, wait_for)

pytestmark = pytest.mark.timeout(120)

ONE = [0]


def active(c) -> int:  # type: ignore[no-untyped-def]
    return total(c, "conns_active")


# ---- a socket whose reads never started: the relay's client while its upstream connects ----

def test_relay_client_reset_while_upstream_connect_pending_is_seen(core, blackhole) -> None:
    """The relay reads its client only once the upstream is connected. A client that resets
    while that connect hangs (a blackholed endpoint, connectTimeout 60 s) is gone: the relay
    must be freed within seconds (epoll sees EPOLLERR on the unread socket), not hold a session,
    a connection slot and an upstream SYN for the whole connect timeout."""
    port = free_port()
    c = core(relay_cfg(port, blackhole, connect_timeout="60s"), cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    wait_for(lambda: active(c) == 1, 5, "the relay session to exist")
    reset(s)
    try:
        wait_for(lambda: active(c) == 0, 5, "the relay of a reset client to be freed")
    except AssertionError:
        raise AssertionError(f"relay still open 5 s after its client reset (connect pending, 60 s timeout): "
                             f"conns_active={active(c)}") from None


def test_relay_client_reset_during_connect_retry_backoff_is_seen(core) -> None:
    """The upstream refuses (a dead port); the rule retries connect failures after a 60 s
    backoff. The client resets during the backoff: nothing reads it then, yet the relay must be
    freed within seconds, as on epoll (EPOLLERR), not after the backoff and another attempt."""
    dead = free_port()
    port = free_port()
    c = core(relay_cfg(port, f"127.0.0.1:{dead}", retry=Retry(attempts=3, on=("connect-failure",), backoff="60s")),
             cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    wait_for(lambda: c.cluster_stats()["up"]["connect_errors"] >= 1, 5, "the first connect to fail")
    reset(s)
    try:
        wait_for(lambda: active(c) == 0, 5, "the relay of a reset client to be freed")
    except AssertionError:
        raise AssertionError(f"relay still open 5 s after its client reset during a retry backoff: "
                             f"conns_active={active(c)}") from None


# ---- few receive buffers: a socket paused while its multishot ran out of buffers ----

@pytest.mark.parametrize("resetter", ["client", "upstream"])
def test_resets_of_paused_sides_passed_on_with_few_buffers(core, tcp_server, resetter) -> None:
    """Like test_uring_pressure's tiny-ring test, with 16 receive buffers of 4 KiB (one spill):
    16 relay sessions on one worker whose one side writes until the proxy pauses it (its peer
    does not read), so receives end for want of buffers around the time reading is paused.
    Then every writer resets. Each reset must be passed on and each relay freed within seconds
    (RESET_STALL_MS is 1 s, so freeing them one after the other takes some 16 s; the deadline
    is 60 s): a socket waiting for a receive buffer is not being read either, and a reset on
    it must not wait for buffers that sessions stuck on non-reading peers never give back."""
    n = 16
    lock = threading.Lock()
    ups: list[socket.socket] = []
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        conn.setblocking(False)
        with lock:
            ups.append(conn)
        go.wait(60)

    srv = tcp_server(handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE, recv_bufs=16, buf_size=4096, spill_bufs=1)
    clients = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        clients.append(s)
    wait_for(lambda: len(ups) == n, 10, "every session connected")
    writers = clients if resetter == "client" else ups
    fill_all_until_blocked(writers)
    for s in writers:
        s.setblocking(True)
        reset(s)
    try:
        wait_for(lambda: active(c) == 0, 60, "every relay to pass the reset on")
    except AssertionError:
        raise AssertionError(f"{active(c)} of {n} relays still open 60 s after their paused {resetter} reset "
                             f"(16 receive buffers)") from None
    finally:
        go.set()
        for s in clients:
            s.close()


def test_http_upload_client_reset_while_paused_with_few_buffers(core, tcp_server) -> None:
    """8 clients upload endless bodies to a backend that reads the heads and then nothing; the
    proxy pauses each client (backpressure) with 16 receive buffers of 4 KiB. Every client
    then resets: each connection (and its upstream) must close within seconds (a direct peer
    sees POLLERR at once), well before idleTimeout (60 s): deadline 30 s."""
    n = 8
    lock = threading.Lock()
    heads: list[socket.socket] = []
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        r = Reader(conn)
        while r.line() not in (b"", b"\r\n", None):
            pass
        with lock:
            heads.append(conn)
        go.wait(60)

    srv = tcp_server(handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE,
             recv_bufs=16, buf_size=4096, spill_bufs=1)
    clients = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(build_request("POST", "/up", [("Content-Length", str(1 << 30))]))
        s.setblocking(False)
        clients.append(s)
    wait_for(lambda: len(heads) == n, 10, "every request head to reach the backend")
    fill_all_until_blocked(clients, b"y" * 65536)
    for s in clients:
        s.setblocking(True)
        reset(s)
    try:
        wait_for(lambda: active(c) == 0 and total(c, "upstream_conns_active") == 0, 30,
                 "every reset client and its upstream to be closed")
    except AssertionError:
        raise AssertionError(f"conns_active={active(c)}, upstream_conns_active={total(c, 'upstream_conns_active')} "
                             f"30 s after {n} paused uploaders reset (16 receive buffers)") from None
    finally:
        go.set()


# ---- RL_S_DATA_FIRST ----

def test_response_then_reset_to_a_client_that_never_reads_ends_at_idle_timeout(core, tcp_server) -> None:
    """The upstream sends a 16 MiB response and resets; the client never reads, so the proxy
    pauses the upstream with data unread, and the reset waits behind it (DATA_FIRST). The
    connection must still end: idleTimeout (2 s) cuts a client that takes nothing, and both
    the client connection and the upstream one are gone."""
    size = 16 << 20
    sent = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        r = Reader(conn)
        if read_request(r, conn, index) is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        try:
            conn.settimeout(3)
            body = b"x" * 65536
            for _ in range(size // len(body)):
                conn.sendall(body)
        except OSError:
            pass
        sent.set()
        reset(conn)

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)],
                    limits=Limits(idle_timeout="2s")), cpus=ONE)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(build_request("GET", "/big"))
    wait_for(sent.is_set, 15, "the backend to stop writing and reset")
    try:
        wait_for(lambda: active(c) == 0 and total(c, "upstream_conns_active") == 0, 10,
                 "the connection of a client that never reads to end")
    except AssertionError:
        raise AssertionError(f"conns_active={active(c)}, upstream_conns_active={total(c, 'upstream_conns_active')} "
                             f"10 s after the upstream reset (idleTimeout 2 s)") from None
    finally:
        s.close()


@pytest.mark.parametrize("resetter", ["client", "upstream"])
def test_single_paused_relay_side_reset_seen_with_few_buffers(core, tcp_server, resetter) -> None:
    """One relay session on a worker with 16 receive buffers of 4 KiB: one side floods, the other
    does not read, so the proxy pauses the flooding side while its multishot receive may have
    run the buffer ring dry (16 buffers, PAUSE_AT is 8 slices: the receive ends with ENOBUFS
    after the pause was asked for). The flooding side then resets. Nothing else holds buffers,
    so no socket is starved for long: the reset must be passed on and the relay freed within
    seconds (RESET_STALL_MS 1 s), as with the default 1024 buffers."""
    ups: list[socket.socket] = []
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        conn.setblocking(False)
        ups.append(conn)
        go.wait(60)

    srv = tcp_server(handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE, recv_bufs=16, buf_size=4096, spill_bufs=1)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    wait_for(lambda: len(ups) == 1, 10, "the session to connect")
    writer = s if resetter == "client" else ups[0]
    writer.setblocking(False)
    fill_all_until_blocked([writer])
    writer.setblocking(True)
    reset(writer)
    try:
        wait_for(lambda: active(c) == 0, 10, "the relay to pass the reset on")
    except AssertionError:
        raise AssertionError(f"relay still open 10 s after its paused {resetter} reset (16 receive buffers)") from None
    finally:
        go.set()
        s.close()


# ---- the watch must not spin: sockets past their FIN, or paused, while nothing happens ----

def _worker_busy() -> bool:
    from .test_engine_edges import _worker_busy as busy
    return bool(busy())


def test_idle_half_closed_and_paused_sockets_do_not_spin_the_worker(core, tcp_server, http_backend) -> None:
    """States where io_uring keeps an error watch on a socket it does not read: relay sessions
    whose client sent FIN (past its FIN; io_uring adds POLLRDHUP to the mask, which stays up),
    an HTTP client that half-closed after its request while the backend stalls, and a relay
    side paused for a non-reading peer. With nothing moving, the worker must be idle: no CPU
    burnt by a watch firing or being re-armed over and over."""
    from .backends import stall_forever
    release = threading.Event()
    held: list[socket.socket] = []

    def hold(conn: socket.socket, index: int) -> None:
        conn.setblocking(False)
        held.append(conn)
        release.wait(60)

    srv = tcp_server(hold)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    be = http_backend(lambda req: stall_forever(release))
    tport, hport = free_port(), free_port()
    core(config([tcp_listener(tport, "up"), http_listener(hport, rule("r", "b"))],
                    [cluster("up", srv.address), cluster("b", be.address)]), cpus=ONE)
    socks = []
    try:
        for _ in range(5):  # relay: client FIN, upstream silent
            s = socket.create_connection(("127.0.0.1", tport), timeout=5)
            s.sendall(b"hello")
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
        for _ in range(5):  # HTTP: request then FIN, backend stalls
            s = socket.create_connection(("127.0.0.1", hport), timeout=5)
            s.sendall(build_request("GET", "/stall"))
            s.shutdown(socket.SHUT_WR)
            socks.append(s)
        p = socket.socket()  # relay: client floods, upstream does not read -> client paused
        p.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        p.connect(("127.0.0.1", tport))
        p.setblocking(False)
        socks.append(p)
        wait_for(lambda: len(held) == 6 and be.count == 5, 10, "every session to reach its backend")
        fill_all_until_blocked([p])
        busy = [_worker_busy() for _ in range(3)]
        assert busy.count(True) < 2, f"the worker burnt CPU while nothing moved: {busy}"
    finally:
        release.set()
        for s in socks:
            s.close()


# ---- client_close: a complete, fully sent request ends upstream with a FIN ----

@pytest.mark.parametrize("how", ["reset", "half-close-then-reset"])
@pytest.mark.parametrize("pooled", [False, True])
def test_client_gone_after_complete_sent_request_upstream_sees_fin(core, tcp_server, how, pooled) -> None:
    """The client's request (a POST with a 64 KiB body) is complete and the backend has read
    all of it; the backend takes its time to answer. The client then leaves (a reset, or a FIN
    first and a reset later). Nothing of the request is missing, so the upstream connection
    must end with a FIN (a clean close the backend can tell from a cut request: nginx's 499),
    not a reset -- on a new and on a pooled connection alike."""
    body = b"b" * 65536
    got = threading.Event()
    ends: list[str] = []

    def handler(conn: socket.socket, index: int) -> None:
        r = Reader(conn)
        while True:
            req = read_request(r, conn, index)
            if req is None:
                return
            if req.target == "/warm":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            assert req.body == body
            got.set()
            conn.settimeout(15)
            try:
                ends.append("fin" if conn.recv(1) == b"" else "data")
            except ConnectionResetError:
                ends.append("reset")
            except OSError as e:
                ends.append(repr(e))
            return

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if pooled:
        with Conn(port) as warm:
            warm.send(build_request("GET", "/warm"))
            assert warm.read_response().status == 200
        wait_for(lambda: total(c, "upstream_conns_idle") == 1, 5, "the warm connection to be pooled")
    s.sendall(build_request("POST", "/upload", body=body))
    assert got.wait(10), "the backend did not get the whole request"
    if how == "half-close-then-reset":
        s.shutdown(socket.SHUT_WR)  # a FIN, then the reset right after it
    reset(s)
    wait_for(lambda: len(ends) == 1, 10, "the backend to see the end of its connection")
    assert ends == ["fin"], ends


def test_client_fin_then_reset_while_waiting_is_seen(core, http_backend) -> None:
    """20 clients each send a complete GET to a backend that stalls, then half-close and at once
    reset (a client giving up: shutdown, then close with linger 0). A direct peer sees the reset
    (POLLERR); the proxy must close every such connection (and its upstream one) within
    seconds, whether it read the FIN before the reset arrived or found both at once -- not keep
    it until the backend answers (never, here: no timeouts are configured)."""
    from .backends import stall_forever
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    n = 20
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(build_request("GET", "/stall"))
            socks.append(s)
        wait_for(lambda: be.count == n, 10, "every request to reach the backend")
        for s in socks:
            s.shutdown(socket.SHUT_WR)
            reset(s)
        try:
            wait_for(lambda: active(c) == 0 and total(c, "upstream_conns_active") == 0, 10,
                     "every client that reset to be closed")
        except AssertionError:
            raise AssertionError(f"{active(c)} of {n} client connections (upstream: "
                                 f"{total(c, 'upstream_conns_active')}) still open 10 s after FIN + reset") from None
    finally:
        release.set()


def test_relay_client_fin_then_reset_is_passed_on(core, tcp_server) -> None:
    """20 relay sessions whose upstream reads and stays silent; each client sends a few bytes,
    then half-closes and at once resets. The reset must reach every upstream (POLLERR there,
    as over a direct connection) and every relay be freed within seconds, whether the proxy
    read the FIN before the reset arrived or found both at once -- not live on half-open until
    tunnelIdleTimeout (1 h)."""
    n = 20
    lock = threading.Lock()
    results: list[str] = []
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        go.wait(30)
        r = wait_error(conn, 15000)
        with lock:
            results.append(r)

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"hello")
        socks.append(s)
    wait_for(lambda: srv.accepted == n and c.cluster_stats()["up"]["active"] == n, 10, "every session connected")
    for s in socks:
        s.shutdown(socket.SHUT_WR)
        reset(s)
    go.set()
    try:
        wait_for(lambda: active(c) == 0, 10, "every relay to pass the reset on")
    except AssertionError:
        raise AssertionError(f"{active(c)} of {n} relays still open 10 s after their client's FIN + reset") from None
    wait_for(lambda: len(results) == n, 20, "every upstream to see the end")
    assert results.count("reset") == n, {r: results.count(r) for r in set(results)}
