"""Review of one HTTP exchange where client and upstream do unusual but legal things: HTTP/1.0
clients (absolute-form without Host, the keep-alive opt-in), absolute-form with an empty host,
OPTIONS with asterisk-form and absolute-form targets, and Connection: close in the middle of a
pipeline.

Found by a review pass: every test here but the last (a pin of behaviour that held) failed when
written; the docstrings say what was wrong and where."""
from __future__ import annotations

import json

import pytest

from .backends import Reply, headers_app
from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rewrite_filter, rule
from .test_response_path_edges import scripted

pytestmark = pytest.mark.timeout(60)


def upstream_hosts(body: bytes) -> list[str]:
    return [v for k, v in json.loads(body)["headers"] if k.lower() == "host"]


# ==== HTTP/1.0 clients ====

def test_http10_absolute_form_without_host_sends_a_host_made_from_the_target(core, http_backend) -> None:
    """RFC 9112 3.2.2: a proxy that receives an absolute-form target MUST ignore the received
    Host and "MUST generate a new Host field value based on the received request-target". An
    HTTP/1.0 request needs no Host line, so `GET http://b.example/x HTTP/1.0` with none is
    legal: the proxy routes it on b.example (the rule's hostname), but rl_http_build_request
    (rl_http_build.c) only *replaces* the value of Host lines the client sent
    (`if (rq->authority.len && rl_span_ieq(b, n, "host", 4)) v = rq->authority`): with no Host
    line the upstream gets no Host at all, and a virtual-hosting upstream serves its default
    host for a request routed as b.example."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("b", "b", hostnames=["b.example"]))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        conn.send(b"GET http://b.example/x HTTP/1.0\r\n\r\n")
        raw = conn.read_to_close()
    assert raw.startswith(b"HTTP/1.1 200"), raw
    body = raw.partition(b"\r\n\r\n")[2]
    assert json.loads(body)["target"] == "/x"
    assert upstream_hosts(body) == ["b.example"], json.loads(body)


HTTP10_KA_CASES = {
    # an HTTP/1.1 upstream that does not repeat the option (the proxy sent it Connection: keep-alive)
    "upstream-1.1": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "/ok"),
    # an HTTP/1.0 upstream that says keep-alive: its status line is rewritten and the line dropped
    "upstream-1.0-keepalive": (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", "/ok"),
    # a response the proxy makes itself (no rule matches /nowhere)
    "proxy-404": (b"", "/nowhere"),
}


@pytest.mark.parametrize("case", list(HTTP10_KA_CASES))
def test_http10_keepalive_client_is_told_the_connection_persists(core, tcp_server, case) -> None:
    """An HTTP/1.0 client opts in to persistence with `Connection: keep-alive`; by HTTP/1.0's
    keep-alive mechanism (RFC 2068 19.7.1, referenced by RFC 9112 C.2.2) the connection
    persists only if the response carries `Connection: keep-alive` too; without it the client
    takes the connection for closing (ApacheBench -k, for one, then reads until the close).
    nginx writes `Connection: keep-alive` on every response it keeps alive, HAProxy adds it for
    HTTP/1.0 clients. Ringlane keeps the connection open (llhttp_should_keep_alive honours the
    request's opt-in) but its response says nothing: rl_http.c:resp_on_headers_complete leaves
    the head unchanged for an HTTP/1.1 upstream, rl_http_build_response_head (rl_http_resp.c)
    drops the upstream's own `Connection: keep-alive` when it rewrites the head (a 1.0
    upstream) and only ever appends `Connection: close`, and rl_http_build_error writes no
    Connection line when keeping alive. Expected: the response says keep-alive, or the proxy
    closes after it (both are consistent); observed: open connection, no keep-alive."""
    raw, path = HTTP10_KA_CASES[case]

    def respond(conn, req, n):  # type: ignore[no-untyped-def]
        conn.sendall(raw)
        return True

    srv = tcp_server(scripted(respond))
    port = free_port()
    core(config([http_listener(port, rule("ok", "b", exact="/ok"))], [cluster("b", srv.address)]))
    with Conn(port, timeout=3) as conn:
        conn.send(f"GET {path} HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n".encode())
        r = conn.read_response()
        assert r.status == (200 if path == "/ok" else 404), r
        says_keepalive = [v.lower() for v in r.header_all("connection")] == ["keep-alive"]
        closed = conn.at_eof(1.5)
    assert closed or says_keepalive, (
        f"HTTP/1.0 keep-alive client: the connection stayed open but the response did not say "
        f"`Connection: keep-alive`: {r.headers}")


@pytest.mark.parametrize("target", ["http://:80/x", "http://:8080", "http://[]/x"])
def test_absolute_form_with_an_empty_host_and_a_port_is_a_400(core, http_backend, target) -> None:
    """RFC 9110 4.2.1: "A sender MUST NOT generate an "http" URI with an empty host identifier.
    A recipient that processes such a URI reference MUST reject it as invalid." The existing
    test refuses http:///x (empty authority), but rl_http_head.c:rl_http_req_facts only checks
    `!rq->authority.len`: an authority that is just a port (":80") or an empty IP-literal ("[]")
    has a length, routes on an empty host (any rule without hostnames takes it) and goes up as
    `Host: :80` / `Host: []`. Expected 400, as for http:///x, with nothing sent upstream."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", target)
    assert r.status == 400, (r.status, r.body)
    assert be.count == 0


@pytest.mark.parametrize("target", ["HTTP://b.example/x", "https://b.example/x", "Http://b.example:80/x"])
def test_absolute_form_scheme_is_http_or_https_in_any_case(core, http_backend, target) -> None:
    """RFC 9110 4.2.3: schemes compare case-insensitively; https is as much ours as http (the
    client speaks plain HTTP to the proxy either way). Routed on the target's host."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("b", "b", hostnames=["b.example"]))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", target, host="other.example")
    assert r.status == 200, (r.status, r.body)
    doc = json.loads(r.body)
    assert doc["target"] == "/x" and upstream_hosts(r.body) == [target.split("/")[2]], doc


# ==== OPTIONS: asterisk-form and absolute-form without a path ====

@pytest.mark.parametrize("target", ["http://test.local", "http://test.local:8080"])
def test_options_absolute_form_without_path_goes_up_as_asterisk(core, http_backend, target) -> None:
    """RFC 9112 3.2.4: "If a proxy receives an OPTIONS request with an absolute-form of
    request-target in which the URI has an empty path and no query component, then the last
    proxy on the request chain MUST send a request-target of "*" when it forwards the request
    to the indicated origin server" (OPTIONS http://host asks about the server, OPTIONS / about
    the resource /). rl_http_build.c:write_path writes "/" for every empty path."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request("OPTIONS", target)
    assert r.status == 200, r
    doc = json.loads(r.body)
    assert doc["method"] == "OPTIONS" and doc["target"] == "*", doc


def test_options_asterisk_is_not_turned_into_a_path_by_a_prefix_rewrite(core, http_backend) -> None:
    """`OPTIONS * HTTP/1.1` (RFC 9112 3.2.4, asterisk-form: the server as a whole, not a
    resource). rl_http_head.c:path_matches lets "*" match a PathPrefix "/" rule (the prefix "/"
    short-cuts to a match without looking at the path), and rl_http_build.c:write_path then
    applies the rule's ReplacePrefixMatch to "*": the upstream receives `OPTIONS /v2*`, a
    request for a resource named "/v2*" that the client never asked for. Expected: "*" goes up
    unchanged (HAProxy), or the request is refused (nginx answers 400 to asterisk-form);
    never a fabricated origin-form path."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b", filters=[rewrite_filter("/v2")]))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request("OPTIONS", "*")
    assert r.status == 200, r  # passed on as it came (as HAProxy does)
    assert json.loads(r.body)["target"] == "*", json.loads(r.body)


@pytest.mark.parametrize("method, target", [("GET", "*"), ("POST", "*"), ("GET", "x/y"), ("GET", "http:/x"),
                                            ("GET", "ftp://test.local/x"), ("GET", "test.local//x/y")])
def test_a_target_neither_origin_absolute_nor_options_asterisk_is_a_400(core, http_backend, method, target) -> None:
    """RFC 9112 3.2: origin-form starts with "/", and asterisk-form is for OPTIONS only. Before,
    `GET *` matched a PathPrefix "/" rule and went upstream as it came."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request(method, target)
    assert r.status == 400, (r.status, r.body)
    assert be.count == 0


# ==== pipelining ====

def test_pin_connection_close_mid_pipeline_stops_the_pipeline(core, http_backend) -> None:
    """Four pipelined requests in one write, the second with Connection: close:
    two responses (the second saying close), then EOF; requests 3 and 4 never reach the
    upstream (RFC 9112 9.6: a server that sees close must not process further requests)."""
    seen: list[str] = []

    def app(req):  # type: ignore[no-untyped-def]
        seen.append(req.target)
        return Reply(200, req.target.encode())

    be = http_backend(app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        conn.send(build_request("GET", "/1") + build_request("GET", "/2", [("Connection", "close")])
                  + build_request("GET", "/3") + build_request("POST", "/4", body=b"abcd"))
        r1, r2 = conn.read_response(), conn.read_response()
        assert conn.at_eof(3)
    assert (r1.body, r2.body) == (b"/1", b"/2")
    assert [v.lower() for v in r2.header_all("connection")] == ["close"], r2.headers
    assert seen == ["/1", "/2"], seen
