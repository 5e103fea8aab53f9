"""responseHeaderModifier: set replaces every occurrence of a header, add appends, remove deletes
(names case-insensitive), applied by the C core to the response head while bodies stream through
untouched: Content-Length and chunked, keep-alive, HEAD, 100-continue, and heads that span
receive buffers."""
from __future__ import annotations

import hashlib
import threading

import pytest

from ringlane_sidecar.config.model import Filter, Header, HeaderModifier, Timeouts

from .backends import Reply, Request, raw_then_close, stall_forever
from .helpers import Conn, Response, cluster, config, free_port, get, http_listener, rule

pytestmark = pytest.mark.timeout(30)

BACKEND_HEADERS = [
    ("Server", "python-backend"),
    ("X-Secret", "s1"),
    ("X-Env", "dev"),
    ("X-Keep", "k"),
    ("Keep-Alive", "timeout=5"),  # hop-by-hop: the proxy always drops it
    ("x-SECRET", "s2"),
    ("x-env", "dev2"),
]


def body_for(target: str) -> bytes:
    return hashlib.sha256(target.encode()).hexdigest().encode() * 50  # 3200 bytes, distinct per request


def decorated_app(req: Request) -> Reply:
    """Every response carries BACKEND_HEADERS; /chunked/... answers chunked, the rest with a length."""
    body = body_for(req.target)
    if req.target.startswith("/chunked"):
        return Reply(200, headers=BACKEND_HEADERS, chunks=[body[:1000], body[1000:]])
    return Reply(200, body, headers=BACKEND_HEADERS)


def response_filter(set: tuple[tuple[str, str], ...] = (), add: tuple[tuple[str, str], ...] = (),  # noqa: A002
                    remove: tuple[str, ...] = ()) -> Filter:
    return Filter(response_header_modifier=HeaderModifier(set=tuple(Header(k, v) for k, v in set),
                                                          add=tuple(Header(k, v) for k, v in add),
                                                          remove=remove))


FILTER = response_filter(set=(("X-Env", "prod"),), add=(("x-keep", "k2"), ("X-Added", "a1")),
                         remove=("x-secret", "SERVER"))


def filtered_cfg(port: int, backend: str):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("plain", "b", prefix="/plain"), rule("f", "b", filters=[FILTER]))],
                  [cluster("b", backend)])


def assert_filtered(r: Response, target: str, head: bool = False, close: bool = False) -> None:
    assert r.status == 200, r
    assert r.header_all("x-env") == ["prod"], r.headers          # set: every occurrence replaced by one
    assert r.header_all("x-keep") == ["k", "k2"], r.headers      # add: appended, the existing one kept
    assert r.header_all("x-added") == ["a1"], r.headers
    assert r.header_all("x-secret") == [] and r.header("server") is None, r.headers  # removed, any case
    assert r.header("keep-alive") is None, r.headers
    assert r.header_all("connection") == (["close"] if close else []), r.headers
    if not head:
        assert r.body == body_for(target)


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_set_add_remove_on_keepalive_connection(core, http_backend, framing) -> None:
    be = http_backend(decorated_app)
    port = free_port()
    core(filtered_cfg(port, be.address))
    with Conn(port) as conn:
        # The backend really sends what the filter changes: the unfiltered rule shows it.
        r = conn.request("GET", f"/plain/{framing}")
        assert r.status == 200 and r.body == body_for(f"/plain/{framing}")
        assert r.header_all("x-secret") == ["s1", "s2"] and r.header_all("x-env") == ["dev", "dev2"]
        assert r.header("server") == "python-backend" and r.header_all("x-keep") == ["k"]
        assert r.header("keep-alive") is None  # hop-by-hop, dropped on every route
        for i in range(3):  # the same keep-alive connection, request after request
            target = f"/{framing}/{i}"
            r = conn.request("GET", target)
            assert_filtered(r, target)
            if framing == "chunked":
                assert r.header("transfer-encoding") == "chunked" and r.header("content-length") is None
            else:
                assert r.header("content-length") == str(len(body_for(target)))
        # HEAD: no body follows; the head is rewritten all the same and the connection stays usable.
        r = conn.request("HEAD", f"/{framing}/head")
        assert_filtered(r, f"/{framing}/head", head=True)
        assert r.body == b""
        # 100-continue: the interim response passes, the final one is filtered.
        conn.send(f"POST /{framing}/post HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  f"Content-Length: 5\r\n\r\nhello".encode())
        assert_filtered(conn.read_response(), f"/{framing}/post")
        assert_filtered(conn.request("GET", f"/{framing}/last"), f"/{framing}/last")
    assert [q.conn_index for q in be.requests] == [0] * 7  # one upstream connection served them all


def test_last_response_gets_connection_close(core, http_backend) -> None:
    """The filter and the proxy's own Connection: close on a client's last request do not clash."""
    be = http_backend(decorated_app)
    port = free_port()
    core(filtered_cfg(port, be.address))
    with Conn(port) as conn:
        r = conn.request("GET", "/length/bye", headers=[("Connection", "close")])
        assert_filtered(r, "/length/bye", close=True)  # exactly one Connection line: the proxy's
        assert conn.at_eof(3)


def padded_app(n_pad: int):  # type: ignore[no-untyped-def]
    """A response head of n_pad X-Pad lines with an X-Secret line after every fifth."""
    def app(req: Request) -> Reply:
        headers = []
        for i in range(n_pad):
            headers.append((f"X-Pad-{i}", "p" * 40))
            if i % 5 == 0:
                headers.append(("X-Secret" if i % 2 else "x-secret", f"s{i}"))
        headers.append(("X-Env", "dev"))
        body = body_for(req.target)
        if req.target.startswith("/chunked"):
            return Reply(200, headers=headers, chunks=[body[:7], body[7:]])
        return Reply(200, body, headers=headers)
    return app


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_head_spanning_receive_buffers(core, http_backend, framing) -> None:
    """With 4 KiB receive buffers a 20 KiB response head arrives in several pieces: it is collected
    and rewritten whole (every X-Secret gone, wherever the buffer boundaries fall)."""
    be = http_backend(padded_app(400))
    port = free_port()
    core(config([http_listener(port, rule("f", "b", filters=[FILTER]))], [cluster("b", be.address)]),
         buf_size=4096)
    with Conn(port) as conn:
        for i in range(2):
            target = f"/{framing}/{i}"
            r = conn.request("GET", target)
            assert r.status == 200 and r.body == body_for(target)
            assert [k for k, _ in r.headers if k.startswith("X-Pad-")] == [f"X-Pad-{k}" for k in range(400)]
            assert r.header_all("x-secret") == []
            assert r.header_all("x-env") == ["prod"] and r.header_all("x-added") == ["a1"]


def test_head_spanning_buffers_without_filter_is_forwarded_whole(core, http_backend) -> None:
    be = http_backend(padded_app(400))
    port = free_port()
    core(config([http_listener(port, rule("p", "b"))], [cluster("b", be.address)]), buf_size=4096)
    with Conn(port) as conn:
        for i in range(2):
            r = conn.request("GET", f"/chunked/{i}")
            assert r.status == 200 and r.body == body_for(f"/chunked/{i}")
            assert len(r.header_all("x-secret")) == 80 and r.header("x-env") == "dev"


def assert_own_502(r: Response) -> None:
    """The proxy's own 502 on FILTER's route: its body, the filter applied (Server removed)."""
    assert (r.status, r.body) == (502, b"Bad Gateway\n"), r
    assert r.header_all("x-added") == ["a1"] and r.header("server") is None, r.headers


def test_response_head_over_64k_is_502(core, http_backend) -> None:
    be = http_backend(padded_app(1400))  # about 75 KiB of head
    port = free_port()
    core(config([http_listener(port, rule("f", "b", filters=[FILTER]))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        r = conn.request("GET", "/length/x")
        assert_own_502(r)


def test_bare_lf_head_is_rewritten_with_crlf(core, http_backend) -> None:
    """llhttp takes a lone LF as the end of the status line and of the head (RFC 9112 lets a
    recipient do so): the rewritten head ends every line with CRLF, kept and added ones alike."""
    be = http_backend(lambda req: raw_then_close(
        b"HTTP/1.1 200 OK\nServer: x\r\nX-Keep: k\r\nX-Env: dev\r\nContent-Length: 2\r\n\nok"))
    port = free_port()
    core(config([http_listener(port, rule("f", "b", filters=[FILTER]))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn._line() == b"HTTP/1.1 200 OK"
        conn.buf = b"HTTP/1.1 200 OK\r\n" + conn.buf
        r = conn.read_response()
        assert r.status == 200 and r.body == b"ok"
        assert r.headers == [("X-Keep", "k"), ("Content-Length", "2"), ("X-Env", "prod"), ("x-keep", "k2"),
                             ("X-Added", "a1")]


def test_bare_cr_in_head_is_502(core, http_backend) -> None:
    """A lone CR is invalid (RFC 9112 2.2): a head that needs rewriting and has one is refused."""
    # llhttp 8 ends this head at "\r\r\n" (found by the fuzzer); a client would read it otherwise.
    be = http_backend(lambda req: raw_then_close(b"HTTP/1.1 200 OK\r\nServer: x\r\nX-A:\r\r\nok"))
    port = free_port()
    core(config([http_listener(port, rule("f", "b", filters=[FILTER]))], [cluster("b", be.address)]))
    r = get(port, "/")
    assert_own_502(r)


# ---- the upstream's "Connection: keep-alive" (what nginx sends on every response) ----

KEEPALIVE_HEAD = b"HTTP/1.1 200 OK\r\nServer: up\r\nconnection:  Keep-Alive \r\nContent-Length: 2\r\n\r\nok"


def test_connection_keepalive_alone_is_forwarded_unchanged(core, http_backend) -> None:
    """On a client connection that stays open, a head whose only hop-by-hop line is
    "Connection: keep-alive" goes out byte for byte: that line states the proxy's own option
    for the client connection too (RFC 9110 7.6.1), so the head is not written again."""
    be = http_backend(lambda req: raw_then_close(KEEPALIVE_HEAD))
    port = free_port()
    core(config([http_listener(port, rule("p", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn._exact(len(KEEPALIVE_HEAD)) == KEEPALIVE_HEAD
        r = conn.request("GET", "/again")  # the client connection is still open and usable
        assert r.status == 200 and r.body == b"ok"


@pytest.mark.parametrize("upstream_lines, client_headers, connection", [
    # another hop-by-hop line: the head is written again, without either line
    (b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n", [], []),
    # more than keep-alive in the Connection value: not the proxy's option, dropped
    (b"Connection: keep-alive, x-hop\r\n", [], []),
    # the client's last request: the proxy's own "close" replaces the upstream's line
    (b"Connection: keep-alive\r\n", [("Connection", "close")], ["close"]),
])
def test_connection_line_rewritten_when_it_is_not_the_proxys(core, http_backend, upstream_lines, client_headers,
                                                             connection) -> None:
    head = b"HTTP/1.1 200 OK\r\nServer: up\r\n" + upstream_lines + b"Content-Length: 2\r\n\r\nok"
    be = http_backend(lambda req: raw_then_close(head))
    port = free_port()
    core(config([http_listener(port, rule("p", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        r = conn.request("GET", "/", headers=client_headers)
        assert r.status == 200 and r.body == b"ok"
        assert r.header_all("connection") == connection and r.header("keep-alive") is None, r.headers
        assert r.header("server") == "up"


def test_connection_keepalive_with_a_filter_is_rewritten(core, http_backend) -> None:
    """A rule that sets or adds headers writes the head again, and the upstream's line goes."""
    be = http_backend(lambda req: raw_then_close(KEEPALIVE_HEAD))
    port = free_port()
    core(config([http_listener(port, rule("f", "b", filters=[FILTER]))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        r = conn.request("GET", "/")
        assert r.status == 200 and r.body == b"ok"
        assert r.header_all("connection") == [] and r.header("server") is None and r.header("x-added") == "a1"


@pytest.mark.parametrize("filtered", [False, True])
def test_fields_named_by_connection_options_are_dropped(core, http_backend, filtered) -> None:
    """RFC 9110 7.6.1: the fields an upstream's Connection header lists are hop-by-hop and do
    not reach the client, wherever they stand in the head (before or after the Connection line,
    next to lines a filter drops); Content-Length stays whatever is listed, so the body keeps its
    framing and the connection stays usable."""
    head = (b"HTTP/1.1 200 OK\r\nX-Before: 1\r\nServer: up\r\nConnection: x-before, X-After,content-length\r\n"
            b"X-Public: ok\r\nConnection: keep-alive\r\nx-after: 2\r\nContent-Length: 2\r\n\r\nok")
    be = http_backend(lambda req: raw_then_close(head))
    port = free_port()
    core(config([http_listener(port, rule("p", "b", filters=[FILTER] if filtered else []))],
                [cluster("b", be.address)]))
    with Conn(port) as conn:
        for target in ("/", "/again"):
            r = conn.request("GET", target)
            assert r.status == 200 and r.body == b"ok", r
            assert r.header("x-before") is None and r.header("x-after") is None, r.headers
            assert r.header_all("connection") == [] and r.header("x-public") == "ok", r.headers
            assert r.header("server") == (None if filtered else "up"), r.headers


FOLDED = {
    "value": b"X-Fold: a\r\n b c\r\nX-Next: n\r\nContent-Length: 2\r\n\r\nok",
    "tab": b"X-Fold: a\r\n\t b\r\nContent-Length: 2\r\n\r\nok",
    "blank-line": b"X-Fold: a\r\n \r\nX-Next: n\r\nContent-Length: 2\r\n\r\nok",
    "dropped-field": (b"X-Int: a\r\n secret\r\nConnection: x-int,\r\n x-two\r\nX-Two: 2\r\n"
                      b"Content-Length: 2\r\n\r\nok"),
    "framing": b"Transfer-Encoding: chunked\r\n x\r\n\r\n2\r\nok\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(FOLDED))
def test_folded_response_head_is_a_502(core, http_backend, case: str) -> None:
    """obs-fold in a response (RFC 9112 5.2): a proxy must not forward it; it may answer 502
    instead of unfolding, which it does (folds in framing fields are a smuggling vector, and
    a fold in a dropped field must not leak). Nothing of the upstream head reaches the client."""
    head = b"HTTP/1.1 200 OK\r\nX-Upstream: yes\r\n" + FOLDED[case]
    be = http_backend(lambda req: raw_then_close(head))
    port = free_port()
    core(config([http_listener(port, rule("p", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        r = conn.read_response()
        assert r.status == 502, (r.status, r.headers)
        assert r.header("x-upstream") is None and r.header("server") == "ringlane", r.headers


def own_answer_cfg(port: int, garbage: str, stalled: str):  # type: ignore[no-untyped-def]
    stamp = response_filter(set=(("X-Env", "prod"), ("Server", "edge")), add=(("X-Added", "a1"),),
                            remove=("content-type",))
    return config([http_listener(port,
                                 rule("empty", "none", prefix="/empty", filters=[stamp]),
                                 rule("down", "down", prefix="/down", filters=[stamp]),
                                 rule("slow", "slow", prefix="/slow", filters=[stamp],
                                      timeouts=Timeouts(request="300ms")),
                                 rule("plain", "none", prefix="/plain"))],
                  [cluster("none"), cluster("down", garbage), cluster("slow", stalled)])


def test_filter_applies_to_the_proxys_own_answers_for_the_route(core, http_backend) -> None:
    """The route's responseHeaderModifier is part of every answer for it, the proxy's own 503
    (no endpoints), 502 (a backend that answers garbage) and 504 (timeout) too, as Envoy applies a route's
    header edits to its local replies: security and CORS headers must be on errors as well (a
    browser app reads a 503 only with Access-Control-Allow-Origin). Set and remove replace or
    drop the proxy's own fields. No rule (404) means no filter. Before, only responses from a
    backend were filtered."""
    garbage = http_backend(lambda req: raw_then_close(b"NOT HTTP\r\n\r\n"))
    release = threading.Event()
    stalled = http_backend(lambda req: stall_forever(release))
    port = free_port()
    core(own_answer_cfg(port, garbage.address, stalled.address))
    with Conn(port) as conn:
        for path, status in (("/empty/x", 503), ("/down/x", 502)):
            for method in ("GET", "HEAD"):
                r = conn.request(method, path)
                assert r.status == status, (path, r)
                assert r.header_all("x-env") == ["prod"] and r.header_all("x-added") == ["a1"], r.headers
                assert r.header_all("server") == ["edge"], r.headers  # set: the proxy's own replaced
                assert r.header("content-type") is None, r.headers  # removed
                assert r.header("content-length") is not None and r.body == (b"" if method == "HEAD" else r.body)
        r = conn.request("GET", "/plain/x")
        assert r.status == 503 and r.header("x-added") is None and r.header("server") == "ringlane", r.headers
        assert r.header("content-type") == "text/plain"
        r = conn.request("GET", "/nowhere")
        assert r.status == 404 and r.header("x-added") is None, r.headers
    with Conn(port) as conn:
        try:
            r = conn.request("GET", "/slow/x")
        finally:
            release.set()
        assert r.status == 504 and r.header_all("x-added") == ["a1"], r
