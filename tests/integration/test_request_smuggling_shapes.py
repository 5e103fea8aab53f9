"""Request-side smuggling and desync between Ringlane and its upstream, from a review pass.
Failed when written: a Transfer-Encoding without chunked last reached a pooled upstream before
the 400 (and the 400 kept the connection open); an empty Transfer-Encoding went up with the
Content-Length beside it; RTSP/ICE request lines went up as HTTP/1.0; a pipelined request after
an HTTP/1.0 Upgrade was a 400; trailers and chunk extensions were unbounded; a body sent during
a retry backoff (Expect: 100-continue) was dropped. The rest pin shapes that held.

The invariant: the requests an upstream parses are exactly the requests the proxy routed and
answered, byte for byte in their bodies; a request the proxy refuses (400, 505...) never reaches
an upstream, and a message whose framing an upstream could read differently is refused.
Shapes already covered by test_framing_vs_haproxy.py / test_http_errors.py are not repeated."""
from __future__ import annotations

import socket
import threading

import pytest

from ringlane_sidecar.config.model import Limits, Retry

from .backends import Reply, TcpServer, digest_app, digest_of, recv_head
from .helpers import Conn, cluster, config, free_port, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(60)


def target_app(req) -> Reply:  # type: ignore[no-untyped-def]
    return Reply(200, f"{req.method} {req.target} {len(req.body)}".encode())


def one_worker(core, be_address: str, limits: Limits | None = None, r=None):  # type: ignore[no-untyped-def]
    """One worker (so a pooled upstream connection is the one the next request reuses)."""
    port = free_port()
    c = core(config([http_listener(port, r or rule("all", "b"))], [cluster("b", be_address)],
                    limits=limits or Limits(request_header_timeout="2s")), cpus=[0])
    return port, c


def seen_within(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    """Whether pred() becomes true within timeout (a negative check with a deadline)."""
    try:
        wait_for(pred, timeout, "condition")
        return True
    except AssertionError:
        return False


def expect_proxy_refusal(conn: Conn, statuses: tuple[int, ...]) -> None:
    r = conn.read_response()
    assert r.status in statuses and r.header("server") == "ringlane", (r.status, r.headers, r.body)
    assert conn.at_eof(3), "the connection stayed open after a refusal of a broken stream"


# ---- 1. a Transfer-Encoding llhttp refuses only after on_headers_complete ----

# llhttp 8.1 reports "Request has invalid Transfer-Encoding" (no chunked as final coding) from
# llhttp__after_headers_complete, i.e. after the proxy's on_headers_complete pause: by then the
# head was routed, built and queued on an upstream connection.
BAD_TE = ["gzip", "identity", "deflate", ",", "chunked;q=1"]


@pytest.mark.parametrize("te", BAD_TE)
def test_request_refused_for_its_transfer_encoding_never_reaches_a_pooled_upstream(core, http_backend, te) -> None:
    be = http_backend(target_app)
    port, c = one_worker(core, be.address)
    with Conn(port) as warm:  # leaves one idle pooled upstream connection on the only worker
        assert warm.request("GET", "/warm").status == 200
    wait_for(lambda: list(c.totals())[0].upstream_conns_idle == 1, 5, "the upstream connection to be pooled")
    with Conn(port) as conn:
        conn.send(b"POST /refused HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te.encode() + b"\r\n\r\n")
        r = conn.read_response()
        assert r.status in (400, 501) and r.header("server") == "ringlane", (r.status, r.headers, r.body)
        leaked = seen_within(lambda: any(r.target == "/refused" for r in be.requests), 1.5)
        assert not leaked, (f"the client got a 400, yet the upstream parsed and answered the request: "
                            f"{[(r.method, r.target, r.headers) for r in be.requests]}")
        assert c.cluster_stats()["b"]["requests"] == 1, "the refused request was sent to the cluster"
        # RFC 9112 6.3: 400 "and then close the connection"
        assert r.header("connection") == "close" and conn.at_eof(3), (
            f"the 400 for an unframeable request leaves the connection open: {r.headers}")


@pytest.mark.parametrize("te", ["gzip", ","])
def test_400_for_an_invalid_transfer_encoding_closes_the_connection(core, http_backend, te) -> None:
    """RFC 9112 6.3: 400 "and then close the connection". The 400 comes from parse_body (llhttp's
    error after the head), where respond_error sees a body-less request (no F_CHUNKED) that is not
    done: it neither closes nor says close, and waits for an end llhttp will never report. The
    pipelined request behind it is swallowed: no answer, no close, until the idle timeout."""
    be = http_backend(target_app)
    port, _ = one_worker(core, be.address)
    with Conn(port) as conn:
        conn.send(b"POST /refused HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te.encode() + b"\r\n\r\n"
                  b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        r = conn.read_response()
        assert r.status == 400 and r.header("server") == "ringlane", (r.status, r.headers)
        closed = conn.at_eof(4)
    assert r.header("connection") == "close" and closed, (
        f"400 without Connection: close ({r.headers}); connection closed within 4 s: {closed}")
    assert not any(q.target == "/next" for q in be.requests)


# ---- 2. an empty Transfer-Encoding field is forwarded (beside Content-Length) ----

def recording_server(tcp_server):  # type: ignore[no-untyped-def]
    """A raw upstream: keeps every byte per connection, answers each head it sees with a 200
    (Content-Length bodies are skipped when it can), closes at EOF."""
    got: dict[int, bytearray] = {}
    lock = threading.Lock()

    def handler(conn: socket.socket, index: int) -> None:
        buf = b""
        while True:
            h = recv_head(conn, buf)
            if h is None:
                return
            head, rest = h
            with lock:
                got.setdefault(index, bytearray()).extend(head + b"\r\n\r\n")
            cl = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length" and v.strip().isdigit():
                    cl = int(v.strip())
            while len(rest) < cl:
                d = conn.recv(65536)
                if not d:
                    return
                rest += d
            with lock:
                got[index].extend(rest[:cl])
            buf = rest[cl:]
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    srv = tcp_server(handler)
    return srv, got, lock


EMPTY_TE = {
    "empty_with_cl": b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\nContent-Length: 5\r\n\r\nhello",
    "spaces_with_cl": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding:   \r\n\r\nhello",
    "empty_alone": b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(EMPTY_TE))
def test_empty_transfer_encoding_field_is_refused_not_forwarded(core, tcp_server, case) -> None:
    """RFC 9112 6.3: a request with a Transfer-Encoding field whose final coding is not chunked
    gets a 400 and a close; with Content-Length it is also the CL+TE shape the proxy refuses
    everywhere else (HAProxy 2.6 answers 400 to all three). llhttp 8.1 ignores an empty value
    (no F_TRANSFER_ENCODING), so Ringlane frames the body by Content-Length alone and forwards
    the empty Transfer-Encoding line: an upstream that honours the field's presence (chunked, or
    'TE overrides CL') frames the body differently."""
    srv, got, lock = recording_server(tcp_server)
    port, _ = one_worker(core, srv.address)
    with Conn(port) as conn:
        conn.send(EMPTY_TE[case])
        r = conn.read_response()
    with lock:
        raw = b"||".join(bytes(v) for v in got.values())
    assert b"transfer-encoding" not in raw.lower(), (
        f"forwarded a request with a Transfer-Encoding field that has no chunked coding "
        f"(client got {r.status} {r.header('server')}): upstream saw {raw!r}")
    assert r.status == 400 and r.header("server") == "ringlane", (r.status, r.headers, raw)


# ---- 3. non-HTTP protocols in the request line ----

@pytest.mark.parametrize("line", [b"GET /a RTSP/1.0", b"OPTIONS * RTSP/1.0", b"SOURCE /a ICE/1.0"])
def test_request_line_with_a_non_http_protocol_is_not_rewritten_into_http(core, http_backend, line) -> None:
    """llhttp 8.1 also parses RTSP/1.0 and ICE/1.0 request lines (http_major 1); Ringlane checks
    only the major version and forwards them rewritten as HTTP/1.0 requests (HAProxy: 400)."""
    be = http_backend(target_app)
    port, c = one_worker(core, be.address)
    with Conn(port) as conn:
        conn.send(line + b"\r\nHost: x\r\nCSeq: 1\r\n\r\n")
        expect_proxy_refusal(conn, (400, 505))
    assert be.count == 0, [(r.method, r.target) for r in be.requests]


# ---- 4. Upgrade in an HTTP/1.0 request ----

def test_http10_upgrade_request_does_not_break_the_pipelined_request_after_it(core, http_backend) -> None:
    """RFC 9110 7.8: Upgrade in an HTTP/1.0 request is ignored. Ringlane does ignore it (drops it
    and serves the request, keep-alive), but llhttp still pauses with HPE_PAUSED_UPGRADE, which
    llhttp_resume does not clear: the next request on the connection is answered 400."""
    be = http_backend(target_app)
    port, _ = one_worker(core, be.address)
    with Conn(port) as conn:
        conn.send(b"GET /first HTTP/1.0\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
                  b"GET /second HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        first = conn.read_response()
        assert first.status == 200 and first.text == "GET /first 0", first
        ka = (first.header("connection") or "").lower()
        if ka != "keep-alive":  # the proxy announced a close: nothing more is owed
            assert conn.at_eof(3)
            return
        second = conn.read_response()
    assert (second.status, second.header("server"), second.text) == (200, None, "GET /second 0"), (
        f"the proxy kept the connection alive after the HTTP/1.0 upgrade request, then refused the "
        f"valid request behind it: {second.status} {second.headers} {second.body!r}")


# ---- 5. bytes that bypass every request size limit ----

BIG = 256 * 1024


@pytest.mark.parametrize("where", ["trailer", "chunk_extension"])
def test_trailer_and_chunk_extension_bytes_are_bounded(core, http_backend, where) -> None:
    """A chunked request's trailer section is a header section (RFC 9112 7.1.2) and chunk
    extensions are framing; neither is body data. Ringlane bounds heads by
    maxRequestHeaderBytes and bodies by maxRequestBodyBytes, but streams trailer and extension
    bytes upstream unbounded: 256 KiB of either passes a 64 KiB head limit and a 1 KiB body
    limit (HAProxy refuses a trailer section larger than its buffer)."""
    be = http_backend(digest_app)
    port, _ = one_worker(core, be.address, Limits(request_header_timeout="2s", max_request_header_bytes=65536,
                                                  max_request_body_bytes=1024))
    if where == "trailer":
        body = b"5\r\nhello\r\n0\r\n" + b"".join(b"X-T%d: %s\r\n" % (i, b"a" * 1000) for i in range(BIG // 1008)) + b"\r\n"
    else:
        body = b"5;x=" + b"a" * BIG + b"\r\nhello\r\n0\r\n\r\n"
    with Conn(port, timeout=10) as conn:
        try:
            conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused mid-send: what counts is what reached the upstream
        try:
            r = conn.read_response()
            status = (r.status, r.header("server"))
        except Exception as exc:  # noqa: BLE001 -- a reset is a refusal too
            status = (0, repr(exc))
    assert be.count == 0, (f"{len(body)} bytes of {where} reached the upstream past a 64 KiB head limit and a "
                           f"1 KiB body limit (client got {status})")


# ---- 6. a body sent while a 503 retry waits ----

def test_expect_continue_body_sent_during_a_503_retry_backoff_is_not_lost(core, tcp_server) -> None:
    """PUT with Expect: 100-continue; the first endpoint answers 503 before any 100 (no body byte
    went out, so the request may go again). The client, tired of waiting for the 100 (curl: 1 s),
    sends its body during the backoff: the body must reach the attempt that serves the request.
    Ringlane keeps a body for a retry only when retrying on connect-failure: here it parses the
    bytes and drops them (no upstream bound), then sends the head alone to the second attempt."""
    first_done = threading.Event()
    got_body: list[bytes] = []

    def handler(conn: socket.socket, index: int) -> None:
        h = recv_head(conn)
        if h is None:
            return
        if index == 0:
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            first_done.set()
            return
        body = h[1]
        conn.settimeout(4)
        while len(body) < 5:
            d = conn.recv(100)
            if not d:
                return
            body += d
        got_body.append(body)
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)

    srv = tcp_server(handler)
    r = rule("all", "b", retry=Retry(attempts=1, on=("503",), backoff="1500ms"))
    port, c = one_worker(core, srv.address, r=r)
    with Conn(port, timeout=15) as conn:
        conn.send(b"PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        wait_for(first_done.is_set, 5, "the first endpoint's 503")
        wait_for(lambda: srv.accepted == 1 and list(c.totals())[0].upstream_conns_active == 0, 5,
                 "the proxy to close the first attempt (it now waits out the backoff)")
        conn.send(b"hello")  # during the 1.5 s backoff
        try:
            resp = conn.read_response()
            answer = (resp.status, resp.header("server"), resp.body)
        except Exception as exc:  # noqa: BLE001 -- a hang or a cut is the failure being looked for
            answer = (0, repr(exc), b"")
    assert got_body == [b"hello"] and (answer[0], answer[2]) == (201, b"hello"), (
        f"body lost across the retry: upstream got {got_body}, client got {answer}")


# ---- passing checks (shapes not covered elsewhere) ----

NEXT = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"

ACCEPTED = {
    # (request bytes, [(method, target, body length)] the upstream must parse)
    "te_name_upper_case": (b"POST /a HTTP/1.1\r\nHost: x\r\nTRANSFER-ENCODING: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + NEXT,
                           [("POST", "/a", 5), ("GET", "/next", 0)]),
    "last_chunk_000": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n000\r\n\r\n" + NEXT,
                       [("POST", "/a", 5), ("GET", "/next", 0)]),
    "trailer_host_field": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nHost: evil\r\n\r\n"
                           + NEXT, [("POST", "/a", 5), ("GET", "/next", 0)]),
    "many_tiny_chunks": (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\na\r\n" * 3000
                         + b"0\r\n\r\n" + NEXT, [("POST", "/a", 3000), ("GET", "/next", 0)]),
    "delete_with_cl_body": (b"DELETE /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + NEXT,
                            [("DELETE", "/a", 5), ("GET", "/next", 0)]),
    "options_with_chunked_body": (b"OPTIONS /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                                  + NEXT, [("OPTIONS", "/a", 5), ("GET", "/next", 0)]),
    "get_cl_zero": (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" + NEXT, [("GET", "/a", 0), ("GET", "/next", 0)]),
    "connection_upgrade_without_upgrade_field": (b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\r\n" + NEXT,
                                                 [("GET", "/a", 0), ("GET", "/next", 0)]),
    "upgrade_refused_by_upstream": (b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + NEXT,
                                    [("GET", "/a", 0), ("GET", "/next", 0)]),
    "connection_names_transfer_encoding": (
        b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        + NEXT, [("POST", "/a", 5), ("GET", "/next", 0)]),
}

REFUSED = {
    "te_chunked_gzip": b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + NEXT,
    "te_identity_with_cl": b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello" + NEXT,
    "cl_zero_then_te": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + NEXT,
    "cl_dup_mixed_case": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello" + NEXT,
    "cl_tabs": b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length:\t5\t\r\n\r\nhello" + NEXT,
    "chunk_size_tab": b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\t\r\nhello\r\n0\r\n\r\n" + NEXT,
    "chunk_ext_quoted_lf": b'POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a="x\ny"\r\nhello\r\n0\r\n\r\n' + NEXT,
    "trailer_space_before_colon": b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T : a\r\n\r\n" + NEXT,
    "trailer_ctl": b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n" + NEXT,
    "trailer_bare_cr": b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n" + NEXT,
    "http_1_2": b"GET /a HTTP/1.2\r\nHost: x\r\n\r\n" + NEXT,
    "request_line_trailing_space": b"GET /a HTTP/1.1 \r\nHost: x\r\n\r\n" + NEXT,
    "tab_in_target": b"GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT,
    "nul_in_name": b"GET /a HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n\r\n" + NEXT,
    "host_userinfo": b"GET /a HTTP/1.1\r\nHost: u@x\r\n\r\n" + NEXT,
    "host_dup_other_case": b"GET /a HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n" + NEXT,
    "lowercase_method": b"get /a HTTP/1.1\r\nHost: x\r\n\r\n" + NEXT,
}

BODY_LEVEL = {"chunk_size_tab", "chunk_ext_quoted_lf", "trailer_space_before_colon", "trailer_ctl", "trailer_bare_cr"}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_shape_is_framed_the_same_upstream(core, http_backend, case) -> None:
    data, want = ACCEPTED[case]
    be = http_backend(target_app)
    port, _ = one_worker(core, be.address)
    with Conn(port) as conn:
        conn.send(data)
        got = [conn.read_response() for _ in want]
    assert [r.status for r in got] == [200] * len(want)
    assert [(r.method, r.target, len(r.body)) for r in be.requests] == want


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_shape_reaches_no_upstream(core, http_backend, case) -> None:
    be = http_backend(target_app)
    port, c = one_worker(core, be.address)
    with Conn(port) as conn:
        conn.send(REFUSED[case])
        expect_proxy_refusal(conn, (400, 505))
    if case in BODY_LEVEL:  # the head was valid and went up; the body's error cuts that connection
        assert not any(r.target == "/next" for r in be.requests)
    else:
        assert be.count == 0 and c.cluster_stats()["b"]["requests"] == 0, [(r.method, r.target) for r in be.requests]


def test_chunked_body_bytes_arrive_exactly(core, http_backend) -> None:
    """A chunked body with extensions and a trailer, split at every awkward place, arrives whole."""
    be = http_backend(digest_app)
    port, _ = one_worker(core, be.address)
    body = b"".join(b"%x;e=\"q;x\"\r\n%s\r\n" % (n, bytes([65 + n % 26]) * n) for n in range(1, 40))
    whole = b"".join(bytes([65 + n % 26]) * n for n in range(1, 40))
    data = b"POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\nX-T: 1\r\n\r\n"
    with Conn(port) as conn:
        for i in range(0, len(data), 7):
            conn.send(data[i:i + 7])
        r = conn.read_response()
    assert r.status == 200 and r.text.split() == digest_of(whole, "chunked")
