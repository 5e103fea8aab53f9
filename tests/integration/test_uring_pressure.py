"""The io_uring engine under resource pressure (a tiny submission ring, few receive buffers),
and the engine-neutral behaviour that must hold under it: every request answered byte-exactly,
no hang, no crash, no leaked connection or buffer, resets reported once and passed on. Every
test runs on both engines (the `engine` fixture); ring_entries only matters to io_uring."""
from __future__ import annotations

import hashlib
import select
import socket
import threading

import pytest

from ringlane_sidecar.config.model import Limits

from .backends import digest_app, echo_handler, recv_all, reset, stall_forever
from .helpers import (Conn, build_request, cluster, config, fill_all_until_blocked, free_port, http_listener,
                      in_flight, relay_cfg, relay_gauges, rule, total, wait_error, wait_for, wait_relay_idle)

pytestmark = pytest.mark.timeout(120)

ONE = [0]


def wait_http_settled(c, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    try:
        wait_for(lambda: in_flight(c) == (0, 0, 0), timeout, "settled")
    except AssertionError:
        raise AssertionError(f"(client conns, busy upstream conns, requests in flight) = {in_flight(c)} "
                             f"{timeout}s later, not (0, 0, 0)") from None


def run_threads(fn, n: int, timeout: float = 60.0) -> list:  # type: ignore[no-untyped-def,type-arg]
    """Runs fn(i) for i in range(n) in n threads; returns their results (or the exception)."""
    out: list = [None] * n  # type: ignore[type-arg]

    def one(i: int) -> None:
        try:
            out[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 -- reported by the caller
            out[i] = e

    ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout)
    return out


# ---- the error watch: resets on sockets nobody reads, many at once on a tiny ring ----

@pytest.mark.parametrize("n", [40, 160])
def test_resets_after_half_close_all_passed_on_with_tiny_ring(core, tcp_server, n) -> None:
    """n relay sessions on one worker whose ring has 8 SQ / 32 CQ entries: every client sends a
    question and FIN at once (all together, so many sockets reach their FIN, and arm their error
    watch, in the same loop turns); each upstream reads to EOF and waits for the answer it never
    gives. Then every client resets. Each reset must be passed on to its upstream (POLLERR there)
    and every relay freed, as with one session (test_reset_after_half_close_reaches_a_waiting_peer):
    a watch that the CQ overflow ended must not leave a session to tunnelIdleTimeout (1 h)."""
    got_eof = [0]
    lock = threading.Lock()
    results: list[str] = []
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        recv_all(conn)
        with lock:
            got_eof[0] += 1
        go.wait(30)
        r = wait_error(conn, 15000)
        with lock:
            results.append(r)

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE, ring_entries=8)
    clients = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        clients.append(s)
    for s in clients:
        s.sendall(b"question?\n")
        s.shutdown(socket.SHUT_WR)
    wait_for(lambda: got_eof[0] == n, 20, lambda: f"every upstream to read its question to EOF ({got_eof[0]}/{n})")
    for s in clients:
        reset(s)
    go.set()
    try:
        wait_for(lambda: relay_gauges(c)["conns_active"] == 0, 10, "every relay to pass its client's reset on")
    except AssertionError:
        raise AssertionError(f"{relay_gauges(c)['conns_active']} of {n} relays still open 10 s after their "
                             f"client reset (past its FIN): {relay_gauges(c)}") from None
    wait_for(lambda: len(results) == n, 20, "every upstream to see the end")
    assert results.count("reset") == n, {r: results.count(r) for r in set(results)}
    wait_relay_idle(c, 10.0)


@pytest.mark.parametrize("resetter", ["client", "upstream"])
def test_resets_of_paused_sides_all_passed_on_with_tiny_ring(core, tcp_server, resetter) -> None:
    """60 relay sessions on one worker (ring: 8 SQ / 32 CQ entries) whose one side writes until
    the proxy pauses reading it (the other side does not read), then every such side resets at
    once. Each reset must reach the non-reading peer (POLLERR) and each relay be freed within a
    few seconds (RESET_STALL_MS is 1 s), as with one session on the default ring."""
    n = 60
    lock = threading.Lock()
    ups: list[socket.socket] = []
    results: list[str] = []
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if resetter == "client":
            go.wait(60)
            r = wait_error(conn, 15000)
            with lock:
                results.append(r)
        else:
            conn.setblocking(False)
            with lock:
                ups.append(conn)
            go.wait(60)

    srv = tcp_server(handler)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE, ring_entries=8, buf_size=4096)
    clients = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        clients.append(s)
    wait_for(lambda: len(ups) == n if resetter == "upstream" else srv.accepted == n, 10, "every session connected")
    writers = clients if resetter == "client" else ups
    fill_all_until_blocked(writers)
    waiter_results: list[str] = []
    waiters = []
    if resetter == "upstream":
        def wait_client(s: socket.socket) -> None:
            r = wait_error(s, 15000)
            with lock:
                waiter_results.append(r)
        waiters = [threading.Thread(target=wait_client, args=(s,), daemon=True) for s in clients]
        for t in waiters:
            t.start()
    for s in writers:
        s.setblocking(True)
        reset(s)
    go.set()
    try:
        wait_for(lambda: relay_gauges(c)["conns_active"] == 0, 10, "every relay to pass the reset on")
    except AssertionError:
        raise AssertionError(f"{relay_gauges(c)['conns_active']} of {n} relays still open 10 s after their paused "
                             f"{resetter} reset: {relay_gauges(c)}") from None
    if resetter == "client":
        wait_for(lambda: len(results) == n, 20, "every upstream to see the end")
        assert results.count("reset") == n, {r: results.count(r) for r in set(results)}
    else:
        for t in waiters:
            t.join(20)
        assert waiter_results.count("reset") == n, {r: waiter_results.count(r) for r in set(waiter_results)}
        for s in clients:
            s.close()
    wait_relay_idle(c, 10.0)


# ---- HTTP under a tiny ring and few receive buffers ----

def test_keepalive_pipelined_many_connections_tiny_ring(core, nginx) -> None:
    """200 keep-alive connections on one worker whose ring has 8 SQ / 32 CQ entries, each
    pipelining 3 requests at once, three rounds: every response arrives, in order, byte-exact
    (nginx echoes the path), and nothing is left in flight after."""
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=ONE, ring_entries=8)
    n = 200
    conns = [Conn(port, timeout=20) for _ in range(n)]
    try:
        for rnd in range(3):
            for i, k in enumerate(conns):
                k.send(b"".join(build_request("GET", f"/r{rnd}/c{i}/p{j}") for j in range(3)))

            def read(i: int) -> list[str]:
                return [conns[i].read_response().text.split("|")[0] for _ in range(3)]

            out = run_threads(read, n)
            bad = [(i, o) for i, o in enumerate(out) if o != [f"/r{rnd}/c{i}/p{j}" for j in range(3)]]
            assert not bad, f"round {rnd}: {len(bad)} connections wrong, e.g. {bad[:3]}"
    finally:
        for k in conns:
            k.close()
    wait_http_settled(c)


def test_big_responses_to_slow_readers_few_buffers_tiny_ring(core, nginx) -> None:
    """One worker with 16 receive buffers of 4 KiB, 8 transmit buffers and an 8-entry ring; 30
    clients fetch nginx's 1 MiB /big.bin at once and read it slowly (small receive buffer, 4 KiB
    reads), while 50 other clients do small requests: every body arrives whole (sha256 equal),
    every small one too, and afterwards (buffers all back) the worker still serves 100 requests
    on fresh connections."""
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)],
                    limits=Limits(request_header_timeout="10s", idle_timeout="60s")),
             cpus=ONE, ring_entries=8, buf_size=4096, recv_bufs=16, tx_bufs=8)

    def big(i: int) -> str:
        with Conn(port, timeout=30, rcvbuf=4096, read_size=4096) as k:
            r = k.request("GET", "/big.bin")
            return f"{r.status} {hashlib.sha256(r.body).hexdigest()}"

    def small(i: int) -> str:
        with Conn(port, timeout=30) as k:
            return k.request("GET", f"/s{i}").text.split("|")[0]

    out = run_threads(lambda i: big(i) if i < 30 else small(i), 80, timeout=90)
    bad = [(i, o) for i, o in enumerate(out)
           if o != (f"200 {nginx.big_sha256}" if i < 30 else f"/s{i}")]
    assert not bad, f"{len(bad)} of 80 wrong, e.g. {bad[:3]}"
    wait_http_settled(c)
    after = run_threads(lambda i: small(i), 100, timeout=60)
    assert after == [f"/s{i}" for i in range(100)], [o for o in after if not isinstance(o, str) or o[:2] != "/s"][:3]
    wait_http_settled(c)


def test_uploads_many_at_once_few_buffers_tiny_ring(core, http_backend) -> None:
    """40 concurrent uploads of 200 KiB + i bytes each (odd sizes), one worker, 16 receive
    buffers of 4 KiB, 8-entry ring: the backend sees every body whole (length and sha256)."""
    be = http_backend(digest_app)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)],
                    limits=Limits(request_header_timeout="10s", idle_timeout="60s")),
             cpus=ONE, ring_entries=8, buf_size=4096, recv_bufs=16, tx_bufs=8)
    bodies = [bytes([i % 251]) * (200 * 1024 + i) for i in range(40)]

    def up(i: int) -> str:
        with Conn(port, timeout=30) as k:
            return k.request("POST", f"/u{i}", body=bodies[i]).text

    out = run_threads(up, 40, timeout=90)
    want = [f"{len(b)} {hashlib.sha256(b).hexdigest()} length\n" for b in bodies]
    bad = [(i, o) for i, (o, w) in enumerate(zip(out, want)) if o != w]
    assert not bad, f"{len(bad)} uploads wrong, e.g. {bad[:3]}"
    wait_http_settled(c)


def test_connects_to_blackhole_with_timeouts_tiny_ring(core, nginx, blackhole) -> None:
    """A cluster whose one endpoint is a blackhole (SYNs dropped), connectTimeout 300ms, and
    another rule to nginx; one worker with an 8-entry ring (the connect and its link timeout
    must be in one submit). 100 clients to the blackhole at once, interleaved with 100 to
    nginx: every blackhole request gets a 5xx answer (no hang), every nginx one its echo, and
    nothing is left in flight."""
    port = free_port()
    c = core(config([http_listener(port, rule("bh", "bh", prefix="/bh"), rule("all", "a"))],
                    [cluster("bh", blackhole, connect_timeout="300ms"), cluster("a", nginx.a)],
                    limits=Limits(request_header_timeout="10s", idle_timeout="60s")),
             cpus=ONE, ring_entries=8)

    def one(i: int) -> str:
        with Conn(port, timeout=30) as k:
            if i % 2:
                return k.request("GET", f"/n{i}").text.split("|")[0]
            return str(k.request("GET", f"/bh/{i}").status)[0]

    out = run_threads(one, 200, timeout=90)
    bad = [(i, o) for i, o in enumerate(out) if o != (f"/n{i}" if i % 2 else "5")]
    assert not bad, f"{len(bad)} of 200 wrong, e.g. {bad[:3]}"
    wait_http_settled(c)


def test_http_resets_after_half_close_with_request_waiting_tiny_ring(core, http_backend) -> None:
    """100 clients on one worker (ring: 8 SQ / 32 CQ entries) each send a request and FIN at
    once (half-close: they wait for the answer); the backend reads every request and never
    answers. Then every client resets. The proxy must notice each reset (its error watch past
    the FIN) and close the client and its upstream connection: nothing left in flight, and the
    backend sees every connection end, instead of waiting for an answer nobody can receive."""
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)],
                    limits=Limits(request_header_timeout="10s", idle_timeout="60s")),
             cpus=ONE, ring_entries=8)
    n = 100
    clients = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            clients.append(s)
        for i, s in enumerate(clients):
            s.sendall(build_request("GET", f"/wait{i}"))
            s.shutdown(socket.SHUT_WR)
        wait_for(lambda: be.count == n, 20, lambda: f"every request to reach the backend ({be.count}/{n})")
        for s in clients:
            reset(s)
        try:
            wait_for(lambda: in_flight(c) == (0, 0, 0), 10, "every reset to be noticed")
        except AssertionError:
            raise AssertionError(f"(client conns, busy upstream conns, requests in flight) = {in_flight(c)} 10 s "
                                 f"after {n} half-closed clients reset") from None
    finally:
        release.set()


# ---- the relay: many sessions, pauses and resumes ----

def test_relay_thousand_sessions_every_ending_tiny_ring(core, tcp_server) -> None:
    """1000 echo sessions through one worker (ring 8 SQ / 32 CQ, 32 receive buffers of 4 KiB)
    from 8 threads, each an odd size (1..20000 bytes), ending in turn: FIN after the echo
    (echo byte-exact, then EOF), reset after the echo, reset right after sending (no read),
    and FIN before reading anything. No crash, every echo exact, gauges back to zero, and the
    listener's byte counters equal to what was echoed at least."""
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE, ring_entries=8, buf_size=4096, recv_bufs=32)

    def session(k: int) -> str | None:
        size = 1 + (k * 7919) % 20000
        data = bytes((k + j) % 256 for j in range(size))
        mode = k % 4
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            if mode == 3:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                got = recv_all(s)
                return None if got == data else f"{k}: FIN first: {len(got)}/{size} bytes"
            s.sendall(data)
            if mode == 2:
                reset(s)
                return None
            got = b""
            while len(got) < size:
                d = s.recv(65536)
                if not d:
                    break
                got += d
            if got != data:
                return f"{k}: echo {len(got)}/{size} bytes"
            if mode == 1:
                reset(s)
                return None
            s.shutdown(socket.SHUT_WR)
            rest = recv_all(s)
            return None if rest == b"" else f"{k}: {len(rest)} bytes after the echo"

    def worker(t: int) -> list:  # type: ignore[type-arg]
        return [session(k) for k in range(t, 1000, 8)]

    out = run_threads(worker, 8, timeout=110)
    errs = [e for o in out for e in (o if isinstance(o, list) else [o]) if e is not None]
    assert not errs, f"{len(errs)} sessions wrong, e.g. {errs[:5]}"
    wait_relay_idle(c, 10.0)


def test_relay_slow_reader_pausing_and_resuming_many_times(core, tcp_server) -> None:
    """20 relay sessions (one worker, ring 8 SQ / 32 CQ, 16 receive buffers of 4 KiB): each
    upstream sends 2 MiB + k odd bytes then FIN; each client (4 KiB receive buffer) alternates
    reading a little and stopping until the proxy has paused its upstream side, many times
    (each pause arms the error watch, each resume reads again). Every client gets exactly the
    upstream's bytes and then EOF; gauges back to zero."""
    n = 20
    payloads = [hashlib.sha256(str(k).encode()).digest() * ((2 << 20) // 32) + bytes(k + 1) for k in range(n)]

    def handler(conn: socket.socket, index: int) -> None:
        key = b""
        while len(key) < 2:
            d = conn.recv(2 - len(key))
            if not d:
                return
            key += d
        conn.sendall(payloads[int(key.decode())])
        conn.shutdown(socket.SHUT_WR)
        recv_all(conn)

    srv = tcp_server(handler)
    port = free_port()
    c = core(relay_cfg(port, srv.address), cpus=ONE, ring_entries=8, buf_size=4096, recv_bufs=16)

    def client(k: int) -> str | None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(30)
        s.connect(("127.0.0.1", port))
        with s:
            s.sendall(f"{k:02d}".encode())
            got = bytearray()
            stops = 0
            while True:
                # Read a burst, then stop until nothing more arrives for a moment (the proxy paused).
                for _ in range(8):
                    d = s.recv(4096)
                    if not d:
                        s.shutdown(socket.SHUT_WR)
                        return None if bytes(got) == payloads[k] else f"{k}: {len(got)}/{len(payloads[k])} bytes, differ"
                    got += d
                stops += 1
                select.select([], [], [], 0.002)

    out = run_threads(client, n, timeout=100)
    errs = [o for o in out if o is not None]
    assert not errs, errs[:5]
    wait_relay_idle(c, 10.0)


def test_starved_sockets_recover_without_heap_copies(core, engine, nginx) -> None:
    """16 receive buffers of 4 KiB and no heap copies to fall back on (spill_bufs=1; 256 transmit
    buffers, so that response heads always find one), one worker,
    8-entry ring: 24 slow readers of the 1 MiB /big.bin and 40 small requests at once. Sockets
    find the buffer ring empty (uring_buf_exhausted on io_uring) and wait on the starved list;
    as readers drain, buffers come back and every starved socket must read again: every body
    whole, nothing left in flight, and 50 more requests served afterwards (no buffer leaked)."""
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)],
                    limits=Limits(request_header_timeout="30s", idle_timeout="60s")),
             cpus=ONE, ring_entries=8, buf_size=4096, recv_bufs=16, tx_bufs=256, spill_bufs=1)

    def big(i: int) -> str:
        with Conn(port, timeout=60, rcvbuf=4096, read_size=4096) as k:
            r = k.request("GET", "/big.bin")
            return f"{r.status} {hashlib.sha256(r.body).hexdigest()}"

    def small(i: int) -> str:
        with Conn(port, timeout=60) as k:
            return k.request("GET", f"/s{i}").text.split("|")[0]

    out = run_threads(lambda i: big(i) if i < 24 else small(i), 64, timeout=100)
    bad = [(i, o) for i, o in enumerate(out) if o != (f"200 {nginx.big_sha256}" if i < 24 else f"/s{i}")]
    assert not bad, f"{len(bad)} of 64 wrong, e.g. {bad[:3]}"
    if engine == "io_uring":
        assert total(c, "uring_buf_exhausted") > 0, "the buffer ring never ran empty: starvation not exercised"
    wait_http_settled(c)
    after = run_threads(small, 50, timeout=60)
    assert after == [f"/s{i}" for i in range(50)], [o for o in after if not isinstance(o, str) or o[:2] != "/s"][:3]
    wait_http_settled(c)
