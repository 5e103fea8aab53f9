"""Edge cases of draining, timeouts, pools and framing in the HTTP and TCP proxy.

Covers drain-deadline accounting and resets, 100-continue waits, pools shared by HTTP and TCP,
trailers and chunk framing split across receives, response framing on reused upstream
connections, per-attempt timeouts with pipelining, and interim responses with Connection: close."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from ringlane_sidecar.config.model import Backend, Limits, Listener, Retry, Rule, Timeouts

from .backends import Reply, Request, continue_then_created, digest_app, echo_handler, recv_all, recv_head, upgrade_echo
from .helpers import (ZERO_CODES, Closed, Conn, build_request, cluster, config, free_port, http_listener, proxy_side, rule,
                      tcp_listener, wait_codes, wait_for)
from .test_upgrade import UPGRADE, recv_exact

pytestmark = pytest.mark.timeout(60)

ONE = [0]  # one worker: pools and counts are exact


def ok_app(req: Request) -> Reply:
    return Reply(200, f"ok {req.target}\n".encode())


# ---- maxConnections shared by HTTP and TCP listeners ----

def test_idle_pooled_http_connection_does_not_lock_out_a_tcp_session(core, http_backend) -> None:
    """One cluster serves an HTTP listener and a TCP listener, maxConnections: 1. After one HTTP
    request, its upstream connection sits idle in the pool. A TCP session to the cluster closes
    that idle pooled connection to make room, as an HTTP request would, and gets through."""
    be = http_backend(ok_app)
    hport, tport = free_port(), free_port()
    c = core(config([http_listener(hport, rule("r", "shared")), tcp_listener(tport, "shared")],
                    [cluster("shared", be.address, max_connections=1)]), cpus=ONE)
    with Conn(hport) as h:
        assert h.request("GET", "/one").status == 200
    wait_for(lambda: sum(t.upstream_conns_idle for t in c.totals()) == 1, 5, "the pooled idle connection")
    with socket.create_connection(("127.0.0.1", tport), timeout=5) as s:
        s.sendall(build_request("GET", "/via-tcp", [("Connection", "close")]))
        s.settimeout(5)
        got = b""
        try:
            while d := s.recv(65536):
                got += d
        except ConnectionResetError:
            got += b"<reset>"
    assert got.startswith(b"HTTP/1.1 200"), f"the TCP session was refused: {got!r}"


# ---- the drain deadline ----

def stuck_with_a_counted_response(c, port: int, extra: list[tuple[str, str]]) -> Conn:  # type: ignore[no-untyped-def]
    """A client that asked for a 64 KiB response and reads none of it: the proxy's side of the
    connection gets a tiny send buffer, so the whole response is parsed (and counted) while most
    of it still waits in the proxy's queue for the client."""
    conn = Conn(port, rcvbuf=4096)
    ps = wait_for(lambda: proxy_side(conn.sock), 5, "the proxy to accept")
    with ps:
        ps.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn.send(build_request("GET", "/big", extra))
    return conn


def test_drain_deadline_does_not_count_an_answered_request_twice(core, http_backend) -> None:
    """The upstream's 200 is complete and counted, but the client reads slowly, so at the drain
    deadline the connection still owes it bytes. The deadline closes the connection without
    counting a 504 for it: the one request shows up as one 2xx only, and the connection is
    counted closed once."""
    be = http_backend(lambda req: Reply(200, b"x" * (64 << 10)))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    conn = stuck_with_a_counted_response(c, port, [("Connection", "close")])
    try:
        wait_codes(c, "web", "r", s2xx=1)
        c.drain(200)
        wait_for(lambda: c.running_workers() == 0, 5, "the worker to exit at the drain deadline")
        codes = c.rule_stats()[("web", "r")]["codes"]
        assert codes == {**ZERO_CODES, "2xx": 1}, f"one request answered 200, counted {codes}"
        lst = c.listener_stats()["web"]
        assert lst["conns_closed"] == lst["conns_opened"] == 1, lst
    finally:
        conn.close()


# ---- trailers, chunk framing and response framing ----

def test_chunked_request_with_trailers_fed_one_byte_at_a_time_then_pipelined(core, http_backend) -> None:
    """The trailer scanner keeps its state across receives: a chunked body whose last chunk has
    an extension and whose trailer section arrives one byte per segment passes, and the request
    pipelined right after the trailer is answered too."""
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    first = (b"POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"5;e=1\r\nhello\r\n0;last=\"x\"\r\nX-T: 1\r\nX-U:\r\n\r\n")
    second = build_request("GET", "/after")
    with Conn(port) as conn:
        head_end = first.index(b"\r\n\r\n") + 4
        conn.send(first[:head_end])
        for i in range(head_end, len(first)):
            conn.send(first[i:i + 1])
            time.sleep(0.002)  # pacing: one byte per segment (not a synchronisation)
        conn.send(second)
        r1 = conn.read_response()
        assert r1.status == 200 and r1.text.startswith("5 "), r1
        r2 = conn.read_response()
        assert r2.status == 200, r2
    assert [q.target for q in be.requests] == ["/up", "/after"]


def test_last_chunk_split_at_every_position_on_one_connection(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    tail = b"3\r\nabc\r\n0\r\nT: v\r\n\r\n"
    head = b"POST /p HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    with Conn(port) as conn:
        for k in range(1, len(tail)):
            conn.send(head + tail[:k])
            time.sleep(0.005)
            conn.send(tail[k:])
            r = conn.read_response()
            assert r.status == 200 and r.text.startswith("3 "), (k, r)
    assert len(be.requests) == len(tail) - 1


def scripted_upstream(replies: list[bytes]):  # type: ignore[no-untyped-def]
    """A raw handler: for the n-th request head on the connection (no request bodies), sends
    replies[n] verbatim."""
    def handler(conn: socket.socket, index: int) -> None:
        buf = b""
        for rep in replies:
            got = recv_head(conn, buf)
            if got is None:
                return
            buf = got[1]
            conn.sendall(rep)
        recv_all(conn)
    return handler


def test_response_framing_on_a_reused_upstream_connection(core, tcp_server) -> None:
    """One upstream connection serves, in turn: a chunked 200 with trailers; a 103 then a chunked
    200; a 204; a 304; a response to HEAD with a Content-Length; a response preceded by an
    empty line (RFC 9112 2.2: the recipient skips it). Each reaches the client intact and the
    connection is reused throughout."""
    replies = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
        b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\n\r\n1;x=y\r\nc\r\n0;z\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
        b"\r\n\r\nHTTP/1.0 200 Fine Thank You\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nend",
    ]
    srv = tcp_server(scripted_upstream(replies))
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE)
    with Conn(port) as conn:
        r = conn.request("GET", "/1")
        assert (r.status, r.body) == (200, b"ab")
        r = conn.request("GET", "/2")
        assert (r.status, r.body) == (200, b"c")
        assert conn.request("GET", "/3").status == 204
        assert conn.request("GET", "/4").status == 304
        r = conn.request("HEAD", "/5")
        assert (r.status, r.header("content-length")) == (200, "7")
        r = conn.request("GET", "/6")
        assert (r.status, r.body) == (200, b"ok")
        r = conn.request("GET", "/7")
        assert (r.status, r.body) == (200, b"end")
    assert srv.accepted == 1


# ---- client timeouts while an attempt is in progress ----

IDLE = Limits(request_header_timeout="2s", idle_timeout="300ms")


def test_long_poll_outlives_idle_timeout_within_request_timeout(core, tcp_server) -> None:
    """A long poll: no byte moves either way for three idle timeouts while the upstream thinks.
    The client is waiting on the upstream, not silent, so the idle timeout does not cut it;
    timeouts.request (5s) governs."""
    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        time.sleep(1.0)  # the upstream's think time
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\npoll")
        recv_all(conn)

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="5s", backend_request="4s")))],
                    [cluster("b", srv.address)], limits=IDLE), cpus=ONE)
    with Conn(port) as conn:
        r = conn.request("GET", "/poll")
        assert (r.status, r.body) == (200, b"poll")
    wait_codes(c, "web", "r", s2xx=1)


def test_client_awaiting_100_continue_from_a_slow_upstream_is_not_cut(core, tcp_server) -> None:
    """Expect: 100-continue. The client sends its head and waits for the upstream's 100 (as
    RFC 9110 10.1.1 lets it), which comes after 1s, inside backendRequest (4s). The client is
    waiting on the upstream, not stalled mid-upload, so the idle timeout does not answer 408:
    the 100 reaches the client, its body reaches the upstream, and the 201 comes back."""
    got_body = threading.Event()

    # the upstream decides (1 s) whether it wants the body
    srv = tcp_server(continue_then_created(lambda: time.sleep(1.0), got_body))
    port = free_port()
    core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(backend_request="4s")))],
                [cluster("b", srv.address)], limits=IDLE), cpus=ONE)
    with Conn(port) as conn:
        conn.send(build_request("PUT", "/x", [("Expect", "100-continue"), ("Content-Length", "4")]))
        status, _, _, _ = conn.read_head()
        assert status == 100, f"got {status} while waiting for the upstream's 100 Continue"
        conn.send(b"data")
        r = conn.read_response()
        assert (r.status, r.body) == (201, b"ok")
    assert got_body.is_set()


def test_drain_deadline_destroys_every_kind_of_connection_and_counts_each_once(core, http_backend, tcp_server) -> None:
    """At the drain deadline the worker frees, without the engine: an open WebSocket tunnel, a
    TCP relay, a relay waiting to reconnect, a request stuck upstream, a request in its retry
    backoff, a pooled idle upstream connection. Each client connection is counted closed once,
    the gauges return to zero (they are unsigned: a double decrement shows as a huge number),
    and the ASan build sees no invalid access."""
    release = threading.Event()

    def app(req: Request):  # type: ignore[no-untyped-def]
        if req.target == "/ws":
            return upgrade_echo()
        if req.target == "/stuck":
            release.wait(20)
        if req.target == "/retry":
            return Reply(503, b"no")
        return Reply(200, b"ok")

    be = http_backend(app)
    echo = tcp_server(echo_handler)
    dead = free_port()  # nothing listens: connects are refused
    hport, tport, rport = free_port(), free_port(), free_port()
    retry = Retry(attempts=2, on=("503", "connect-failure"), backoff="20s")
    cfg = config([http_listener(hport, rule("ws", "b", exact="/ws"), rule("retry", "b", exact="/retry", retry=retry),
                                rule("r", "b")),
                  tcp_listener(tport, "e"),
                  Listener(name="re", address=f"127.0.0.1:{rport}", protocol="tcp",
                           rules=(Rule(name="re", backends=(Backend(cluster="dead"),), retry=retry),))],
                 [cluster("b", be.address), cluster("e", echo.address), cluster("dead", f"127.0.0.1:{dead}")])
    c = core(cfg, cpus=ONE)
    conns: list = []
    try:
        with Conn(hport) as pooled:
            assert pooled.request("GET", "/pooled").status == 200
        ws = Conn(hport)
        conns.append(ws)
        ws.send(UPGRADE)
        assert ws.read_response().status == 101
        stuck = Conn(hport)
        conns.append(stuck)
        stuck.send(build_request("GET", "/stuck"))
        backoff = Conn(hport)
        conns.append(backoff)
        backoff.send(build_request("GET", "/retry"))
        relay = socket.create_connection(("127.0.0.1", tport), timeout=5)
        conns.append(relay)
        relay.sendall(b"hi")
        assert relay.recv(2) == b"hi"
        re = socket.create_connection(("127.0.0.1", rport), timeout=5)
        conns.append(re)
        wait_for(lambda: be.count >= 4 and c.cluster_stats()["dead"]["connect_errors"] >= 1, 5, "everything in place")
        c.drain(300)
        wait_for(lambda: c.running_workers() == 0, 5, "the worker to exit at the drain deadline")
        t = list(c.totals())[0]
        assert (t.conns_active, t.upstream_conns_active, t.upstream_conns_idle) == (0, 0, 0), t
        for name, st in c.listener_stats().items():
            assert st["conns_closed"] == st["conns_opened"], (name, st)
        assert all(cs["active"] == 0 for cs in c.cluster_stats().values()), c.cluster_stats()
    finally:
        release.set()
        for x in conns:
            x.close()


def test_pipelined_requests_each_get_their_own_backend_timeout(core, tcp_server) -> None:
    """backendRequest is 1.4s and request 1.8s; three pipelined GETs are each answered after
    700ms (2.1s in all). Each attempt gets its own deadlines, so none from an earlier exchange
    fires on a later one. (700 ms of room for a loaded machine.)"""
    def handler(conn: socket.socket, index: int) -> None:
        buf = b""
        for i in range(3):
            got = recv_head(conn, buf)
            if got is None:
                return
            buf = got[1]
            time.sleep(0.7)  # the backend's latency under test
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % i)
        recv_all(conn)

    srv = tcp_server(handler)
    port = free_port()
    core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(backend_request="1400ms", request="1800ms")))],
                [cluster("b", srv.address)], limits=IDLE), cpus=ONE)
    with Conn(port) as conn:
        conn.send(b"".join(build_request("GET", f"/{i}") for i in range(3)))
        assert [conn.read_response().body for _ in range(3)] == [b"0", b"1", b"2"]


def test_interim_response_with_connection_close_then_final(core, tcp_server) -> None:
    """An upstream sends a 103 carrying `Connection: close` (hop-by-hop, stripped from the 1xx
    the client sees), then its 200. A close on an interim response does not end the exchange:
    the final 200 reaches the client, as HAProxy relays 103 + 200."""
    srv = tcp_server(scripted_upstream([
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: close\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"]))
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE)
    with Conn(port) as conn:
        r = conn.request("GET", "/")
        assert (r.status, r.body) == (200, b"ok")


def test_drain_deadline_resets_both_sides_of_an_open_websocket_tunnel(core, tcp_server) -> None:
    """A WebSocket tunnel cut at the drain deadline is reset on both sides, as a TCP relay is.
    The client reads a reset, and so does the upstream: a clean EOF would look as if the client
    had finished its stream."""
    upstream_saw: list[str] = []
    done = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        try:
            while True:
                d = conn.recv(65536)
                if not d:
                    upstream_saw.append("eof")
                    break
                conn.sendall(d)
        except ConnectionResetError:
            upstream_saw.append("reset")
        done.set()

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([http_listener(port, rule("ws", "w"))], [cluster("w", srv.address)]), cpus=ONE)
    with Conn(port) as ws:
        ws.send(UPGRADE)
        assert ws.read_response().status == 101
        ws.send(b"frame")
        assert recv_exact(ws, 5) == b"frame"
        c.drain(200)
        wait_for(lambda: c.running_workers() == 0, 5, "the worker to exit at the drain deadline")
        with pytest.raises((ConnectionResetError, Closed)):  # the client side is reset
            ws._fill()
    assert done.wait(5)
    assert upstream_saw == ["reset"], f"the upstream side of the cut tunnel saw {upstream_saw}"
