"""The L4 TCP relay's edges (rl_relay.c over both engines): closes in every order with
data in flight, resets with bytes queued either way, half-open sessions that live long, zero-byte
sessions, early data before a slow (retried) connect, tiny buffer pools, maxConnections, exact
byte counters, two workers. Every test ends by checking the gauges are back to zero."""
from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import time

import pytest

from ringlane_sidecar.config.model import Limits, Retry

from .backends import echo_handler, recv_all, reset
from .helpers import (fill_until_blocked, free_port, proxy_side, recv_until_close, relay_cfg, relay_gauges,
                      wait_for, wait_relay_idle)
from .test_tunnel_and_continue_edges import inq, outq

pytestmark = pytest.mark.timeout(60)

ONE = [0]


def odd_payload(n: int) -> bytes:
    return os.urandom(n)


# ---- closes in every order, data in flight ----

def test_client_fin_first_while_upstream_streams_megabytes(core, tcp_server) -> None:
    """The client sends an odd-sized request and FIN at once; the upstream reads it to EOF,
    then streams 6 MiB + 13 in odd-sized writes and closes. The client gets every byte in order
    then EOF; rx/tx counters are exact; gauges return to zero."""
    req = odd_payload(77_777)
    resp = odd_payload((6 << 20) + 13)
    got_req: list[bytes] = []

    def handler(conn: socket.socket, index: int) -> None:
        got_req.append(recv_all(conn))
        for i in range(0, len(resp), 100_003):
            conn.sendall(resp[i:i + 100_003])

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # a slow reader: the proxy holds bytes
    s.connect(("127.0.0.1", port))
    with s:
        s.sendall(req)
        s.shutdown(socket.SHUT_WR)
        data, how = recv_until_close(s)
    assert how == "eof", f"{how} after {len(data)} bytes"
    assert len(data) == len(resp) and data == resp
    assert got_req == [req]
    wait_relay_idle(c)
    ls = c.listener_stats()["tcp"]
    assert (ls["rx_bytes"], ls["tx_bytes"]) == (len(req), len(resp)), ls


def test_upstream_fin_first_while_client_streams_megabytes(core, tcp_server) -> None:
    """The upstream sends a 3-byte greeting and FIN at once, then reads 6 MiB + 7 the client
    streams after seeing that FIN, hashing it; the client then closes. The upstream got every
    byte in order and a clean EOF; counters exact; gauges zero."""
    up = odd_payload((6 << 20) + 7)
    result: list[tuple[int, str]] = []
    done = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(b"hi!")
        conn.shutdown(socket.SHUT_WR)
        data = recv_all(conn)
        result.append((len(data), hashlib.sha256(data).hexdigest()))
        done.set()

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        greeting, how = recv_until_close(s)
        assert (greeting, how) == (b"hi!", "eof")
        for i in range(0, len(up), 65_537):
            s.sendall(up[i:i + 65_537])
        s.shutdown(socket.SHUT_WR)
        assert done.wait(10), "the upstream never saw the client's EOF"
        assert s.recv(1) == b""
    assert result == [(len(up), hashlib.sha256(up).hexdigest())]
    wait_relay_idle(c)
    ls = c.listener_stats()["tcp"]
    assert (ls["rx_bytes"], ls["tx_bytes"]) == (len(up), 3), ls


def test_both_fin_at_once_with_megabytes_in_flight_each_way(core, tcp_server) -> None:
    """Both ends write 3 MiB (different odd sizes) and shut down their write side at the same
    moment while reading concurrently: each receives exactly the other's bytes, then EOF."""
    a = odd_payload((3 << 20) + 1)
    b = odd_payload((3 << 20) + 3)
    srv_got: list[bytes] = []

    def handler(conn: socket.socket, index: int) -> None:
        box: list[bytes] = []
        t = threading.Thread(target=lambda: box.append(recv_all(conn)))
        t.start()
        conn.sendall(b)
        conn.shutdown(socket.SHUT_WR)
        t.join(20)
        srv_got.extend(box)

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        box: list[tuple[bytes, str]] = []
        t = threading.Thread(target=lambda: box.append(recv_until_close(s, 20)))
        t.start()
        s.sendall(a)
        s.shutdown(socket.SHUT_WR)
        t.join(25)
    assert box and box[0][1] == "eof" and box[0][0] == b, (len(box[0][0]), box[0][1]) if box else "hung"
    wait_for(lambda: srv_got, 25, "the backend to read to EOF")  # its EOF may come after the client's
    assert srv_got == [a]
    wait_relay_idle(c)
    ls = c.listener_stats()["tcp"]
    assert (ls["rx_bytes"], ls["tx_bytes"]) == (len(a), len(b)), ls


# ---- resets with bytes queued ----

def test_client_reset_with_bytes_queued_toward_it_resets_upstream(core, tcp_server) -> None:
    """The upstream streams to a client that does not read (bytes pile up in the proxy); the
    client resets. The upstream must learn by a reset (its send or recv fails), not hang, and
    the relay is gone."""
    outcome: list[str] = []
    done = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        conn.settimeout(15)
        try:
            while True:
                conn.sendall(b"x" * 65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            outcome.append(type(e).__name__)
        except socket.timeout:
            outcome.append("hung")
        finally:
            done.set()

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    wait_for(lambda: c.listener_stats()["tcp"]["tx_bytes"] > 1 << 20, 5, "bytes to pile up in the proxy")
    reset(s)
    assert done.wait(20)
    assert outcome and outcome[0] != "hung", outcome
    wait_relay_idle(c)


def test_upstream_reset_with_bytes_queued_toward_it_resets_client(core, tcp_server) -> None:
    """The client streams to an upstream that does not read (bytes pile up in the proxy); the
    upstream resets. The client's writes must fail with a reset/broken pipe within a deadline
    (or its read see a reset), never a clean EOF; the relay is gone."""
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        go.wait(10)
        reset(conn)

    srv = tcp_server(handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    outcome: list[str] = []

    def writer() -> None:
        try:
            while True:
                s.sendall(b"y" * 65536)
        except (ConnectionResetError, BrokenPipeError) as e:
            outcome.append(type(e).__name__)
        except socket.timeout:
            outcome.append("hung")
        except OSError as e:
            outcome.append(repr(e))

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    wait_for(lambda: c.listener_stats()["tcp"]["rx_bytes"] > 1 << 20, 5, "bytes to pile up in the proxy")
    go.set()
    t.join(15)
    s.close()
    assert outcome and outcome[0] in ("ConnectionResetError", "BrokenPipeError"), outcome or "writer still blocked"
    wait_relay_idle(c)


def _wait_error(conn: socket.socket, out: list[str], done: threading.Event, timeout_ms: int = 15000) -> None:
    """Waits (not reading) for an error/hang-up on conn: 'reset' or 'nothing'."""
    p = select.poll()
    p.register(conn, select.POLLERR | select.POLLHUP)
    try:
        out.append("reset" if p.poll(timeout_ms) else f"nothing in {timeout_ms} ms")
    finally:
        done.set()


@pytest.mark.parametrize("resetter", ["client", "upstream"])
def test_reset_by_a_side_whose_reads_are_paused_reaches_a_non_reading_peer(core, engine, tcp_server, resetter) -> None:
    """One side writes until the proxy pauses reading it (its peer does not read: backpressure),
    then resets. rl_relay.c promises a reset is passed on once what came before it was delivered,
    or once the other side took nothing for RESET_STALL_MS (1 s). So within a few seconds the
    relay must be gone and the non-reading peer reset (a direct connection's peer gets POLLERR
    at once) -- however long it does not read."""
    peer_err: list[str] = []
    done = threading.Event()
    ready = threading.Event()
    upstream_conn: list[socket.socket] = []

    def handler(conn: socket.socket, index: int) -> None:
        if resetter == "client":
            _wait_error(conn, peer_err, done)
        else:
            upstream_conn.append(conn)
            fill_until_blocked(conn)
            ready.set()
            done.wait(30)  # the test resets conn

    srv = tcp_server(handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    waiter = None
    if resetter == "client":
        fill_until_blocked(s)
        reset(s)
    else:
        assert ready.wait(20), "the upstream never got blocked"
        client_done = threading.Event()
        waiter = threading.Thread(target=_wait_error, args=(s, peer_err, client_done), daemon=True)
        waiter.start()
        conn = upstream_conn[0]
        conn.setblocking(True)
        reset(conn)
    try:
        wait_for(lambda: relay_gauges(c)["conns_active"] == 0, 6, "the relay to pass the reset on")
    except AssertionError:
        raise AssertionError(f"{resetter} reset not noticed 6 s later: {relay_gauges(c)}, "
                             f"listener {c.listener_stats()['tcp']}") from None
    if waiter is not None:
        waiter.join(5)
        done.set()
        s.close()
    else:
        assert done.wait(5)
    assert peer_err == ["reset"], peer_err
    wait_relay_idle(c)


@pytest.mark.parametrize("resetter", ["client", "upstream"])
def test_reset_after_half_close_reaches_a_waiting_peer(core, engine, tcp_server, resetter) -> None:
    """One side sends a message and FIN (half-open: it waits for the answer); the other reads
    it to EOF and takes its time answering; meanwhile the half-closed side resets (it gave up).
    A direct connection's peer sees the reset at once (POLLERR); through the relay the reset
    must be passed on too and the relay freed, not kept for tunnelIdleTimeout (1 h default)."""
    got_eof = threading.Event()
    peer_err: list[str] = []
    done = threading.Event()
    upstream_conn: list[socket.socket] = []

    def handler(conn: socket.socket, index: int) -> None:
        if resetter == "client":
            recv_all(conn)
            got_eof.set()
            _wait_error(conn, peer_err, done)
        else:
            upstream_conn.append(conn)
            conn.sendall(b"question\n")
            conn.shutdown(socket.SHUT_WR)
            done.wait(30)

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if resetter == "client":
        s.sendall(b"question\n")
        s.shutdown(socket.SHUT_WR)
        assert got_eof.wait(5)
        reset(s)
    else:
        assert recv_until_close(s, 5) == (b"question\n", "eof")
        client_done = threading.Event()
        waiter = threading.Thread(target=_wait_error, args=(s, peer_err, client_done), daemon=True)
        waiter.start()
        reset(upstream_conn[0])
    try:
        wait_for(lambda: relay_gauges(c)["conns_active"] == 0, 5, "the relay to pass the reset on")
    except AssertionError:
        raise AssertionError(f"{resetter} reset after its FIN not noticed 5 s later: {relay_gauges(c)}") from None
    if resetter == "client":
        assert done.wait(5)
    else:
        waiter.join(5)
        done.set()
        s.close()
    assert peer_err == ["reset"], peer_err
    wait_relay_idle(c)


# ---- long-lived half-open sessions and tunnelIdleTimeout ----

@pytest.mark.parametrize("closer", ["client", "upstream"])
def test_half_open_session_moving_one_way_outlives_idle_timeout(core, tcp_server, closer) -> None:
    """One side half-closes at once; the other direction carries a small write every tenth of
    tunnelIdleTimeout for 2.5 timeouts (traffic in the open direction only). The session is not
    cut; every byte arrives in order; then a clean close both ways. (A 1 s timeout: a stalled
    test thread or a slow ASan worker may leave 900 ms without a byte.)"""
    limits = Limits(request_header_timeout="2s", tunnel_idle_timeout="1s")
    n_steps = 25
    step = 0.1
    expected = b"".join(b"%03d," % i for i in range(n_steps))
    srv_got: list[bytes] = []

    def handler(conn: socket.socket, index: int) -> None:
        if closer == "upstream":
            conn.shutdown(socket.SHUT_WR)
            srv_got.append(recv_all(conn))
        else:
            assert recv_all(conn) == b""
            for i in range(n_steps):
                conn.sendall(b"%03d," % i)
                time.sleep(step)  # pacing of the traffic under test, not synchronisation

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address, limits=limits), cpus=ONE)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        if closer == "client":
            s.shutdown(socket.SHUT_WR)
            data, how = recv_until_close(s, 5)
            assert (data, how) == (expected, "eof"), (data, how)
        else:
            assert recv_until_close(s, 5) == (b"", "eof")
            for i in range(n_steps):
                try:
                    s.sendall(b"%03d," % i)
                except OSError as e:
                    raise AssertionError(f"cut after {i} writes in the open direction: {e!r}") from None
                time.sleep(step)
            s.shutdown(socket.SHUT_WR)
            assert recv_until_close(s, 5) == (b"", "eof")
    if closer == "upstream":
        wait_for(lambda: srv_got, 5, "the upstream to finish")
        assert srv_got == [expected]
    wait_relay_idle(c)


# ---- zero-byte sessions ----

def test_zero_byte_sessions_every_way(core, tcp_server) -> None:
    """60 sessions each: client connects and closes at once (FIN); client connects and resets
    at once; upstream accepts and closes at once while the client only reads. No session hangs,
    nothing is relayed, counters and gauges balance."""
    mode = {"v": "read"}

    def handler(conn: socket.socket, index: int) -> None:
        if mode["v"] == "upclose":
            return  # closed at once by TcpServer
        recv_all(conn)

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    n = 60
    for _ in range(n):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    for _ in range(n):
        reset(socket.create_connection(("127.0.0.1", port), timeout=5))
    wait_for(lambda: srv.accepted == 2 * n, 10, lambda: f"upstream accepts: {srv.accepted}")
    wait_relay_idle(c, 10)
    mode["v"] = "upclose"
    for i in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            data, how = recv_until_close(s, 5)
            assert data == b"", f"session {i}: {data!r}"
            if how == "reset":  # acceptable, but FIN was expected (nothing owed either way)
                pass
    wait_relay_idle(c, 10)
    ls = c.listener_stats()["tcp"]
    assert ls == {"conns_opened": 3 * n, "conns_closed": 3 * n, "rx_bytes": 0, "tx_bytes": 0}, ls
    cs = c.cluster_stats()["up"]
    assert cs["connections_opened"] == 3 * n and cs["connect_errors"] == 0, cs


def test_upstream_closes_at_once_while_client_streams(core, tcp_server) -> None:
    """The upstream accepts and closes at once with no data while the client streams (up to 64 MiB,
    far more than socket buffers and the proxy's queue hold): the
    client sees EOF (the upstream's FIN) and its writes soon fail (the upstream's reset passed
    on), not a session that swallows bytes forever; the relay is gone."""
    srv = tcp_server(lambda conn, index: None)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    outcome: list[str] = []

    def writer() -> None:
        try:
            for _ in range(1024):
                s.sendall(b"w" * 65536)
            outcome.append("all 64 MiB taken")
        except (ConnectionResetError, BrokenPipeError) as e:
            outcome.append(type(e).__name__)
        except OSError as e:
            outcome.append(repr(e))

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "client writes block forever"
    assert outcome and outcome[0] in ("ConnectionResetError", "BrokenPipeError"), outcome
    s.close()
    wait_relay_idle(c)


# ---- early data before a slow connect, retried ----

def test_early_data_and_fin_before_a_retried_connect_arrive_once_in_order(core, tcp_server, blackhole) -> None:
    """Endpoints: a blackhole (SYNs dropped) and a live one; connectTimeout 200ms, one retry on
    connect-failure. Each client sends five pieces and FIN before any connect completes; the
    live upstream answers with what it got. Every session's bytes arrive exactly once, in order,
    whichever endpoint it tried first; connect errors counted; gauges zero."""
    def handler(conn: socket.socket, index: int) -> None:
        data = recv_all(conn)
        conn.sendall(b"%d %s" % (len(data), hashlib.sha256(data).hexdigest().encode()))

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, blackhole, srv.address, connect_timeout="200ms",
                       retry=Retry(attempts=1, on=("connect-failure",), backoff="10ms")), cpus=ONE)
    sessions = 6
    for k in range(sessions):
        pieces = [odd_payload(1000 * (i + 1) + k) for i in range(5)]
        whole = b"".join(pieces)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for p in pieces:
                s.sendall(p)
            s.shutdown(socket.SHUT_WR)
            data, how = recv_until_close(s, 5)
        assert (data, how) == (b"%d %s" % (len(whole), hashlib.sha256(whole).hexdigest().encode()), "eof"), \
            f"session {k}: {data!r} {how}"
    assert srv.accepted == sessions
    wait_relay_idle(c)
    cs = c.cluster_stats()["up"]
    assert cs["connect_errors"] >= sessions // 2 - 1 and cs["connect_errors"] <= sessions, cs
    assert cs["requests"] == sessions + cs["connect_errors"], cs


# ---- tiny buffer pools ----

@pytest.mark.timeout(90)
def test_tiny_pools_relays_blocked_each_way_then_unblocked(core, tcp_server) -> None:
    """recv_bufs=8, spill_bufs=1, 4 KiB buffers: 3 relays whose upstream does not read (client
    uploads 1 MiB + k) and 3 whose client does not read (upstream sends 1 MiB + k). All are
    blocked at once, then unblocked: no deadlock, every byte arrives in order, and a fresh
    echo session works afterwards; gauges zero."""
    size = lambda k: (1 << 20) + 17 * k + 1  # noqa: E731
    uploads = {k: odd_payload(size(k)) for k in range(3)}
    downloads = {k: odd_payload(size(k + 3)) for k in range(3)}
    unblock = threading.Event()
    srv_got: dict[int, str] = {}

    def up_handler(conn: socket.socket, index: int) -> None:
        first = conn.recv(1)
        k = first[0]
        if k < 3:  # upload: do not read until unblocked
            unblock.wait(30)
            data = recv_all(conn)
            srv_got[k] = hashlib.sha256(data).hexdigest() if data == uploads[k] else f"bad {len(data)}"
            conn.sendall(b"ok")
        else:  # download to a client that does not read yet
            conn.sendall(downloads[k - 3])
            conn.shutdown(socket.SHUT_WR)
            recv_all(conn)

    srv = tcp_server(up_handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE, buf_size=4096, recv_bufs=8, spill_bufs=1)
    results: dict[str, object] = {}

    def uploader(k: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=40) as s:
                s.sendall(bytes([k]))
                s.sendall(uploads[k])
                s.shutdown(socket.SHUT_WR)
                results[f"u{k}"] = recv_until_close(s, 40)
        except OSError as e:
            results[f"u{k}"] = repr(e)

    def downloader(k: int) -> None:
        try:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(40)
            s.connect(("127.0.0.1", port))
            with s:
                s.sendall(bytes([k + 3]))
                unblock.wait(30)
                s.shutdown(socket.SHUT_WR)
                data, how = recv_until_close(s, 40)
                results[f"d{k}"] = (how, data == downloads[k], len(data))
        except OSError as e:
            results[f"d{k}"] = repr(e)

    threads = [threading.Thread(target=f, args=(k,), daemon=True) for k in range(3) for f in (uploader, downloader)]
    for t in threads:
        t.start()
    # Blocked: bytes moved both ways into the proxy, then stuck.
    wait_for(lambda: c.listener_stats()["tcp"]["rx_bytes"] > 3 * 16384 and
             c.listener_stats()["tcp"]["tx_bytes"] > 3 * 16384, 10,
             lambda: f"relays to fill: {c.listener_stats()['tcp']}")
    unblock.set()
    for t in threads:
        t.join(50)
    assert not [t for t in threads if t.is_alive()], f"relays stalled after unblocking: {results}"
    for k in range(3):
        assert results[f"u{k}"] == (b"ok", "eof"), (k, results[f"u{k}"], srv_got)
        assert srv_got[k] == hashlib.sha256(uploads[k]).hexdigest()
        assert results[f"d{k}"] == ("eof", True, len(downloads[k])), (k, results[f"d{k}"])
    wait_relay_idle(c, 10)


# ---- maxConnections ----

def test_max_connections_refused_sessions_counted_and_gauges_balance(core, tcp_server) -> None:
    """maxConnections 2 on one worker: two echo sessions open, three more are refused (closed,
    each a connect error, nothing relayed), the cluster's active gauge stays 2; once the two
    close, a new session is relayed; at the end every gauge is zero and opened == closed."""
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address, max_connections=2), cpus=ONE)
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    for i, s in enumerate(held):
        s.sendall(b"held%d" % i)
        assert s.recv(5) == b"held%d" % i
    for i in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            try:
                s.sendall(b"extra")
            except OSError:
                pass
            data, how = recv_until_close(s, 5)
            assert data == b"", f"refused session {i} was relayed: {data!r}"
    wait_for(lambda: c.cluster_stats()["up"]["connect_errors"] == 3, 5,
             lambda: f"3 refusals counted: {c.cluster_stats()['up']}")
    assert c.cluster_stats()["up"]["active"] == 2
    # the refused ones are released after the client sees their close
    wait_for(lambda: relay_gauges(c)["conns_active"] == 2, 5, lambda: f"two sessions left: {relay_gauges(c)}")
    for s in held:
        s.shutdown(socket.SHUT_WR)
        assert recv_until_close(s, 5) == (b"", "eof")
        s.close()
    wait_for(lambda: c.cluster_stats()["up"]["active"] == 0, 5, "the two sessions to close")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"again")
        s.shutdown(socket.SHUT_WR)
        assert recv_until_close(s, 5) == (b"again", "eof")
    wait_relay_idle(c)
    ls = c.listener_stats()["tcp"]
    assert ls["conns_opened"] == 6 and ls["rx_bytes"] == ls["tx_bytes"] == 5 + 5 + 5, ls
    cs = c.cluster_stats()["up"]
    assert cs["requests"] == 3 and cs["connections_opened"] == 3 and srv.accepted == 3, cs


# ---- exact counters, two workers ----

def test_two_workers_many_short_sessions_counters_exact(core, tcp_server) -> None:
    """Two workers, 400 short echo sessions from 8 threads, each an odd size (1..4099 bytes)
    sent then FIN: every echo exact, opened == closed == 400, rx == tx == total bytes, cluster
    requests == 400, every gauge zero."""
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=[0, 1])
    errors: list[str] = []
    totals = [0] * 8

    def client(t: int) -> None:
        for i in range(50):
            n = 1 + (t * 50 + i) * 37 % 4099
            data = os.urandom(n)
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    got, how = recv_until_close(s, 5)
                if (got, how) != (data, "eof"):
                    errors.append(f"{t}/{i}: {len(got)} of {n}, {how}")
            except OSError as e:
                errors.append(f"{t}/{i}: {e!r}")
            totals[t] += n

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(40)
    assert not errors, errors[:5]
    wait_relay_idle(c, 10)
    ls = c.listener_stats()["tcp"]
    assert ls == {"conns_opened": 400, "conns_closed": 400, "rx_bytes": sum(totals), "tx_bytes": sum(totals)}, ls
    cs = c.cluster_stats()["up"]
    assert cs == {"requests": 400, "connect_errors": 0, "connections_opened": 400, "active": 0}, cs


def test_tx_bytes_count_what_reached_the_client_socket_not_what_came_from_upstream(core, tcp_server) -> None:
    """`ringlane_tcp_tx_bytes_total` is "Bytes sent to clients": what the client's socket took,
    as the HTTP listeners count it (on each send), not what the relay received from the upstream
    and queued for a client that may never take it. A client that does not read: the upstream's
    bytes fill the client's window, the proxy's send buffer, then the relay's own queue (where
    reading pauses). Sent = what the client's kernel holds + what the proxy's kernel still holds
    for it. Before, the counter was bumped at the upstream receive, so it also counted the
    relay's queue, bytes a reset would then drop."""
    release = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        try:
            conn.sendall(os.urandom(8 << 20))  # blocks once every buffer on the way is full
        except OSError:
            pass
        release.wait(30)

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.connect(("127.0.0.1", port))
    try:
        ps = wait_for(lambda: proxy_side(s), 3, "the proxy to accept")
        try:
            def sent() -> int:
                return inq(s) + outq(ps)

            # Settled: the relay queues bytes it cannot send (a whole buffer or more), so the
            # two differ for good when the counter runs ahead of the sends.
            wait_for(lambda: sent() > 0 and c.listener_stats()["tcp"]["tx_bytes"] == sent(), 10,
                     "tx_bytes to equal the bytes the client's socket took")
        finally:
            ps.close()
    finally:
        release.set()
        s.close()
    wait_relay_idle(c)
