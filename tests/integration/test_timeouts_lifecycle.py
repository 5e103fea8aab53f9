"""Timeouts, timers and connection lifecycle. Rule request/backend timeouts against
limits.idleTimeout, cuts in the middle of a response, the drain deadline, many timers at once,
extreme durations, blackholed connects, and what is left behind (fds, gauges) afterwards."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from ringlane_sidecar.config.model import Limits, Retry, Timeouts

from .backends import Reader, Reply, digest_app, endless, reset, stall_forever
from .helpers import (Conn, build_request, cluster, config, free_port, get, http_listener,
                      own_stream_sockets, rule, wait_codes, wait_for)

pytestmark = pytest.mark.timeout(60)


def active(c) -> int:  # type: ignore[no-untyped-def]
    return sum(t.conns_active for t in c.totals())


def up_active(c) -> int:  # type: ignore[no-untyped-def]
    return sum(t.upstream_conns_active for t in c.totals())


def _sockets() -> list[tuple[tuple, tuple]]:
    """(local, peer) of every connected TCP socket of this process (the core runs in it)."""
    out = []
    for s in own_stream_sockets():
        with s:
            try:
                out.append((s.getsockname(), s.getpeername()))
            except OSError:
                pass  # listening or unconnected
    return out


def client_fds(listen_port: int) -> int:
    """The proxy's accepted sockets (local port = the listener's)."""
    return sum(1 for local, _ in _sockets() if local[1] == listen_port)


def upstream_fds(backend_port: int) -> int:
    """Sockets connected to backend_port: the proxy's upstream ones, plus any the test made."""
    return sum(1 for _, peer in _sockets() if peer[1] == backend_port)


def settled(c, port: int, backend_port: int | None = None, baseline: int = 0,  # type: ignore[no-untyped-def]
            timeout: float = 5.0) -> None:
    """No client connection left (gauge and sockets), no upstream one busy, and the upstream
    sockets that remain are exactly the pooled ones the gauge reports."""
    idle = lambda: sum(t.upstream_conns_idle for t in c.totals())  # noqa: E731

    def ok() -> bool:
        if active(c) or client_fds(port) or up_active(c) != idle():
            return False
        return backend_port is None or upstream_fds(backend_port) - baseline == up_active(c)

    wait_for(ok, timeout, f"gauges and fds to settle (clients {active(c)}/{client_fds(port)} fds, upstreams "
             f"{up_active(c)} ({idle()} idle)/{upstream_fds(backend_port) - baseline if backend_port else '-'} fds)")


# ---- rule timeouts must not switch limits.idleTimeout off ----

def test_long_request_timeout_does_not_disable_idle_timeout_for_a_stalled_body(core, http_backend) -> None:
    """limits.idleTimeout: 'not sending the rest of a request body (answered 408)'. A route
    timeouts.request of 1h does not switch it off: the silent uploader gets 408 after the idle
    timeout, and its client and upstream connection (with half a body) are released."""
    be = http_backend(digest_app)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b", timeouts=Timeouts(request="1h")))],
                    [cluster("b", be.address)], limits=Limits(request_header_timeout="1s", idle_timeout="300ms")))
    with Conn(port, timeout=4) as conn:
        conn.send(build_request("POST", "/upload", [("Content-Length", "100000")]) + b"x" * 1000)
        wait_for(lambda: up_active(c) == 1, 5, "the body to be on its way upstream")
        t0 = time.monotonic()
        try:
            r = conn.read_response()
        except (socket.timeout, TimeoutError):
            pytest.fail("no 408 within 4s of silence (idleTimeout 300ms): the 1h request timeout replaced it")
        assert r.status == 408, r
        assert time.monotonic() - t0 < 2
    settled(c, port, be.port)


def test_long_request_timeout_does_not_disable_idle_timeout_for_a_client_not_reading(core, http_backend) -> None:
    """limits.idleTimeout: 'not reading a response it is owed'. With timeouts.request 1h, a
    client that reads nothing is still cut after the idle timeout, with its upstream connection
    and the buffers of a paused response."""
    be = http_backend(lambda req: endless)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b", timeouts=Timeouts(request="1h", backend_request="1h")))],
                    [cluster("b", be.address)], limits=Limits(request_header_timeout="1s", idle_timeout="300ms")))
    with Conn(port, rcvbuf=4096) as conn:
        conn.send(build_request("GET", "/endless"))
        wait_for(lambda: be.count == 1, 5, "the request to reach the backend")
        wait_for(lambda: active(c) == 0 and up_active(c) == 0, 5,
                 "the silent reader to be cut after the idle timeout (300ms)")
    settled(c, port, be.port)


# ---- a cut in the middle of a response must look like a cut ----

def close_delimited_then(action: str):  # type: ignore[no-untyped-def]
    """A 200 framed by connection close: a head, 5000 bytes of body, then a stall or a reset."""
    def act(conn: socket.socket, r: Reader) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n" + b"y" * 5000)
        if action == "reset":
            time.sleep(0.2)  # the client has the first part
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()
        else:
            time.sleep(5)
    return act


@pytest.mark.parametrize("how", ["request_timeout", "upstream_reset", "drain_deadline"])
def test_cut_close_delimited_response_reaches_client_as_reset(core, http_backend, how) -> None:
    """A response framed by connection close ends, for the client, at FIN. When it is cut (the
    request timeout fires mid-body, the upstream resets, or the drain deadline passes), the
    client connection ends with a reset, as in the relay and the tunnel: a FIN would make the
    5000 bytes look like the whole body."""
    action = "reset" if how == "upstream_reset" else "stall"
    be = http_backend(lambda req: close_delimited_then(action))
    port = free_port()
    timeouts = Timeouts(request="600ms") if how == "request_timeout" else None
    c = core(config([http_listener(port, rule("r", "b", timeouts=timeouts))], [cluster("b", be.address)]))
    with Conn(port, timeout=4) as conn:
        conn.send(build_request("GET", "/file"))
        status, _, _, _ = conn.read_head()
        assert status == 200
        got = bytearray(conn.buf)
        conn.buf = b""
        if how == "drain_deadline":
            while len(got) < 5000:
                got += conn.sock.recv(65536)
            c.drain(300)
        outcome = "fin"
        try:
            while True:
                b = conn.sock.recv(65536)
                if not b:
                    break
                got += b
        except ConnectionResetError:
            outcome = "reset"
        assert len(got) == 5000
        assert outcome == "reset", "a truncated close-delimited body ended with FIN: it looks complete"
    if how != "drain_deadline":
        wait_codes(c, "web", "r", **{"5xx": 1})
        settled(c, port, be.port)


def test_request_timeout_mid_response_cuts_at_the_deadline(core, http_backend) -> None:
    """timeouts.request covers 'to the last byte of the response': a Content-Length response
    streaming to a slow (but reading) client stops at the deadline, and the proxy counts a 5xx.
    The cut is a reset (linger 0), which discards the megabytes already in the socket's send
    buffer: after a plain close() the kernel would go on delivering them for seconds."""
    be = http_backend(lambda req: endless)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="500ms")))],
                    [cluster("b", be.address)], limits=Limits(request_header_timeout="1s", idle_timeout="30s")))
    with Conn(port, rcvbuf=8192, timeout=4) as conn:
        conn.send(build_request("GET", "/endless"))
        t0 = time.monotonic()
        status, _, _, _ = conn.read_head()
        assert status == 200
        late = 0
        try:
            while True:
                b = conn.sock.recv(4096)
                if not b:
                    break
                if time.monotonic() - t0 > 2.0:  # 1.5 s after the deadline: room for a loaded machine
                    late += len(b)
                if time.monotonic() - t0 > 4.0:
                    break
                time.sleep(0.01)  # a slow reader: it keeps reading
        except ConnectionResetError:
            pass
        assert late == 0, f"{late} bytes of the response arrived more than 1.5s after the 500ms request timeout"
    wait_codes(c, "web", "r", **{"5xx": 1})
    settled(c, port, be.port)


def test_request_timeout_while_body_is_uploading(core, http_backend) -> None:
    """The client sends a body slowly (never silent for the idle timeout) past timeouts.request:
    504, the connection closed, the upstream connection with half a body closed."""
    be = http_backend(digest_app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="500ms")))],
                    [cluster("b", be.address)], limits=Limits(request_header_timeout="1s", idle_timeout="1s")))
    with Conn(port, timeout=4) as conn:
        conn.send(build_request("POST", "/up", [("Content-Length", "100000")]))
        t0 = time.monotonic()
        got = None
        for _ in range(40):
            try:
                conn.send(b"z" * 100)
            except OSError:
                break
            conn.sock.settimeout(0.05)
            try:
                d = conn.sock.recv(65536)
                conn.buf += d
                if d:
                    got = d
                    break
            except (socket.timeout, TimeoutError):
                pass
        conn.sock.settimeout(4)
        r = conn.read_response()
        assert r.status == 504
        assert time.monotonic() - t0 < 2.5  # 500 ms, not the 1 s idle timeout (each send restarts it)
    assert be.count == 0
    wait_codes(c, "web", "r", **{"5xx": 1})
    settled(c, port, be.port)


# ---- drain ----

def test_timers_keep_firing_during_a_drain_with_a_long_deadline(core, http_backend) -> None:
    """drainTimeout may be up to 1193h (4294800000 ms, validated), past 2^31 ms. The worker's
    loop wait stays valid for such a deadline (both engines take a negative wait as 'forever'),
    so timers keep firing during the drain: a request stuck on a stalling backend with
    timeouts.request 300ms gets its 504."""
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="300ms")))],
                    [cluster("b", be.address)]), cpus=[0])
    try:
        with Conn(port, timeout=3) as conn:
            conn.send(build_request("GET", "/stuck"))
            wait_for(lambda: be.count == 1, 5, "the request to reach the backend")
            c.drain(4294800000)  # 1193h, the schema's maximum
            try:
                r = conn.read_response()
            except (socket.timeout, TimeoutError):
                pytest.fail("no 504 within 3s for a 300ms request timeout: timers stopped during the drain")
            assert r.status == 504
        wait_for(lambda: c.running_workers() == 0, 3, "the worker to exit once empty")
    finally:
        release.set()


def test_client_reset_while_its_pipelined_request_waits_is_seen_at_once(core, http_backend) -> None:
    """A client pipelines two requests; the backend sits on the first, so the proxy holds the
    second and stops reading. The client resets: its connection and the upstream one close at
    once (as a direct peer sees POLLERR), not when the first answer comes, which may be never."""
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=[0])
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(build_request("GET", "/first") + build_request("GET", "/second"))
        wait_for(lambda: be.count == 1, 5, "the first request to reach the backend")
        reset(conn)
        wait_for(lambda: active(c) == 0 and up_active(c) == 0, 5,
                 "the reset client and its upstream connection to be closed")
    finally:
        release.set()


def test_drain_deadline_cuts_many_stuck_requests_and_closes_all(core, http_backend) -> None:
    """20 requests stuck on a stalling backend, no rule timeouts: the drain ends at its deadline
    and every proxy socket is gone after that."""
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    conns = [Conn(port, timeout=3) for _ in range(20)]
    try:
        for k in conns:
            k.send(build_request("GET", "/stuck"))
        wait_for(lambda: be.count == 20, 5, "every request to reach the backend")
        t0 = time.monotonic()
        c.drain(400)
        wait_for(lambda: c.running_workers() == 0, 5, "workers to exit at the drain deadline")
        assert time.monotonic() - t0 < 2.5  # 400 ms, and room for a loaded machine
        wait_for(lambda: client_fds(port) == 0 and upstream_fds(be.port) == 0, 3, "every proxy socket to be closed")
        for k in conns:
            assert k.at_eof(2)
        # The gauges say so too: connections cut at the deadline are untracked, leave the
        # balancer's counts and are counted as closed.
        gauges = [(t.conns_active, t.upstream_conns_active) for t in c.totals()]
        assert all(g == (0, 0) for g in gauges), f"(conns_active, upstream_conns_active) per worker: {gauges}"
        assert c.cluster_stats()["b"]["active"] == 0, c.cluster_stats()
        ls = c.listener_stats()["web"]
        assert ls["conns_closed"] == ls["conns_opened"] == 20, ls
    finally:
        release.set()
        for k in conns:
            k.close()


# ---- request timeout semantics ----

def test_request_timeout_counts_from_the_first_byte(core, http_backend) -> None:
    """timeouts.request: 'Whole request, from the first byte received to the last byte of the
    response'. It starts at the first byte, not when the head is complete: a head sent over
    3s with a 2s request timeout gets its 504 as soon as the head is in (2 s later if the
    deadline started at the end of the head)."""
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="2s")))],
                [cluster("b", be.address)], limits=Limits(request_header_timeout="5s")))
    try:
        with Conn(port, timeout=6) as conn:
            head = build_request("GET", "/slow-head")
            t0 = time.monotonic()
            conn.send(head[:10])
            time.sleep(3.0)  # the slow head under test (within the header timeout)
            conn.send(head[10:])
            t_head = time.monotonic()
            r = conn.read_response()
            assert r.status == 504
            waited = time.monotonic() - t_head
            assert waited < 1.2, (f"504 came {waited:.2f}s after the head ({time.monotonic() - t0:.2f}s after the "
                                  "first byte): the 2s deadline started at the end of the head")
    finally:
        release.set()


def test_backend_request_timeout_is_per_attempt_and_retried(core, http_backend) -> None:
    """timeouts.backendRequest: 'One attempt to a backend'. With retry on 504 (the status the
    proxy gives a timed-out attempt) and a request timeout that leaves room, the first attempt
    stalls and times out, and the retry answers."""
    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        return stall_forever(release) if req.conn_index == 0 else Reply(200, b"second attempt\n")

    be = http_backend(app)
    port = free_port()
    core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="3s", backend_request="300ms"),
                                          retry=Retry(attempts=1, on=("504",), backoff="1ms")))],
                [cluster("b", be.address)]))
    try:
        r = get(port, "/x", timeout=4)
        assert (r.status, r.body) == (200, b"second attempt\n"), (r.status, r.body)
    finally:
        release.set()


# ---- header timeout vs idle timeout, keep-alive and pipelining ----

def test_keepalive_gap_is_idle_timeout_not_header_timeout(core, nginx) -> None:
    """requestHeaderTimeout 300ms, idleTimeout 5s: a client silent 800ms between requests is
    within idleTimeout; pipelined requests waiting behind a slow one are not timed as heads."""
    port = free_port()
    c = core(config([http_listener(port, rule("a", "a"))], [cluster("a", nginx.a)],
                    limits=Limits(request_header_timeout="300ms", idle_timeout="5s")))
    with Conn(port) as conn:
        assert conn.request("GET", "/1").status == 200
        time.sleep(0.8)  # the idle gap under test
        assert conn.request("GET", "/2").status == 200
        conn.send(b"".join(build_request("GET", f"/p{i}") for i in range(5)))
        assert [conn.read_response().status for _ in range(5)] == [200] * 5
        # one byte every 100 ms: the head's clock does not restart per byte
        t0 = time.monotonic()
        head = build_request("GET", "/slowloris")
        for b in head[:-1]:
            conn.send(bytes([b]))
            time.sleep(0.1)  # the slow client under test
            if conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) if _readable(conn.sock) else b"":
                break
        assert conn.read_response().status == 408
        assert time.monotonic() - t0 < 2.5  # 300 ms, not the 4 s the head takes byte by byte
        assert conn.at_eof(2)
    settled(c, port)


def _readable(s: socket.socket) -> bool:
    import select
    return bool(select.select([s], [], [], 0)[0])


# ---- many timers at once; extreme durations ----

def test_300_connections_time_out_together(core, nginx) -> None:
    """300 connections that never send a byte, all armed at about the same moment with a 300ms
    header timeout: every one is closed, gauges and fds back to zero."""
    port = free_port()
    c = core(config([http_listener(port, rule("a", "a"))], [cluster("a", nginx.a)],
                    limits=Limits(request_header_timeout="300ms", idle_timeout="300ms")))
    socks = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port))
            socks.append(s)
        # counted as opened, not as open at once: the first ones may time out before the last is accepted
        wait_for(lambda: c.listener_stats()["web"]["conns_opened"] == 300, 5, "300 connections accepted")
        t0 = time.monotonic()
        wait_for(lambda: active(c) == 0, 5, "every connection timed out")
        assert time.monotonic() - t0 < 2.0
        for s in socks:
            s.settimeout(2)
            try:
                assert s.recv(100) in (b"",) or True
            except ConnectionResetError:
                pass
        settled(c, port)
        assert get(port, "/after").status == 200
    finally:
        for s in socks:
            s.close()


def test_extreme_durations(core, http_backend) -> None:
    """1193h everywhere it is allowed (the longest valid) alongside a 1ms request timeout on
    another route: the 1ms route answers 504 at once, the long-timeout route serves normally,
    and a 300ms rule timer still fires on time while 1193h timers are armed."""
    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target.startswith("/stall"):
            return stall_forever(release)
        return Reply(200, b"ok\n")

    be = http_backend(app)
    port = free_port()
    huge = "1193h"
    c = core(config([http_listener(port,
                                   rule("tiny", "b", prefix="/stall/tiny", timeouts=Timeouts(request="1ms")),
                                   rule("short", "b", prefix="/stall/short", timeouts=Timeouts(request="300ms")),
                                   rule("long", "b", timeouts=Timeouts(request=huge, backend_request=huge)))],
                    [cluster("b", be.address, connect_timeout=huge, idle_timeout=huge)],
                    limits=Limits(request_header_timeout=huge, idle_timeout=huge)))
    try:
        idle = Conn(port)  # armed with the 1193h header timeout
        wait_for(lambda: active(c) == 1, 3, "the idle connection")
        with Conn(port, timeout=3) as conn:
            assert conn.request("GET", "/ok").status == 200
            t0 = time.monotonic()
            assert conn.request("GET", "/stall/tiny").status == 504
            assert time.monotonic() - t0 < 2  # 1 ms (and a round trip), not 1193 h
        t0 = time.monotonic()
        assert get(port, "/stall/short", timeout=3).status == 504
        assert 0.25 <= time.monotonic() - t0 < 2
        wait_for(lambda: active(c) == 1, 3, "only the idle connection (1193h) to be left open")
        assert not idle.at_eof(0.2)
        idle.close()
    finally:
        release.set()
    settled(c, port)


# ---- connect timeouts ----

def test_many_connects_to_a_blackhole_time_out_and_are_cleaned_up(core, blackhole) -> None:
    """30 concurrent requests to a listener that never completes a connect, connectTimeout
    200ms: every one gets 503 about then; no upstream socket or gauge is left."""
    port = free_port()
    bh_port = int(blackhole.rsplit(":", 1)[1])
    base = upstream_fds(bh_port)  # the fixture's own fillers
    c = core(config([http_listener(port, rule("bh", "b"))], [cluster("b", blackhole, connect_timeout="200ms")]))
    conns = [Conn(port, timeout=3) for _ in range(30)]
    try:
        t0 = time.monotonic()
        for k in conns:
            k.send(build_request("GET", "/"))
        assert [k.read_response().status for k in conns] == [503] * 30
        assert time.monotonic() - t0 < 2.5  # 200 ms, not the kernel's SYN retries
        assert c.cluster_stats()["b"]["connect_errors"] == 30
    finally:
        for k in conns:
            k.close()
    settled(c, port, bh_port, base)


def test_request_timeout_shorter_than_connect_timeout(core, blackhole) -> None:
    """timeouts.request 200ms, connectTimeout 5s: 504 at the request deadline, and the
    half-open connect is abandoned at once (not left until the connect timeout)."""
    port = free_port()
    bh_port = int(blackhole.rsplit(":", 1)[1])
    base = upstream_fds(bh_port)
    c = core(config([http_listener(port, rule("bh", "b", timeouts=Timeouts(request="200ms")))],
                    [cluster("b", blackhole, connect_timeout="5s")]))
    t0 = time.monotonic()
    assert get(port, "/", timeout=4).status == 504
    assert time.monotonic() - t0 < 2.5  # 200 ms, not the 5 s connect timeout
    settled(c, port, bh_port, base, timeout=2)  # abandoned at once, not at the connect timeout


# ---- reload ----

def test_inflight_request_keeps_its_timeout_across_reload(core, http_backend) -> None:
    """A request that started under timeouts.request 400ms keeps it after a reload that drops
    the timeout; the next request on the same connection runs under the new config."""
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release) if req.target == "/stall" else Reply(200, b"ok\n"))
    port = free_port()
    cfg1 = config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="400ms")))],
                  [cluster("b", be.address)])
    cfg2 = config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="5s")))],
                  [cluster("b", be.address)], generation=2)
    c = core(cfg1)
    try:
        with Conn(port, timeout=6) as conn:
            conn.send(build_request("GET", "/stall"))
            wait_for(lambda: be.count == 1, 3, "the request to reach the backend")
            t0 = time.monotonic()
            c.apply(cfg2)
            r = conn.read_response()
            assert r.status == 504 and time.monotonic() - t0 < 2.5  # 400 ms, not the new config's 5 s
            assert r.header("connection") != "close"
            assert conn.request("GET", "/ok").status == 200
    finally:
        release.set()
    settled(c, port)
