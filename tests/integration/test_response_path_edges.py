"""The response path (rl_http.c on_up_data / resp_on_*, rl_http_up.c pooling,
rl_http_resp.c head rewrite) with raw backends that write exact bytes: early responses before
the request body ends, HEAD/204/304 framing, stray bytes after a response and pooling, 1xx
sequences split across reads, heads split one byte per send, long status/header lines,
Connection: close and HTTP/1.0 upstreams, chunk extensions and trailers, a cut mid-chunk, slow
clients. After each exchange the client connection (when kept alive) must serve the next
request, and the worker gauges must return to zero."""
from __future__ import annotations

import socket
import threading
import time
from typing import Callable

import pytest

from ringlane_sidecar.config.model import Filter, Header, HeaderModifier

from .backends import Reader, Request, read_request, recv_head
from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(60)


# ---- helpers ----

Responder = Callable[[socket.socket, Request, int], bool]


def scripted(respond: Responder):  # type: ignore[no-untyped-def]
    """A raw keep-alive backend handler: reads each request (head and body), then
    respond(conn, req, n) writes exact bytes (n: index of the request on that connection);
    returning False ends the connection (FIN)."""
    def handler(conn: socket.socket, index: int) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r = Reader(conn)
        n = 0
        while True:
            try:
                req = read_request(r, conn, index)
            except EOFError:
                return
            if req is None:
                return
            keep = respond(conn, req, n)
            n += 1
            if not keep:
                return
    return handler


def trickle(conn: socket.socket, data: bytes, step: int = 1) -> None:
    """Writes data `step` bytes per send with a short pause, so the proxy sees many receives."""
    for i in range(0, len(data), step):
        conn.sendall(data[i:i + step])
        time.sleep(0.0005)


def ok(body: bytes = b"next") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def one_worker(core, port: int, address: str, rules=None, **cfg_kw):  # type: ignore[no-untyped-def]
    return core(config([http_listener(port, *(rules or [rule("all", "b")]))], [cluster("b", address)], **cfg_kw),
                cpus=[0])


def gauges(c):  # type: ignore[no-untyped-def]
    t = list(c.totals())
    return (sum(x.conns_active for x in t), sum(x.upstream_conns_active for x in t),
            sum(x.upstream_conns_idle for x in t))


def wait_zero(c, pooled: int | None = None) -> None:  # type: ignore[no-untyped-def]
    """No client connection left; every upstream connection left is idle in the pool (exactly
    `pooled` of them when given)."""
    def done() -> bool:
        a, ua, ui = gauges(c)
        return a == 0 and ua == ui and (pooled is None or ui == pooled)
    try:
        wait_for(done, 5, f"gauges to settle (pooled={pooled})")
    except AssertionError:
        raise AssertionError(f"gauges (conns_active, upstream_active, upstream_idle) = {gauges(c)}, "
                             f"expected (0, n, n) with n={pooled}") from None
    a, ua, ui = gauges(c)
    assert a == 0 and ua == ui, (a, ua, ui)


def read_raw_until(conn: Conn, marker: bytes) -> bytes:
    while marker not in conn.buf:
        conn._fill()
    i = conn.buf.index(marker) + len(marker)
    out, conn.buf = conn.buf[:i], conn.buf[i:]
    return out


# ==== early responses (before the request body is fully sent) ====

def test_early_401_with_keepalive_upstream_closes_client_with_connection_close(core, tcp_server) -> None:
    """Upstream answers 401 (Content-Length, keep-alive, no Connection: close) after reading
    only the head of a 256 KiB POST, then keeps draining. The client (keep-alive) must get the
    401 marked Connection: close, and then an orderly close once it finishes its body (not a
    reset, not a hang); the half-fed upstream connection must not be pooled."""
    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\nWWW-Authenticate: Basic\r\n\r\ndenied")
        while conn.recv(1 << 16):
            pass

    be = tcp_server(handler)
    port = free_port()
    c = one_worker(core, port, be.address)
    body = b"x" * (256 << 10)
    with Conn(port, timeout=5) as conn:
        conn.send(build_request("POST", "/up", [("Content-Length", str(len(body)))]))
        conn.send(body[:16 << 10])
        r = conn.read_response()
        assert r.status == 401 and r.body == b"denied"
        assert (r.header("connection") or "").lower() == "close", r.headers
        try:
            conn.send(body[16 << 10:])
        except OSError:
            pass
        assert conn.at_eof(6), "the connection stayed open after a Connection: close response"
    wait_zero(c, pooled=0)


def test_early_response_head_then_body_then_rest_of_response(core, tcp_server) -> None:
    """The upstream sends an early response head, then reads the whole body, then sends the
    rest of its response body. The client finished its body between the two: the response is
    complete and correct, says Connection: close (decided at the head) and the client
    connection closes cleanly after it."""
    go = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        got = recv_head(conn)
        if got is None:
            return
        head, rest = got
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
        need = 100000 - len(rest)
        while need > 0:
            b = conn.recv(1 << 16)
            if not b:
                return
            need -= len(b)
        go.wait(5)
        conn.sendall(b"-half")
        while conn.recv(1 << 16):
            pass

    be = tcp_server(handler)
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=5) as conn:
        conn.send(build_request("POST", "/up", [("Content-Length", "100000")]))
        head = read_raw_until(conn, b"\r\n\r\n")
        assert b"200 OK" in head
        conn.send(b"y" * 100000)
        go.set()
        body = conn._exact(10)
        assert body == b"first-half"
        assert b"connection: close" in head.lower(), head
        assert conn.at_eof(6)
    wait_zero(c)


def test_early_413_to_expect_continue_keeps_sync_or_closes(core, tcp_server) -> None:
    """Expect: 100-continue, and the upstream answers 413 at once without a 100 and without
    reading the body; the client never sends the body (RFC 9110 10.1.1 allows it). Either the
    proxy says Connection: close and closes, or it keeps the connection and the next request on
    it is answered correctly (the body never sent must not be expected)."""
    def handler(conn: socket.socket, index: int) -> None:
        got = recv_head(conn)
        if got is None:
            return
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig")
        while conn.recv(1 << 16):
            pass

    be = tcp_server(handler)
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=8) as conn:
        conn.send(build_request("PUT", "/up", [("Content-Length", "50000"), ("Expect", "100-continue")]))
        r = conn.read_response()
        assert r.status == 413 and r.body == b"big"
        if (r.header("connection") or "").lower() == "close":
            t0 = time.monotonic()
            assert conn.at_eof(8)
            # a client that honours Expect never sends the body: the proxy's lingering close must
            # not hold it (nor it the proxy) for long after the response
            assert time.monotonic() - t0 < 6
        else:
            conn.send(build_request("GET", "/next"))
            assert conn.read_response().status != 413
    wait_zero(c, pooled=0)


# ==== HEAD responses ====

@pytest.mark.parametrize("framing", [b"Content-Length: 12345\r\n", b"Transfer-Encoding: chunked\r\n", b""])
def test_head_response_without_body_keeps_both_sides_in_sync(core, tcp_server, framing) -> None:
    """A HEAD answered with Content-Length / Transfer-Encoding (or neither) and no body: the
    client connection stays in sync (the next GET gets its own answer) and the same upstream
    connection serves it (pooled after the HEAD)."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if req.method == "HEAD":
            conn.sendall(b"HTTP/1.1 200 OK\r\n" + framing + b"X-N: %d\r\n\r\n" % n)
        else:
            conn.sendall(ok(b"get %d" % n))
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        r = conn.request("HEAD", "/h")
        assert r.status == 200 and r.header("x-n") == "0"
        if not framing:
            # RFC 9112 6.3: a HEAD response always ends at its head, so no reason to close
            assert (r.header("connection") or "").lower() != "close", r.headers
        r2 = conn.request("GET", "/g")
        assert r2.body == b"get 1", r2
        r3 = conn.request("HEAD", "/h")
        assert r3.header("x-n") == "2"
    assert be.accepted == 1, f"{be.accepted} upstream connections for one client"
    wait_zero(c, pooled=1)


# ==== 204 with a declared body ====

@pytest.mark.parametrize("framing,stray", [
    (b"Content-Length: 8\r\n", b"smuggled"),
    (b"Transfer-Encoding: chunked\r\n", b"8\r\nsmuggled\r\n0\r\n\r\n"),
], ids=["content_length", "chunked"])
def test_204_declaring_a_body_is_not_pooled(core, tcp_server, framing, stray) -> None:
    """A 204 that declares a body (RFC 9110 8.6/6.1: a server MUST NOT send Content-Length or
    Transfer-Encoding in a 204) and sends it in a later segment. The proxy ends the 204 at its
    head and does not reuse the connection: pooled, the stray bytes would become the start of the
    answer to the client's next request (a 502 for a request the backend answered)."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if req.target == "/first":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n" + framing + b"\r\n")
            time.sleep(0.05)  # the backend's body write, a moment later
            conn.sendall(stray)
        else:
            conn.sendall(ok(b"real"))
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/first")
        assert r.status == 204 and r.body == b""
        r2 = conn.request("GET", "/second")
        assert r2.status == 200 and r2.body == b"real", r2
    wait_zero(c)


# ==== bytes after a complete response ====

@pytest.mark.parametrize("extra", [b"GARBAGE\r\n", ok(b"smuggled")], ids=["garbage", "second_response"])
def test_bytes_after_a_complete_response_close_the_pooled_connection(core, tcp_server, extra) -> None:
    """The upstream sends a complete response, then (a separate segment) garbage or a whole
    unsolicited second response. The idle pooled connection must be closed on those bytes,
    and the next request (after that) goes on a new connection and gets its own answer."""
    sent_extra = threading.Event()

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if req.target == "/first":
            conn.sendall(ok(b"first"))
            time.sleep(0.05)
            conn.sendall(extra)
            sent_extra.set()
        else:
            conn.sendall(ok(b"real"))
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        assert conn.request("GET", "/first").body == b"first"
        wait_for(sent_extra.is_set, 3, "the extra bytes")
        wait_for(lambda: gauges(c)[1] == 0, 3, "the upstream connection that sent stray bytes to close")
        r = conn.request("GET", "/second")
        assert r.status == 200 and r.body == b"real", r
    assert be.accepted == 2
    wait_zero(c, pooled=1)


# ==== 1xx sequences ====

INTERIMS = (b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 102 Processing\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nLink: </b.js>; rel=preload\r\n\r\n")


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_several_1xx_split_across_reads_then_final(core, tcp_server, step) -> None:
    """100, 102 and 103 (with headers) then a chunked 200, written `step` bytes per send: the
    1.1 client gets the three interim heads in order (103 with both Link lines) and the final
    response byte-exact; the next request on the connection reuses the upstream connection."""
    final = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if n == 0:
            trickle(conn, INTERIMS + final, step)
        else:
            conn.sendall(ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        conn.send(build_request("GET", "/"))
        seen = []
        for _ in range(3):
            st, _, hs, _ = conn.read_head()
            seen.append((st, [v for k, v in hs if k.lower() == "link"]))
        assert seen == [(100, []), (102, []), (103, ["</a.css>; rel=preload", "</b.js>; rel=preload"])], seen
        raw = read_raw_until(conn, b"0\r\n\r\n")
        assert raw.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), raw
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw
        assert conn.request("GET", "/after").body == b"next"
    assert be.accepted == 1
    wait_zero(c, pooled=1)


@pytest.mark.parametrize("step", [1, 4096])
def test_several_1xx_to_http10_client_split_across_reads(core, tcp_server, step) -> None:
    """The same 1xx sequence to an HTTP/1.0 client: none of it reaches the client (RFC 9110
    15.2), only the final response, intact."""
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        trickle(conn, INTERIMS + final, step)
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = conn.read_to_close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    assert data.endswith(b"\r\n\r\nhello"), data
    wait_zero(c)


@pytest.mark.parametrize("interim", [b"HTTP/1.1 150 Whatever\r\n\r\n", b"HTTP/1.1 199\r\nX-I: 1\r\n\r\n"])
def test_unknown_1xx_then_final(core, tcp_server, interim) -> None:
    """An unregistered 1xx (150, 199 without a reason) is interim: relayed (or dropped), then
    the final response; the connection stays in sync."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(interim + ok(b"final") if n == 0 else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        r = conn.request("GET", "/")
        assert r.status == 200 and r.body == b"final"
        assert conn.request("GET", "/after").body == b"next"
    wait_zero(c, pooled=1)


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200", b"HTTP/1.1 200 ", b"HTTP/1.0 200"])
def test_status_line_without_reason(core, tcp_server, status_line) -> None:
    """Status lines without a reason phrase (RFC 9112 4: the reason may be empty; some servers
    drop the space too): relayed (as HTTP/1.1), body intact, connection in sync."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        keep = b"Connection: keep-alive\r\n" if status_line.startswith(b"HTTP/1.0") else b""
        conn.sendall(status_line + b"\r\n" + keep + b"Content-Length: 2\r\n\r\nok" if n == 0 else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        conn.send(build_request("GET", "/"))
        line = conn._line()
        assert line.startswith(b"HTTP/1.1 200"), line
        conn.buf = line + b"\r\n" + conn.buf
        r = conn.read_response()
        assert r.status == 200 and r.body == b"ok"
        assert conn.request("GET", "/after").body == b"next"
    wait_zero(c, pooled=1)


# ==== heads split one byte per send ====

def test_response_head_one_byte_per_send(core, tcp_server) -> None:
    """A whole response (head with several headers, Content-Length body) one byte per send:
    forwarded intact; the next request on the connection reuses the upstream connection."""
    resp = (b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-Long: " + b"v" * 300 + b"\r\nContent-Length: 11\r\n\r\nhello world")

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if n == 0:
            trickle(conn, resp, 1)
        else:
            conn.sendall(ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        r = conn.request("GET", "/")
        assert r.status == 200 and r.body == b"hello world" and r.header("x-long") == "v" * 300
        assert conn.request("GET", "/after").body == b"next"
    assert be.accepted == 1
    wait_zero(c, pooled=1)


def test_response_head_one_byte_per_send_with_a_filter(core, tcp_server) -> None:
    """As above on a rule with a response header filter (the head is rewritten from headbuf)."""
    resp = b"HTTP/1.1 200 OK\r\nX-Drop: 1\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc"

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if n == 0:
            trickle(conn, resp, 1)
        else:
            conn.sendall(ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    flt = Filter(response_header_modifier=HeaderModifier(set=(Header("X-Set", "s"),), remove=("X-Drop",)))
    c = one_worker(core, port, be.address, rules=[rule("all", "b", filters=[flt])])
    with Conn(port) as conn:
        r = conn.request("GET", "/")
        assert r.status == 200 and r.body == b"abc"
        assert r.header("x-drop") is None and r.header("x-set") == "s", r.headers
        assert conn.request("GET", "/after").body == b"next"
    wait_zero(c, pooled=1)


# ==== long status reason / header lines ====

@pytest.mark.parametrize("where", ["reason", "header"])
@pytest.mark.parametrize("size,ok_expected", [(60000, True), (70000, False)])
def test_long_reason_or_header_line(core, tcp_server, where, size, ok_expected) -> None:
    """A status reason or a header value of `size` bytes: below the 64 KiB response-head limit
    it is forwarded whole; above it the client gets a 502 (not a cut head, not a hang). The
    client connection then serves the next request."""
    long = b"r" * size
    head = (b"HTTP/1.1 200 " + long + b"\r\nContent-Length: 2\r\n\r\nok" if where == "reason"
            else b"HTTP/1.1 200 OK\r\nX-Big: " + long + b"\r\nContent-Length: 2\r\n\r\nok")

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(head if req.target == "/big" else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        r = conn.request("GET", "/big")
        if ok_expected:
            assert r.status == 200 and r.body == b"ok"
            assert (r.reason if where == "reason" else r.header("x-big")) == long.decode()
        else:
            assert r.status == 502, (r.status, r.headers)
        if (r.header("connection") or "").lower() != "close":
            assert conn.request("GET", "/after").body == b"next"
    wait_zero(c)


def test_many_response_headers_removed_by_a_filter(core, tcp_server) -> None:
    """3000 Set-Cookie lines that the rule's filter removes (the drop array grows): the client
    gets none of them, the rest intact, and the connection stays usable."""
    cookies = b"".join(b"Set-Cookie: c%d=v\r\n" % i for i in range(3000))
    head = b"HTTP/1.1 200 OK\r\nX-Keep: 1\r\n" + cookies + b"X-Tail: t\r\nContent-Length: 2\r\n\r\nok"

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(head if n == 0 else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    flt = Filter(response_header_modifier=HeaderModifier(remove=("Set-Cookie",)))
    c = one_worker(core, port, be.address, rules=[rule("all", "b", filters=[flt])])
    with Conn(port) as conn:
        r = conn.request("GET", "/")
        assert r.status == 200 and r.body == b"ok"
        assert r.header_all("set-cookie") == [] and r.header("x-keep") == "1" and r.header("x-tail") == "t"
        assert conn.request("GET", "/after").body == b"next"
    wait_zero(c, pooled=1)


# ==== Connection: close / HTTP/1.0 upstreams ====

def test_upstream_connection_close_with_keepalive_client(core, tcp_server) -> None:
    """The upstream answers with Connection: close (Content-Length) and closes. The client
    connection either gets Connection: close and is closed after the body, or stays alive and
    its next request is answered (on a new upstream connection); never a dead keep-alive."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nclose")
        return False

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        for i in range(3):
            r = conn.request("GET", f"/{i}")
            assert r.status == 200 and r.body == b"close"
            if (r.header("connection") or "").lower() == "close":
                assert conn.at_eof()
                break
    wait_zero(c, pooled=0)


@pytest.mark.parametrize("client_version", ["1.1", "1.0"])
def test_http10_upstream_without_length(core, tcp_server, client_version) -> None:
    """An HTTP/1.0 upstream with no Content-Length: the body ends at its close. A 1.1 client
    gets HTTP/1.1 + Connection: close and the body up to EOF; a 1.0 client the body up to EOF."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        conn.sendall(b"part1-")
        conn.sendall(b"part2")
        return False

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        conn.send(f"GET / HTTP/{client_version}\r\nHost: x\r\n\r\n".encode())
        data = conn.read_to_close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    assert body == b"part1-part2", data
    if client_version == "1.1":
        assert b"connection: close" in head.lower(), head
    wait_zero(c, pooled=0)


@pytest.mark.parametrize("keepalive", [False, True])
def test_http10_upstream_with_length(core, tcp_server, keepalive) -> None:
    """An HTTP/1.0 upstream with Content-Length; with Connection: keep-alive it keeps the
    connection (pooled and reused), without it it closes (a new connection each time). The 1.1
    keep-alive client is served on one connection either way."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.0 200 OK\r\n" + (b"Connection: keep-alive\r\n" if keepalive else b"")
                     + b"Content-Length: 4\r\n\r\nv1.0")
        return keepalive

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        for _ in range(3):
            r = conn.request("GET", "/")
            assert r.status == 200 and r.body == b"v1.0" and (r.header("connection") or "") != "close"
    assert be.accepted == (1 if keepalive else 3)
    wait_zero(c, pooled=1 if keepalive else 0)


# ==== chunked: extensions, trailers, cuts ====

CHUNKED_BODY = (b"5;ext=1\r\nhello\r\n"
                b"3;a;b=\"q\"\r\nabc\r\n"
                b"0;last=yes\r\n"
                b"X-Trailer: v\r\nX-Other: w\r\n\r\n")


@pytest.mark.parametrize("step", [1, 5, 65536])
def test_chunked_response_with_extensions_and_trailers_is_byte_exact(core, tcp_server, step) -> None:
    """A chunked response with chunk extensions and a trailer section, written `step` bytes per
    send: the client gets the body bytes exactly as sent (framing, extensions and trailers), and
    the connection (client and upstream) goes on."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if n == 0:
            trickle(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trailer\r\n\r\n"
                    + CHUNKED_BODY, step)
        else:
            conn.sendall(ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        conn.send(build_request("GET", "/"))
        read_raw_until(conn, b"\r\n\r\n")
        raw = read_raw_until(conn, b"X-Other: w\r\n\r\n")
        assert raw == CHUNKED_BODY, raw
        assert conn.request("GET", "/after").body == b"next"
    assert be.accepted == 1
    wait_zero(c, pooled=1)


@pytest.mark.parametrize("cut", [
    b"5\r\nhel",                 # mid chunk data
    b"5\r\nhello\r\n",           # between chunks
    b"5\r\nhello\r\n0\r\n",      # after the last chunk, before the end of the trailer section
    b"5\r\nhello\r\n0\r\nX-T: 1\r\n",  # mid trailer section
], ids=["mid_data", "between_chunks", "after_last_chunk", "mid_trailers"])
def test_upstream_close_mid_chunked_body_resets_the_client(core, tcp_server, cut) -> None:
    """The upstream closes (FIN) inside a chunked body: the client must see a reset (or at
    least no clean end of the chunked message), never '0\\r\\n\\r\\n' followed by a FIN that
    makes a truncated body look complete."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + cut)
        return False

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        conn.send(build_request("GET", "/"))
        data = b""
        reset = False
        try:
            while True:
                b = conn.sock.recv(65536)
                if not b:
                    break
                data += b
        except ConnectionResetError:
            reset = True
    body = data.partition(b"\r\n\r\n")[2]
    assert not body.endswith(b"0\r\n\r\n") or body != cut, data
    assert reset, f"clean FIN after a cut chunked body: {data!r}"
    wait_zero(c, pooled=0)


def test_upstream_close_mid_content_length_body_after_a_filter_rewrite(core, tcp_server) -> None:
    """With a rewritten head (response filter), the upstream closes 3 bytes short of its
    Content-Length: the client sees a reset, not a FIN."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nseven77")
        return False

    be = tcp_server(scripted(respond))
    port = free_port()
    flt = Filter(response_header_modifier=HeaderModifier(set=(Header("X-Set", "s"),)))
    c = one_worker(core, port, be.address, rules=[rule("all", "b", filters=[flt])])
    with Conn(port) as conn:
        conn.send(build_request("GET", "/"))
        with pytest.raises(ConnectionResetError):
            while conn.sock.recv(65536):
                pass
    wait_zero(c, pooled=0)


# ==== slow client ====

def test_slow_client_large_response_upstream_pooled_and_reused(core, tcp_server) -> None:
    """8 MiB response to a client with a small receive buffer that reads slowly: the client gets
    every byte; the upstream connection, done long before the client, is pooled and reused by the
    next request on the same client connection; gauges settle."""
    size = 8 << 20
    big = bytes(range(256)) * (size // 256)

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + big if n == 0 else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=20, rcvbuf=16384, read_size=8192) as conn:
        conn.send(build_request("GET", "/big"))
        conn.read_head()
        got = bytearray()
        while len(got) < size:
            got += conn._exact(min(65536, size - len(got)))
            if len(got) == 1 << 20:  # the upstream wrote everything into the proxy by now, maybe
                time.sleep(0.2)
        assert bytes(got) == big
        assert conn.request("GET", "/after").body == b"next"
    assert be.accepted == 1
    wait_zero(c, pooled=1)


def test_pipelined_request_behind_a_slow_large_response_reuses_the_upstream(core, tcp_server) -> None:
    """Twelve rounds of a 4 MiB response read slowly with a GET pipelined behind it, on one client
    connection: each pipelined GET is answered in order and, both responses being complete and
    keep-alive, ONE upstream connection serves everything and stays pooled. On epoll the
    pipelined GET's send completes in the same turn as its reply can be read: the completion
    must come first, or the reply finds the request still queued and the connection is closed
    instead of pooled (rl_engine_epoll.c on_sock_event)."""
    size = 4 << 20
    big = b"z" * size

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + big if req.target == "/big" else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=20, rcvbuf=16384, read_size=8192) as conn:
        for _ in range(12):
            conn.send(build_request("GET", "/big") + build_request("GET", "/small"))
            r = conn.read_response()
            assert r.status == 200 and len(r.body) == size
            assert conn.read_response().body == b"next"
    wait_zero(c)
    assert be.accepted == 1, f"{be.accepted} upstream connections for 24 keep-alive exchanges"
    wait_zero(c, pooled=1)
