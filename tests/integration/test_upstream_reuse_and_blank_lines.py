"""Upstream keep-alive reuse and request framing edges (rl_http.c, rl_http_up.c): stray bytes
behind a response never answer the next request, an Expect: 100-continue request whose body did
not start is retried like a body-less one on a stale pooled connection, empty lines between
requests start nothing. From a review pass: each failed before its fix (the docstrings say what
a user saw and where the code went wrong)."""
from __future__ import annotations

import socket

import pytest

from ringlane_sidecar.config.model import Limits

from .backends import Reader, Request, read_request, recv_head
from .helpers import Conn, build_request, free_port
from .test_response_path_edges import ok, one_worker, scripted

pytestmark = pytest.mark.timeout(60)

BUF = 16384  # the core's default receive buffer size (Core(buf_size=...))


def sized_response(total: int, fill: bytes = b"a") -> bytes:
    """A 200 with Content-Length whose bytes on the wire (head and body) are exactly total."""
    n = total - len(ok(b""))
    while len(ok(fill * n)) != total:
        n -= 1
    out = ok(fill * n)
    assert len(out) == total
    return out


# ==== a response ending on a receive-buffer boundary, stray bytes behind it ====

def test_stray_bytes_behind_a_response_that_fills_a_receive_buffer_are_not_the_next_answer(core, tcp_server) -> None:
    """Two pipelined GETs. The upstream answers the first with a response of exactly one receive
    buffer (16 KiB) and, in the same write, an unsolicited second response ("smuggle"); then it
    answers the real second request ("real") if it ever gets it on that connection.

    User-visible: on io_uring the client's second request gets "smuggle", bytes the upstream
    sent before it ever saw that request: a response attributed to the wrong request (the
    classic response-queue desync). RFC 9112 9.3.2 lets a client reuse a connection only for
    responses in request order; bytes the server sent unasked make the stream position unknown.
    nginx's keepalive module runs its close handler on a connection that is already readable
    when put back (ngx_http_upstream_free_keepalive_peer), so such bytes close it. epoll is
    right (its instance passes): the peek sees the bytes and "real" comes on a new connection.

    Root cause: rl_http.c:response_done decides to pool the connection when the response ends
    exactly at the end of the receive (pos == len) and, with a pipelined request waiting, asks
    the socket whether more came (rl_conn_peer_spoke, a MSG_PEEK). On io_uring the multishot
    recv has already moved the stray bytes out of the socket into a second CQE that is still
    waiting in the completion queue, so the peek sees nothing; the pipelined request is replayed
    at once onto the pooled connection (rl_http_up.c:rl_http_up_get), and that CQE is then
    delivered to rl_http_up.c:on_recv with u->client set to the new exchange and parsed as its
    response."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        if req.target == "/first":
            conn.sendall(sized_response(BUF) + ok(b"smuggle"))
        else:
            conn.sendall(ok(b"real"))
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=5) as conn:
        conn.send(build_request("GET", "/first") + build_request("GET", "/second"))
        r1 = conn.read_response()
        assert r1.status == 200 and r1.raw_len == BUF
        r2 = conn.read_response()
        assert r2.body == b"real", f"the second request got {r2.body!r} (engine {c.engine})"


# ==== Expect: 100-continue on a stale pooled connection ====

def test_put_awaiting_100_continue_on_a_stale_pooled_connection_is_retried(core, tcp_server) -> None:
    """The keep-alive race with an upload that uses Expect: 100-continue (curl does for large
    bodies). The client sends `PUT` with `Expect: 100-continue` and holds its body until it
    hears 100. The proxy picks a pooled connection the backend closes as the head arrives
    (idle timeout, restart), without a byte of response.

    User-visible: 502 Bad Gateway for an idempotent upload of which not one body byte had left
    the client; the backend is healthy (a new connection would have taken it).

    What others do: the request is safe to send again by every rule the proxy itself applies
    to a GET here: it is idempotent (RFC 9110 9.2.2), no response byte came, and nothing of the
    body was read from the client. nginx (request buffering on by default) answers the 100
    itself, reads the body, and tries a failed cached keepalive connection again
    (ngx_http_upstream_next), so the same PUT succeeds there.

    Root cause: rl_http.c:rl_http_on_up_end retries the keep-alive race only when
    `!c->has_body`, and may_retry refuses any request with a body that is not kept; but while
    c->awaits_continue is set and c->body_bytes == 0 nothing of the body was streamed, so the
    head alone (kept in c->retry) could go again on a new connection, exactly as for a GET."""
    def handler(conn: socket.socket, index: int) -> None:
        if index == 0:  # answers /warm, then closes on the next request head without a byte
            got = recv_head(conn)
            assert got is not None
            conn.sendall(ok(b"warm"))
            recv_head(conn, got[1])
            return
        r = Reader(conn)
        req = read_request(r, conn, index)  # sends the 100 (Expect), then reads the body
        assert req is not None
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(req.body) + req.body)
        r.line()  # until the proxy closes

    be = tcp_server(handler)
    port = free_port()
    one_worker(core, port, be.address)
    with Conn(port, timeout=5) as conn:
        assert conn.request("GET", "/warm").body == b"warm"
        conn.send(build_request("PUT", "/doc", [("Expect", "100-continue"), ("Content-Length", "5")]))
        status, _, _, _ = conn.read_head()
        if status == 100:
            conn.send(b"hello")
            r = conn.read_response()
        else:
            conn.buf = b""
            r = None
        assert status == 100 and r is not None and r.status == 201 and r.body == b"hello", \
            f"first status {status}, then {r}"


# ==== an empty line after a request is not the start of the next one ====

@pytest.mark.parametrize("method,body", [("POST", b"hello"), ("GET", None)])
def test_crlf_after_a_request_does_not_turn_the_idle_connection_into_a_408(core, tcp_server, method, body) -> None:
    """A client follows its request with an extra CRLF (old browsers and some HTTP libraries do
    after a POST body; RFC 9112 2.2 asks a server to ignore at least one empty line before a
    request-line), then keeps the connection idle, as keep-alive clients do.

    User-visible: when limits.requestHeaderTimeout (here 1 s) passes, the proxy writes an
    unsolicited `408 Request Timeout` on the idle connection and closes it, long before
    idleTimeout (30 s); a client that sends its next request at that moment takes the 408 as its
    answer (a response attributed to the wrong request), and the 408 is counted as a request of
    the listener's no-route series though no request was ever made. Without the CRLF the same
    connection stays open, silent, until idleTimeout. RFC 9112 2.2: such empty lines are to be
    ignored, i.e. they are not a request; RFC 9110 15.5.9 defines 408 for a request that did not
    complete. (nginx never writes a 408 on a header timeout at all: it closes silently.)

    Root cause: rl_http.c:parse_head moves C_IDLE to C_HEAD, arms the header timeout and resets
    the request's stats slot for any byte, including the CR/LF llhttp skips before a
    request-line; on_timer then answers C_HEAD with 408. Leading empty lines should be consumed
    while the connection stays C_IDLE (its idle timer untouched)."""
    be = tcp_server(scripted(lambda conn, req, n: conn.sendall(ok(b"done")) or True))
    port = free_port()
    c = one_worker(core, port, be.address, limits=Limits(request_header_timeout="1s", idle_timeout="30s"))
    with Conn(port, timeout=5) as conn:
        conn.send(build_request(method, "/a", body=body) + b"\r\n")
        assert conn.read_response().body == b"done"
        # Watch the idle connection for 2.5 s (header timeout 1 s, idle timeout 30 s): a deadline
        # on the condition "the proxy wrote or closed", not a sleep.
        conn.sock.settimeout(2.5)
        try:
            got = conn.sock.recv(65536)
        except socket.timeout:
            got = None
        assert got is None, f"the idle connection got {got!r} from the proxy (engine {c.engine})"
        conn.sock.settimeout(5)
        r = conn.request("GET", "/b")
        assert r.status == 200 and r.body == b"done"
    st = c.rule_stats().get(("web", ""))
    assert not st or sum(st["codes"].values()) == 0, f"a request counted with no route: {st}"
