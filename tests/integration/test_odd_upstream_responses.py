"""Unusual upstream responses and client HTTP versions (RFC 9110 / 9112, compared with what
nginx and HAProxy do), from a review pass. Failed when written: an HTTP/1.0 upstream's
Transfer-Encoding response was pooled; "HTTP/2.0" and "HTTP/0.9" status lines were relayed; an
HTTP/1.0 Upgrade request was switched to a tunnel (the client got tunnel bytes without a status
line). The others pin behaviour that held. (A chunked response to an HTTP/1.0 client:
test_http10_chunked_response.py.)"""
from __future__ import annotations

import socket

import pytest

from .backends import Request
from .helpers import Conn, build_request, free_port
from .test_response_path_edges import gauges, ok, one_worker, scripted, wait_zero

pytestmark = pytest.mark.timeout(60)

def split_head(raw: bytes) -> tuple[bytes, dict[str, list[str]], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete head: {raw!r}"
    lines = head.split(b"\r\n")
    fields: dict[str, list[str]] = {}
    for line in lines[1:]:
        k, _, v = line.decode("latin-1").partition(":")
        fields.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], fields, body


# ==== HTTP/1.0 upstream that uses chunked ====

def test_http10_upstream_with_transfer_encoding_is_not_pooled(core, tcp_server) -> None:
    """RFC 9112 6.1: "a recipient that receives an HTTP/1.0 message containing a
    Transfer-Encoding header field MUST treat the message as if the framing is faulty, even if
    a Content-Length is present, and close the connection after processing the message." An
    HTTP/1.0 upstream answering `Connection: keep-alive` + chunked must not have its connection
    reused for the next request."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n" if req.target == "/a" else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/a")
        assert r.status == 200 and r.body == b"hello", r
        assert conn.request("GET", "/b").body == b"next"
    wait_zero(c)
    assert be.accepted == 2, "the faulty-framed HTTP/1.0 upstream connection was reused for /b"


# ==== close-delimited response to a keep-alive (pipelining) client ====

@pytest.mark.parametrize("version", ["1.1", "1.0-keepalive"])
def test_close_delimited_response_with_pipelined_request_behind_it(core, tcp_server, version) -> None:
    """The upstream answers the first of two pipelined requests without Content-Length or
    chunked (the body ends at its FIN). The client gets that body whole, a response that says
    Connection: close (never keep-alive), then EOF; the second request is not answered with
    bytes of the first body (nor anything else)."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if req.target == "/first":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")  # body that looks like a response
            return False
        conn.sendall(ok(b"second"))
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    v = "1.1" if version == "1.1" else "1.0"
    extra = "Connection: keep-alive\r\n" if version != "1.1" else ""
    req = lambda p: f"GET {p} HTTP/{v}\r\nHost: t\r\n{extra}\r\n".encode()  # noqa: E731
    with Conn(port, timeout=3) as conn:
        conn.send(req("/first") + req("/second"))
        raw = conn.read_to_close()
    line, fields, body = split_head(raw)
    assert line.startswith(b"HTTP/1.1 200"), raw
    assert body == b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled", raw
    assert [x.lower() for x in fields.get("connection", [])] == ["close"] or version != "1.1", raw
    assert "keep-alive" not in ",".join(fields.get("connection", [])).lower(), raw
    wait_zero(c, pooled=0)


# ==== Transfer-Encoding lists ====

def test_gzip_chunked_response_is_chunk_framed_and_pooled(core, tcp_server) -> None:
    """`Transfer-Encoding: gzip, chunked`: chunked is last, so the body is chunk-framed; the
    client gets it byte-exact with its Transfer-Encoding, the connection stays in sync and the
    upstream connection is reused."""
    body = b"a\r\n0123456789\r\n0\r\n\r\n"

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + body if n == 0 else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/g")
        assert r.status == 200 and r.body == b"0123456789" and r.header("transfer-encoding") == "gzip, chunked", r
        assert conn.request("GET", "/after").body == b"next"
    assert be.accepted == 1
    wait_zero(c, pooled=1)


@pytest.mark.parametrize("te", [b"chunked, gzip", b"gzip", b"identity"])
def test_transfer_encoding_without_final_chunked_is_close_delimited(core, tcp_server, te) -> None:
    """RFC 9112 6.3 (item 4): a response whose Transfer-Encoding does not end in chunked is
    read until the upstream closes. The client gets everything up to the FIN (including bytes
    that look like chunk framing or a second response), Connection: close, then EOF; the
    upstream connection is not pooled. A 502 is also acceptable (HAProxy)."""
    payload = b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n" + payload)
        return False

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        conn.send(build_request("GET", "/x") + build_request("GET", "/y"))
        raw = conn.read_to_close()
    line, fields, body = split_head(raw)
    if line.startswith(b"HTTP/1.1 502"):
        return
    assert line.startswith(b"HTTP/1.1 200"), raw
    assert [x.lower() for x in fields.get("connection", [])] == ["close"], raw
    assert body == payload, raw
    wait_zero(c, pooled=0)


# ==== framing conflicts ====

@pytest.mark.parametrize("resp", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5, 7\r\n\r\nhello",
], ids=["cl_then_te", "te_then_cl", "two_cl", "cl_list"])
def test_conflicting_framing_is_not_reused(core, tcp_server, resp) -> None:
    """RFC 9112 6.3: CL with TE: TE wins and the connection must be closed after the response;
    two different Content-Length values are unrecoverable (502). Either way the upstream
    connection must not be reused, and the client gets either a clean 502 or the chunked body
    followed by a close/in-sync connection."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(resp if req.target == "/x" else ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/x")
        assert r.status == 502 or (r.status == 200 and r.body == b"hello"), r
        second = (r.header("connection") or "").lower() != "close"
        if second:
            assert conn.request("GET", "/after").body == b"next"
    wait_zero(c)
    if second:
        assert be.accepted == 2, f"the connection that sent conflicting framing was reused: {be.accepted}"
    else:
        assert gauges(c)[2] == 0, f"the connection that sent conflicting framing was pooled: {gauges(c)}"


# ==== status line oddities ====

@pytest.mark.parametrize("line", [b"HTTP/2.0 200 OK", b"HTTP/1.2 200 OK", b"HTTP/0.9 200 OK", b"HTTP/3 200 OK",
                                  b"http/1.1 200 OK"])
def test_non_http11_status_line_is_a_502(core, tcp_server, line) -> None:
    """A response on an HTTP/1.x connection with a version other than 1.0/1.1 is not a valid
    HTTP/1.x message (RFC 9112 2.3: HTTP/2 is not carried in this syntax; the name is
    case-sensitive). HAProxy and nginx answer 502. Relaying it re-labelled as HTTP/1.1, or
    treating it as 1.x framing, hides a broken upstream."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(line + b"\r\nContent-Length: 2\r\n\r\nok" if req.target == "/odd" else ok())
        return req.target != "/odd"

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        conn.send(build_request("GET", "/odd"))
        first = conn._line()
        assert first.startswith(b"HTTP/1.1 502"), f"{line!r} relayed as {first + b'|' + conn.buf!r}"
    with Conn(port, timeout=3) as conn:
        assert conn.request("GET", "/after").body == b"next"
    wait_zero(c)


# ==== 1xx edge cases ====

def test_1xx_with_hop_by_hop_fields_to_http10_client_is_dropped(core, tcp_server) -> None:
    """A 103 carrying Connection: X-Hop (the head-rewrite path) to an HTTP/1.0 client: none of
    it reaches the client, only the final response."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n"
                     b"HTTP/1.1 100 Continue\r\nConnection: close\r\n\r\n" + ok(b"final"))
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        conn.send(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        raw = conn.read_to_close()
    assert raw.startswith(b"HTTP/1.1 200"), raw
    assert raw.endswith(b"\r\n\r\nfinal") and raw.count(b"HTTP/1.1") == 1, raw
    wait_zero(c)


def test_1xx_then_close_delimited_final_to_keepalive_client(core, tcp_server) -> None:
    """103 then a final 200 with no length (ended by FIN): the client gets the 103, the 200 with
    Connection: close and the whole body, then EOF."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\nbody-to-eof")
        return False

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        conn.send(build_request("GET", "/"))
        st, _, _, _ = conn.read_head()
        assert st == 103
        r = conn.read_response()
        assert r.status == 200 and r.body == b"body-to-eof", r
        assert (r.header("connection") or "").lower() == "close", r.headers
    wait_zero(c, pooled=0)


def test_101_with_upgrade_headers_to_a_request_without_upgrade_is_502_and_not_pooled(core, tcp_server) -> None:
    """A 101 with Upgrade + Connection: upgrade to a plain GET: 502, the connection (now in an
    unknown protocol) is not pooled, and the client connection stays usable (or is closed)."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if req.target == "/x":
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                         + ok(b"smuggled"))
        else:
            conn.sendall(ok())
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/x")
        assert r.status == 502, r
        if (r.header("connection") or "").lower() != "close":
            assert conn.request("GET", "/after").body == b"next"
    wait_zero(c)


# ==== HEAD / bodyless to HTTP/1.0 client ====

def test_head_with_chunked_to_http10_client(core, tcp_server) -> None:
    """HEAD answered `Transfer-Encoding: chunked` (no body) to an HTTP/1.0 keep-alive client:
    the next request on the connection is answered in sync."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if req.method == "HEAD":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else:
            conn.sendall(ok(b"get"))
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        conn.send(b"HEAD / HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        r = conn.read_response(head=True)
        assert r.status == 200
        if (r.header("connection") or "").lower() == "keep-alive":
            conn.send(b"GET / HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
            assert conn.read_response().body == b"get"
    wait_zero(c)


# ==== upstreams that say close (or 1.0 without keep-alive) but leave the socket open ====

@pytest.mark.parametrize("resp", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nfirst",
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 5\r\n\r\nfirst",
], ids=["close_cl", "close_chunked", "http10_no_keepalive", "keepalive_and_close"])
def test_upstream_that_announced_close_is_never_reused(core, tcp_server, resp) -> None:
    """The upstream says its connection ends after this response (Connection: close, or HTTP/1.0
    without keep-alive) but does not close the socket yet. The proxy must not pool it (RFC 9112
    9.6: no further requests on it); the next request goes on a new connection."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(resp if req.target == "/a" else ok())
        return True  # keeps serving on the same connection: a reuse is only seen in be.accepted

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/a")
        assert r.status == 200 and r.body == b"first", r
        if (r.header("connection") or "").lower() != "close":
            assert conn.request("GET", "/b").body == b"next"
            assert be.accepted == 2, "the upstream connection that announced close was reused"
    wait_zero(c)
    if be.accepted == 1:
        assert gauges(c)[2] == 0, f"the upstream connection that announced close was pooled: {gauges(c)}"


# ==== Upgrade from an HTTP/1.0 client ====

def test_upgrade_from_http10_client_is_not_switched(core, tcp_server) -> None:
    """RFC 9110 7.8: "A server MUST ignore an Upgrade header field that is received in an
    HTTP/1.0 request". The proxy must not turn an HTTP/1.0 connection into a tunnel: it drops
    the Upgrade going up, or refuses a 101 to it (502). Whatever it does, the first bytes the
    client receives must be an HTTP status line."""
    seen: list[bytes] = []

    def handler(conn: socket.socket, index: int) -> None:
        from .backends import recv_head
        got = recv_head(conn)
        if got is None:
            return
        seen.append(got[0])
        if b"upgrade: websocket" in got[0].lower():
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                         b"tunnel-bytes")
        else:
            conn.sendall(ok(b"plain"))
        try:
            conn.recv(1)
        except OSError:
            pass

    be = tcp_server(handler)
    port = free_port()
    one_worker(core, port, be.address)
    with Conn(port, timeout=3) as conn:
        conn.send(b"GET /ws HTTP/1.0\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        try:
            got = conn.sock.recv(65536)
        except socket.timeout:
            got = b"<nothing within 3 s>"
    assert got.startswith(b"HTTP/1.1 ") and not got.startswith(b"HTTP/1.1 101"), (
        f"HTTP/1.0 Upgrade request: the client received {got!r}; upstream saw {seen!r}")
