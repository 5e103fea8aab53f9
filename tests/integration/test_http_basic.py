"""HTTP/1.1 forwarding: keep-alive and pipelining on the client side, upstream connection
reuse, Content-Length and chunked bodies both ways, a 1 MiB download, HEAD, Expect: 100-continue."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading

import pytest

from .backends import Reply, digest_app, headers_app, recv_head, reset
from .helpers import (Closed, Conn, accepted_nodelay, Timeouts, build_request, cluster, config, free_port, get, http_listener,
                      nginx_echo, rule, wait_for)

pytestmark = pytest.mark.timeout(30)


def nginx_cfg(port: int, nginx):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)])


def test_keepalive_sequential_on_one_connection(core, nginx) -> None:
    port = free_port()
    c = core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        for i in range(10):
            r = conn.request("GET", f"/seq/{i}?q={i}")
            assert r.status == 200, r
            assert nginx_echo(r)["uri"] == f"/seq/{i}?q={i}"
            assert r.header("connection") != "close"
    assert c.listener_stats()["web"]["conns_opened"] == 1


def test_pipelined_requests_answered_in_order(core, nginx) -> None:
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        conn.send(b"".join(build_request("GET", f"/pipe/{i}") for i in range(8)))
        for i in range(8):
            r = conn.read_response()
            assert r.status == 200
            assert nginx_echo(r)["uri"] == f"/pipe/{i}"
        # and the connection is still usable afterwards
        assert nginx_echo(conn.request("GET", "/after"))["uri"] == "/after"


def test_pipelined_mixed_with_head_and_post(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", be.address)]))
    body = os.urandom(5000)
    with Conn(port) as conn:
        conn.send(build_request("POST", "/1", body=body) + build_request("HEAD", "/2") +
                  build_request("GET", "/3"))
        r1 = conn.read_response()
        r2 = conn.read_response(head=True)
        r3 = conn.read_response()
    assert r1.text.split()[:2] == ["5000", hashlib.sha256(body).hexdigest()]
    assert r2.status == 200 and r2.body == b""
    assert r3.text.startswith("0 ")
    assert [q.target for q in be.requests] == ["/1", "/2", "/3"]


def test_upstream_keepalive_reuse(core, nginx) -> None:
    """100 requests on 100 fresh client connections reuse a handful of pooled upstream connections."""
    port = free_port()
    c = core(nginx_cfg(port, nginx))
    for i in range(100):
        r = get(port, f"/reuse/{i}")
        assert r.status == 200 and nginx_echo(r)["uri"] == f"/reuse/{i}"
    st = c.cluster_stats()["a"]
    assert st["requests"] == 100
    # at most one pooled connection per worker, plus slack for a race with a pool close
    assert st["connections_opened"] <= 2 * len(c.cpus), st


def test_content_length_request_body(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", be.address)]))
    body = os.urandom(300 * 1024)  # many receive buffers
    with Conn(port) as conn:
        for _ in range(2):
            r = conn.request("POST", "/upload", body=body)
            assert r.status == 200
            assert r.text.split() == [str(len(body)), hashlib.sha256(body).hexdigest(), "length"]


def test_chunked_request_body(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", be.address)]))
    chunks = [os.urandom(n) for n in (1, 100, 17000, 40000, 3)]
    wire = b"".join(f"{len(ch):x}\r\n".encode() + ch + b"\r\n" for ch in chunks) + b"0\r\n\r\n"
    with Conn(port) as conn:
        conn.send(build_request("POST", "/chunked", [("Transfer-Encoding", "chunked")]))
        conn.send(wire[:10])  # the body arrives in pieces
        conn.send(wire[10:])
        r = conn.read_response()
        whole = b"".join(chunks)
        assert r.status == 200
        assert r.text.split() == [str(len(whole)), hashlib.sha256(whole).hexdigest(), "chunked"]
        # keep-alive survives a chunked request
        r2 = conn.request("POST", "/again", body=b"abc")
        assert r2.text.split()[0] == "3"


def test_chunked_response(core, http_backend) -> None:
    parts = [b"first,", os.urandom(20000), b"", b"last"]
    be = http_backend(lambda req: Reply(200, chunks=[p for p in parts if p]))
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", be.address)]))
    with Conn(port) as conn:
        for _ in range(3):
            r = conn.request("GET", "/stream")
            assert r.status == 200
            assert (r.header("transfer-encoding") or "").lower() == "chunked"
            assert r.body == b"".join(parts)


def test_one_mib_download(core, nginx) -> None:
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        for _ in range(3):
            r = conn.request("GET", "/big.bin")
            assert r.status == 200
            assert len(r.body) == 1 << 20
            assert hashlib.sha256(r.body).hexdigest() == nginx.big_sha256


def test_downloads_to_a_slow_reader(core, nginx) -> None:
    """Eight pipelined 1 MiB downloads (more than a socket buffer holds) to a client with a
    tiny receive window that reads 4 KiB at a time: the proxy's gathered sends stop part-way
    (full socket buffer) and resume from the byte they reached; every body arrives whole and
    in order."""
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port, timeout=20, rcvbuf=4096, read_size=4096) as conn:
        conn.send(b"".join(build_request("GET", "/big.bin", (), None, "test.local") for _ in range(8)))
        for _ in range(8):
            r = conn.read_response()
            assert r.status == 200
            assert len(r.body) == 1 << 20
            assert hashlib.sha256(r.body).hexdigest() == nginx.big_sha256


def test_timeout_while_the_client_does_not_read_frees_the_connection(core, nginx) -> None:
    """The request timeout fires while the response waits on a client that stopped reading
    (its socket buffer full, a send in flight): the connection is closed and released, not
    held open by the send that will never finish."""
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a", timeouts=Timeouts(request="500ms")))],
                    [cluster("a", nginx.a)]))
    with Conn(port, timeout=20, rcvbuf=4096) as conn:
        conn.send(b"".join(build_request("GET", "/big.bin", (), None, "test.local") for _ in range(8)))
        wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 10,
                 "the stalled connection to be released")


def test_accepted_connections_send_without_nagle(core, nginx) -> None:
    """TCP_NODELAY, set once on the listeners and inherited by accepted connections."""
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        assert conn.request("GET", "/").status == 200
        assert accepted_nodelay(conn.sock) == 1


def test_head_request(core, nginx) -> None:
    """HEAD: Content-Length of the full body, no body; the connection stays usable."""
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        r = conn.request("HEAD", "/big.bin")
        assert r.status == 200
        assert r.header("content-length") == str(1 << 20)
        r2 = conn.request("GET", "/after-head")
        assert r2.status == 200 and nginx_echo(r2)["uri"] == "/after-head"


def test_expect_100_continue_with_curl(core, http_backend, tmp_path) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", be.address)]))
    body = os.urandom(200 * 1024)
    f = tmp_path / "upload.bin"
    f.write_bytes(body)
    # a long expect100 timeout: if the proxy swallowed the 100, curl would stall and the test time out
    out = subprocess.run(["curl", "-sS", "-v", "--expect100-timeout", "20", "-H", "Expect: 100-continue",
                          "--data-binary", f"@{f}", f"http://127.0.0.1:{port}/upload"],
                         capture_output=True, timeout=25)
    assert out.returncode == 0, out.stderr.decode()
    assert "< HTTP/1.1 100 Continue" in out.stderr.decode()
    assert out.stdout.decode().split() == [str(len(body)), hashlib.sha256(body).hexdigest(), "length"]
    assert be.requests[0].header("expect") == "100-continue"


def test_client_connection_close(core, nginx) -> None:
    """Connection: close from the client: the response says close (once, without the upstream's
    own keep-alive hop-by-hop header) and the proxy closes after it."""
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        r = conn.request("GET", "/bye", [("Connection", "close")])
        assert r.status == 200 and nginx_echo(r)["uri"] == "/bye"
        assert conn.at_eof(3)
    assert [v.lower() for v in r.header_all("connection")] == ["close"], r.headers


def test_http10_client(core, nginx) -> None:
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        conn.send(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
        r = conn.read_response()
        assert r.status == 200 and nginx_echo(r)["uri"] == "/old"
        assert conn.at_eof(3)  # HTTP/1.0 without keep-alive: closed after the response


# ---- connection edge cases ----

def test_client_half_close_after_request(core, nginx) -> None:
    """A client that sends its request and shuts down its write side still gets the response
    (50 times: the proxy must not drop a queued response when the client's FIN is seen)."""
    port = free_port()
    core(nginx_cfg(port, nginx))
    lost = []
    for i in range(50):
        with Conn(port) as conn:
            conn.send(build_request("GET", f"/half/{i}"))
            conn.sock.shutdown(socket.SHUT_WR)
            try:
                r = conn.read_response()
                assert r.status == 200 and nginx_echo(r)["uri"] == f"/half/{i}"
                assert conn.at_eof(3)
            except Closed:
                lost.append(i)
    assert not lost, f"responses lost for {len(lost)} of 50 half-closed requests: {lost}"


def test_pipelined_then_half_close(core, http_backend) -> None:
    """Five pipelined requests and the client's FIN in one segment; the first response takes
    100 ms, so the FIN is seen while requests are still queued behind it: all five are answered."""
    gate = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/p/0":
            gate.wait(0.1)  # the backend's latency under test
        return Reply(200, req.target.encode())

    be = http_backend(app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        # data and FIN in one segment (corked), so the proxy sees the FIN with the requests
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        conn.send(b"".join(build_request("GET", f"/p/{i}") for i in range(5)))
        conn.sock.shutdown(socket.SHUT_WR)
        got = []
        try:
            for _ in range(5):
                got.append(conn.read_response().text)
        except Closed:
            pass
        assert got == [f"/p/{i}" for i in range(5)]


def test_pipelined_local_404_then_half_close(core, http_backend) -> None:
    """Like the test above, with a request the proxy answers itself (404, no route) in the
    middle: the requests after it are still answered before the FIN closes the connection."""
    be = http_backend(lambda req: Reply(200, req.target.encode()))
    port = free_port()
    core(config([http_listener(port, rule("a", "b", exact="/a"), rule("ok", "b", exact="/ok"))],
                [cluster("b", be.address)]))
    with Conn(port) as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        conn.send(b"".join(build_request("GET", p) for p in ("/a", "/nope", "/ok")))
        conn.sock.shutdown(socket.SHUT_WR)
        got = []
        try:
            for _ in range(3):
                r = conn.read_response()
                got.append((r.status, r.text if r.status == 200 else ""))
        except Closed:
            pass
        assert got == [(200, "/a"), (404, ""), (200, "/ok")]
        assert conn.read_to_close() == b""


def test_client_reset_mid_request_frees_everything(core, http_backend) -> None:
    """The client resets its connection while its request waits on the backend: the proxy
    releases the client at once and closes the upstream connection (it cannot be pooled
    mid-response)."""
    release = threading.Event()
    seen = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        seen.set()
        release.wait(10)
        return Reply(200, b"late")

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    try:
        conn = Conn(port)
        conn.send(build_request("GET", "/abort"))
        assert seen.wait(5)
        reset(conn.sock)
        wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "the client connection to be released")
        wait_for(lambda: upstream_counts(c) == (0, 0), 5, "the upstream connection to be closed, not pooled")
    finally:
        release.set()
    assert get(port, "/next").status == 200


def test_client_gone_before_response_no_leak(core, http_backend) -> None:
    """The client closes (FIN) while waiting; once the backend answers, nothing is left behind.
    (A FIN may be a half-close, so the proxy may legitimately wait for the response.)"""
    release = threading.Event()
    seen = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        seen.set()
        release.wait(10)
        return Reply(200, b"late")

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    conn = Conn(port)
    conn.send(build_request("GET", "/gone"))
    assert seen.wait(5)
    conn.close()
    release.set()
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "the client connection to be released")
    wait_for(lambda: upstream_counts(c)[0] == upstream_counts(c)[1], 5, "no busy upstream connection left")
    assert get(port, "/next").status == 200


def upstream_counts(c) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(upstream connections open, of which idle in pools), summed over workers (C totals)."""
    out = c._ffi.new("rl_worker_totals *")
    active = idle = 0
    for w in c.workers():
        c._lib.rl_core_read_totals(c._core, w, out)
        active += out.upstream_conns_active
        idle += out.upstream_conns_idle
    return active, idle


def test_stale_pooled_connection_is_not_used(core, http_backend) -> None:
    """The backend closes its keep-alive connection after each response (without saying so):
    the proxy notices the close of the idle pooled connection and the next request still works."""
    be = http_backend(lambda req: raw_reply_then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce"))
    port = free_port()
    c = core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        for i in range(5):
            assert conn.request("GET", f"/s/{i}").body == b"once"
            wait_for(lambda: upstream_counts(c) == (0, 0), 3, "the proxy to notice the upstream close")
    assert be.accepted == 5


def raw_reply_then_close(data: bytes):  # type: ignore[no-untyped-def]
    def act(conn, r):  # type: ignore[no-untyped-def]
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        r.sock.recv(1)  # wait for the proxy's FIN/RST
    return act


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses_keep_alive(core, http_backend, status) -> None:
    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/empty":
            return lambda conn, r: conn.sendall(f"HTTP/1.1 {status} X\r\nETag: \"1\"\r\n\r\n".encode()) or \
                _serve_rest(conn, r)
        return Reply(200, b"next")

    be = http_backend(app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        r = conn.request("GET", "/empty")
        assert r.status == status and r.body == b""
        assert conn.request("GET", "/after").body == b"next"


def _serve_rest(conn, r) -> None:  # type: ignore[no-untyped-def]
    """Keep serving plain 200s on a connection taken over by a raw action."""
    from .backends import read_request, write_reply

    while True:
        req = read_request(r, conn, 0)
        if req is None:
            return
        write_reply(conn, req, Reply(200, b"next"))


def test_large_response_head(core, http_backend) -> None:
    """A 40 KiB response head (bigger than a receive buffer) is relayed intact."""
    big = "v" * 40_000
    be = http_backend(lambda req: Reply(200, b"body", headers=[("X-Big", big)]))
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        for _ in range(2):
            r = conn.request("GET", "/")
            assert r.header("x-big") == big and r.body == b"body"


def test_absolute_form_request_target(core, http_backend) -> None:
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("api", "b", prefix="/api"))], [cluster("b", be.address)]))
    r = get(port, "http://test.local/api/items?x=1")
    assert r.status == 200
    assert json.loads(r.body)["target"] == "/api/items?x=1"


@pytest.mark.parametrize("target,upstream", [("http://test.local", "/"), ("http://test.local?x=1", "/?x=1"),
                                             ("http://test.local:8080?x=/y", "/?x=/y")])
def test_absolute_form_without_a_path(core, http_backend, target: str, upstream: str) -> None:
    """The path of an absolute-form target may be empty: upstream it is "/", the query kept."""
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    r = get(port, target)
    assert r.status == 200
    assert json.loads(r.body)["target"] == upstream


def test_absolute_form_authority_routes_and_replaces_host(core, http_backend) -> None:
    """RFC 9112 3.2.2: a proxy takes the host from an absolute-form target and sends a Host made
    from it, whatever the client's Host said (routing on one and sending the other would let a
    client reach a route's backend under another name)."""
    be_a, be_b = http_backend(headers_app), http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("a", "a", hostnames=["a.example"]), rule("b", "b", hostnames=["b.example"]))],
                [cluster("a", be_a.address), cluster("b", be_b.address)]))
    r = get(port, "http://b.example:8080/x", host="a.example")
    assert r.status == 200
    doc = json.loads(r.body)
    assert (be_a.count, be_b.count) == (0, 1)
    assert [v for k, v in doc["headers"] if k.lower() == "host"] == ["b.example:8080"]
    assert doc["target"] == "/x"


@pytest.mark.parametrize("target", ["http:///x", "http://user@b.example/x", "http://user:pw@b.example/"])
def test_absolute_form_without_a_host_or_with_userinfo_is_a_400(core, http_backend, target: str) -> None:
    be = http_backend(headers_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    assert get(port, target).status == 400
    assert be.count == 0


def test_200_concurrent_http_connections(core, nginx) -> None:
    port = free_port()
    c = core(nginx_cfg(port, nginx))
    conns = [Conn(port, timeout=10) for _ in range(200)]
    try:
        for i, conn in enumerate(conns):
            conn.send(build_request("GET", f"/c/{i}"))
        for i, conn in enumerate(conns):
            r = conn.read_response()
            assert r.status == 200 and nginx_echo(r)["uri"] == f"/c/{i}"
        assert sum(t.conns_active for t in c.totals()) == 200
    finally:
        for conn in conns:
            conn.close()
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "all 200 released")


def test_deep_pipeline(core, nginx) -> None:
    """300 pipelined requests in one write (far more than the proxy queues per connection)."""
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port, timeout=10) as conn:
        conn.send(b"".join(build_request("GET", f"/deep/{i}") for i in range(300)))
        for i in range(300):
            r = conn.read_response()
            assert r.status == 200 and nginx_echo(r)["uri"] == f"/deep/{i}", (i, r)


def test_pipelined_posts_with_bodies(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", be.address)]))
    bodies = [os.urandom(n) for n in (10, 20_000, 0, 70_000, 5)]
    with Conn(port) as conn:
        conn.send(b"".join(build_request("POST", f"/b/{i}", body=b) for i, b in enumerate(bodies)))
        for b in bodies:
            r = conn.read_response()
            assert r.text.split()[:2] == [str(len(b)), hashlib.sha256(b).hexdigest()]


def test_large_upload_with_backpressure(core, http_backend) -> None:
    """16 MiB upload to a backend that reads slowly at first: streamed, never lost."""
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", be.address)]))
    body = os.urandom(16 << 20)
    with Conn(port, timeout=20) as conn:
        r = conn.request("PUT", "/big", body=body)
    assert r.text.split() == [str(len(body)), hashlib.sha256(body).hexdigest(), "length"]


def test_early_response_before_body_end(core, tcp_server) -> None:
    """The backend answers 413 after the head, before reading a 4 MiB body, and closes: the
    client gets the 413 (the connection then closes: its stream cannot be resynchronised)."""
    def handler(conn, index):  # type: ignore[no-untyped-def]
        if recv_head(conn) is None:
            return
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(1 << 16):  # drain until the proxy closes, so no RST races the answer
            pass

    srv = tcp_server(handler)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", srv.address)]))
    with Conn(port, timeout=5) as conn:
        conn.send(build_request("POST", "/up", [("Content-Length", str(4 << 20))]))
        try:
            conn.send(b"x" * (1 << 20))
        except OSError:
            pass
        r = conn.read_response()
        assert r.status == 413 and r.body == b"nope"


def test_close_delimited_response(core, http_backend) -> None:
    """A response without Content-Length or chunked ends when the backend closes: the proxy
    must relay the body and then close the client connection (the only end-of-body signal
    left), or re-frame it; a client must never wait forever for the end of the body."""
    from .backends import raw_then_close

    be = http_backend(lambda req: raw_then_close(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                                                 b"body framed by close"))
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port, timeout=3) as conn:
        r = conn.request("GET", "/")
        assert r.status == 200 and r.body == b"body framed by close"


def test_interim_103_then_final(core, http_backend) -> None:
    """1xx interim responses (103 Early Hints) are relayed and the final response follows."""
    def act(conn, r):  # type: ignore[no-untyped-def]
        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        _serve_rest(conn, r)

    be = http_backend(lambda req: act)
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        conn.send(build_request("GET", "/"))
        status, _, headers, _ = conn.read_head()
        assert status == 103 and ("Link", "</a.css>; rel=preload") in headers
        r = conn.read_response()
        assert r.status == 200 and r.body == b"final"
        assert conn.request("GET", "/after").body == b"next"


def test_wrk_keepalive_load(core, nginx) -> None:
    """A real load generator: wrk, 50 keep-alive connections for 1 s, no errors, all 2xx."""
    import re
    import shutil

    if not shutil.which("wrk"):
        pytest.fail("wrk is not installed (Debian wrk; `make setup`)")
    port = free_port()
    c = core(nginx_cfg(port, nginx))
    out = subprocess.run(["wrk", "-t1", "-c50", "-d1s", f"http://127.0.0.1:{port}/wrk"], capture_output=True,
                         text=True, timeout=15)
    assert out.returncode == 0, out.stderr
    m = re.search(r"(\d+) requests in", out.stdout)
    assert m, out.stdout
    done = int(m.group(1))
    assert done > 1000, out.stdout
    assert "Socket errors" not in out.stdout and "Non-2xx" not in out.stdout, out.stdout
    st = c.rule_stats()[("web", "all")]["codes"]
    assert st["2xx"] >= done and st["4xx"] == st["5xx"] == 0, st
