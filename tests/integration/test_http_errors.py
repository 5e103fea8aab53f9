"""Hostile input, limits, and the proxy's own error responses (400/404/408/431/502/503/504),
plus retries. After every hostile exchange the proxy must still serve a normal request."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest

from ringlane_sidecar.config.model import Limits, Retry, Timeouts

from .backends import Flaky, Reply, digest_app, headers_app, raw_then_close, reset_action, stall_forever
from .helpers import Closed, Conn, wait_codes, cluster, config, free_port, get, http_listener, nginx_echo, rule, wait_for

pytestmark = pytest.mark.timeout(30)


def healthy(port: int) -> None:
    r = get(port, "/healthy")
    assert r.status == 200, r


def nginx_cfg(port: int, nginx, limits: Limits | None = None):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)], limits=limits)


def expect_status_then_eof(conn: Conn, status: int) -> None:
    """The proxy itself answers status (not the backend) and closes the connection."""
    r = conn.read_response()
    assert (r.status, r.header("server")) == (status, "ringlane"), r
    assert conn.at_eof(2), "the connection stayed open after a 4xx for a broken stream"


SMUGGLING = {
    "cl_te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_cl": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "duplicate_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    # RFC 9112 6.1: faulty framing (an HTTP/1.0 request goes up as 1.0)
    "http10_te": b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "duplicate_cl_same": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "bare_lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "bare_lf_in_header": b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    "space_before_colon": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello",
    "bad_chunk_size": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    # RFC 9112 3.2: no Host, or more than one, MUST be answered 400 (two Hosts let the proxy
    # route on one while the backend serves the other)
    "missing_host": b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
    "duplicate_host": b"GET / HTTP/1.1\r\nHost: shop.example.com\r\nHost: evil.example.com\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "te_not_chunked_last": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "negative_cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
    "not_http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    # the HTTP/2 preface method on an HTTP/1.1 line (found by the fuzzer)
    "pri_method": b"PRI /api HTTP/1.1\r\nHost: x\r\n\r\n",
}

# Not HTTP/1.x: answered 505, never rewritten into an HTTP/1.1 request for the backend.
WRONG_VERSION = {
    "http09": b"GET /api\r\nHost: x\r\n\r\n",
    "http09_pri": b"PRI /api/u\r\nx-canary: 1\r\n\r\n",
    "http2_line": b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
}


BODY_LEVEL = {"bad_chunk_size"}  # the head is valid and already forwarded when the body turns out bad


@pytest.mark.parametrize("shape", sorted(SMUGGLING))
def test_hostile_request_gets_400(core, nginx, shape) -> None:
    port = free_port()
    c = core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        conn.send(SMUGGLING[shape])
        expect_status_then_eof(conn, 400)
    healthy(port)
    if shape not in BODY_LEVEL:
        assert c.cluster_stats()["a"]["requests"] == 1  # only the health check reached the backend


@pytest.mark.parametrize("shape", sorted(WRONG_VERSION))
def test_wrong_http_version(core, nginx, shape) -> None:
    port = free_port()
    c = core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        conn.send(WRONG_VERSION[shape])
        expect_status_then_eof(conn, 505)
    healthy(port)
    assert c.cluster_stats()["a"]["requests"] == 1  # nothing but the health check reached nginx


def test_hostile_pipelined_after_good_request(core, nginx) -> None:
    """A good request, then a smuggling attempt on the same connection: 200, then 400 and close."""
    port = free_port()
    core(nginx_cfg(port, nginx))
    with Conn(port) as conn:
        conn.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLING["cl_te"])
        r = conn.read_response()
        assert r.status == 200 and nginx_echo(r)["uri"] == "/first"
        expect_status_then_eof(conn, 400)
    healthy(port)


@pytest.mark.parametrize("size", [12_000, 40_000], ids=["one-buffer", "spanning-buffers"])
def test_oversized_header_block_431(core, http_backend, size) -> None:
    limit = 8192 if size < 16384 else 32768
    be = http_backend(headers_app)  # nginx itself refuses heads over 8 KiB
    port = free_port()
    core(config([http_listener(port, rule("all", "h"))], [cluster("h", be.address)],
                limits=Limits(max_request_header_bytes=limit, request_header_timeout="2s")))
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
        expect_status_then_eof(conn, 431)
    assert be.count == 0
    # just under the limit still works
    with Conn(port) as conn:
        r = conn.request("GET", "/", [("X-Big", "b" * (limit - 200))])
        assert r.status == 200
        assert json.loads(r.body)["headers"][1] == ["X-Big", "b" * (limit - 200)]


def test_head_split_across_receives_with_a_body_behind_it_is_not_431(core, http_backend) -> None:
    """A 5 KiB head in two segments under an 8 KiB limit, the second followed by a 12 KiB body:
    only head bytes count against the limit (the body used to be counted with them)."""
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("all", "d"))], [cluster("d", be.address)],
                limits=Limits(max_request_header_bytes=8192, request_header_timeout="5s")))
    body = os.urandom(12 << 10)
    head = (f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"X-Pad: {'p' * 5000}\r\n\r\n").encode()
    with Conn(port) as conn:
        conn.send(head[:3000])
        time.sleep(0.2)  # makes the proxy receive the head in two parts (the case under test)
        conn.send(head[3000:] + body)
        r = conn.read_response()
        assert r.status == 200, r
        assert r.text.split() == [str(len(body)), hashlib.sha256(body).hexdigest(), "length"]


def test_oversized_header_block_trickled_431(core, nginx) -> None:
    """The limit also holds when the head arrives in many small segments."""
    port = free_port()
    core(nginx_cfg(port, nginx, Limits(max_request_header_bytes=4096, request_header_timeout="5s")))
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        status = None
        try:
            for i in range(100):
                conn.send(f"X-H{i}: {'v' * 90}\r\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status = conn.read_response().status
        except (Closed, ConnectionResetError):
            status = None
        assert status == 431
    healthy(port)


def test_too_many_headers_431(core, nginx) -> None:
    port = free_port()
    core(nginx_cfg(port, nginx, Limits(max_request_headers=20, request_header_timeout="2s")))
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(30)) + b"\r\n")
        expect_status_then_eof(conn, 431)
    with Conn(port) as conn:  # 19 + Host = 20 is allowed
        assert conn.request("GET", "/", [(f"X-{i}", "v") for i in range(19)]).status == 200
    healthy(port)


def test_slowloris_cut_within_header_timeout(core, nginx) -> None:
    timeout_s = 0.5
    port = free_port()
    core(nginx_cfg(port, nginx, Limits(request_header_timeout="500ms")))
    start = time.monotonic()  # before the connection: the proxy's timer cannot have started earlier
    conn = Conn(port)
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
    got = b""
    stop = threading.Event()

    def trickle() -> None:
        for i in range(40):  # one byte every 50 ms: 2 s in all, far beyond the timeout
            if stop.wait(0.05):
                return
            try:
                conn.sock.sendall(b"X-Slow-%d: y\r\n" % i if i % 5 == 0 else b"z")
            except OSError:
                return

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    conn.sock.settimeout(2)
    try:
        while True:
            b = conn.sock.recv(4096)
            if not b:
                break
            got += b
    except ConnectionResetError:
        pass
    elapsed = time.monotonic() - start
    stop.set()
    t.join(2)
    conn.close()
    assert got == b"" or got.startswith(b"HTTP/1.1 408 "), got
    # not re-armed by the trickle (that would cut it after 2.5 s); 1.2 s of room for a loaded machine
    assert timeout_s * 0.8 <= elapsed <= timeout_s + 1.2, f"cut after {elapsed:.3f}s"
    healthy(port)


def test_idle_connection_without_bytes_is_cut(core, nginx) -> None:
    """A connection that never sends a byte is closed by the header timeout as well."""
    port = free_port()
    core(nginx_cfg(port, nginx, Limits(request_header_timeout="300ms")))
    with Conn(port) as conn:
        start = time.monotonic()
        assert conn.at_eof(3) or conn.buf.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - start <= 2.0  # 300 ms, and room for a loaded machine


def test_idle_keepalive_timeout(core, nginx) -> None:
    """limits.idle_timeout closes a keep-alive connection that sits idle between requests."""
    port = free_port()
    core(nginx_cfg(port, nginx, Limits(idle_timeout="300ms", request_header_timeout="5s")))
    with Conn(port) as conn:
        start = time.monotonic()  # before the request: the idle timer starts after its response
        assert conn.request("GET", "/").status == 200
        assert conn.at_eof(3), "the idle keep-alive connection was not closed"
        assert 0.25 <= time.monotonic() - start <= 2.0


def test_503_for_cluster_without_endpoints(core) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("empty", "none"))], [cluster("none")]))
    with Conn(port) as conn:
        r = conn.request("GET", "/")
        assert r.status == 503
        assert conn.request("GET", "/again").status == 503  # keep-alive survives a proxy 503
    wait_codes(c, "web", "empty", s5xx=2)


def test_503_for_refused_connect(core) -> None:
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("dead", "d"))], [cluster("d", f"127.0.0.1:{dead}")]))
    assert get(port, "/").status == 503
    assert c.cluster_stats()["d"]["connect_errors"] == 1


def test_503_after_connect_timeout(core, blackhole) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("bh", "b"))], [cluster("b", blackhole, connect_timeout="300ms")]))
    start = time.monotonic()
    assert get(port, "/", timeout=3).status == 503
    assert 0.25 <= time.monotonic() - start <= 2.0  # 300 ms, not the kernel's SYN retries (1 s, 3 s ...)
    assert c.cluster_stats()["b"]["connect_errors"] == 1


def test_retry_after_connect_timeout(core, blackhole, http_backend) -> None:
    be = http_backend(lambda req: Reply(200, b"second endpoint"))
    port = free_port()
    core(config([http_listener(port, rule("bh", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                backoff="1ms")))],
                [cluster("b", blackhole, be.address, connect_timeout="300ms")]))
    with Conn(port, timeout=3) as conn:  # one connection: one worker, round-robin starts at the blackhole
        for _ in range(2):
            start = time.monotonic()
            r = conn.request("GET", "/")
            assert r.status == 200 and r.body == b"second endpoint"
            assert time.monotonic() - start <= 2.0  # 300 ms, not the kernel's SYN retries


def test_502_for_backend_reset(core, http_backend) -> None:
    be = http_backend(lambda req: reset_action)
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    assert get(port, "/").status == 502
    assert be.count == 1


def test_502_for_backend_garbage(core, http_backend) -> None:
    be = http_backend(lambda req: raw_then_close(b"THIS IS NOT HTTP AT ALL\r\n\r\n"))
    port = free_port()
    core(config([http_listener(port, rule("g", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        assert conn.request("GET", "/").status == 502
        assert conn.request("GET", "/again").status == 502


def test_502_for_backend_eof_before_response(core, http_backend) -> None:
    be = http_backend(lambda req: raw_then_close(b""))
    port = free_port()
    core(config([http_listener(port, rule("g", "b"))], [cluster("b", be.address)]))
    assert get(port, "/").status == 502


def test_truncated_response_is_cut_not_completed(core, http_backend) -> None:
    """The backend promises 100 bytes, sends 10, closes: the client must see a cut, not a short 200."""
    be = http_backend(lambda req: raw_then_close(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"))
    port = free_port()
    core(config([http_listener(port, rule("t", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        with pytest.raises((Closed, ConnectionResetError)):
            conn.request("GET", "/")


def test_504_for_stalling_backend(core, http_backend) -> None:
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    c = core(config([http_listener(port, rule("slow", "s", timeouts=Timeouts(request="400ms")))],
                    [cluster("s", be.address)]))
    try:
        for i in range(3):  # three separate deadlines, each must fire on time
            start = time.monotonic()
            r = get(port, f"/{i}", timeout=2)
            elapsed = time.monotonic() - start
            assert r.status == 504
            assert 0.35 <= elapsed <= 1.8, elapsed  # 400 ms, and room for a loaded machine
        wait_codes(c, "web", "slow", s5xx=3)
    finally:
        release.set()


def test_504_backend_request_timeout(core, http_backend) -> None:
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    core(config([http_listener(port, rule("slow", "s", timeouts=Timeouts(request="5s", backend_request="300ms")))],
                [cluster("s", be.address)]))
    try:
        start = time.monotonic()
        assert get(port, "/", timeout=4).status == 504
        assert time.monotonic() - start <= 2.5  # backend_request's 300 ms, not request's 5 s
    finally:
        release.set()


# ---- retries ----

def drop_first(app):  # type: ignore[no-untyped-def]
    """The first connection is reset as soon as its request is read; later ones are served by app."""
    def wrapped(req):  # type: ignore[no-untyped-def]
        return reset_action if req.conn_index == 0 else app(req)
    return wrapped


def ok_app(req):  # type: ignore[no-untyped-def]
    return Reply(200, f"ok {req.target}\n".encode())


def test_retry_on_reset_succeeds(core, http_backend) -> None:
    be = http_backend(drop_first(ok_app))
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("reset",), backoff="10ms")))],
                [cluster("b", be.address)]))
    r = get(port, "/x", timeout=2)
    assert r.status == 200 and r.text == "ok /x\n"
    assert be.count == 2


def test_no_retry_configured_reset_is_502(core, http_backend) -> None:
    """Control for the test above: the same backend without retry gives 502."""
    be = http_backend(drop_first(ok_app))
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    assert get(port, "/x").status == 502
    assert get(port, "/x").status == 200


def test_retry_on_connect_failure_succeeds(core, http_backend) -> None:
    """Round-robin over [refused, good]: every request ends 200 thanks to the retry."""
    be = http_backend(ok_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("connect-failure",),
                                                                     backoff="1ms")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]))
    statuses = [get(port, f"/{i}").status for i in range(10)]
    assert statuses == [200] * 10
    assert c.cluster_stats()["b"]["connect_errors"] >= 1


def test_connect_failure_without_retry_is_503(core, http_backend) -> None:
    be = http_backend(ok_app)
    port, dead = free_port(), free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", f"127.0.0.1:{dead}", be.address)]))
    statuses = [get(port, f"/{i}").status for i in range(10)]
    assert 503 in statuses and 200 in statuses


def test_retry_on_503_then_200(core, http_backend) -> None:
    flaky = Flaky(fail=1, code=503)
    be = http_backend(flaky)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("503",), backoff="10ms")))],
                    [cluster("b", be.address)]))
    with Conn(port, timeout=2) as conn:
        r = conn.request("GET", "/")
        assert r.status == 200, r
        assert r.text == "ok after 1 failure(s)\n"
        assert conn.request("GET", "/next").status == 200  # the client connection is still good
    assert be.count == 3
    wait_codes(c, "web", "r", s2xx=2)


def test_retry_on_503_gives_up_after_attempts(core, http_backend) -> None:
    be = http_backend(Flaky(fail=100, code=503))
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("503",), backoff="1ms")))],
                [cluster("b", be.address)]))
    r = get(port, "/")
    assert r.status == 503
    assert be.count == 3  # the first try and two retries


def test_503_not_retried_when_not_listed(core, http_backend) -> None:
    be = http_backend(Flaky(fail=1, code=503))
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("502",), backoff="1ms")))],
                [cluster("b", be.address)]))
    r = get(port, "/")
    assert r.status == 503 and r.text == "failing\n"  # the backend's own 503 body, passed through
    assert be.count == 1


def test_no_retry_for_post_on_503(core, http_backend) -> None:
    be = http_backend(Flaky(fail=1, code=503))
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("503",), backoff="1ms")))],
                [cluster("b", be.address)]))
    r = get(port, "/", method="POST", body=b"payload")
    assert r.status == 503
    assert be.count == 1


def test_no_retry_for_bodyless_post_on_reset(core, http_backend) -> None:
    """A POST may have had effects before the reset: not idempotent, not retried."""
    be = http_backend(drop_first(ok_app))
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("reset",), backoff="1ms")))],
                [cluster("b", be.address)]))
    r = get(port, "/", method="POST", headers=[("Content-Length", "0")])
    assert r.status == 502
    assert be.count == 1


def test_proxy_healthy_after_many_errors(core, http_backend, nginx) -> None:
    """Mix every failure kind, then serve 50 normal requests on one connection."""
    garbage = http_backend(lambda req: raw_then_close(b"garbage\r\n\r\n"))
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("good", "a", prefix="/good"), rule("bad", "g", prefix="/bad"),
                                   rule("dead", "d", prefix="/dead"))],
                    [cluster("a", nginx.a), cluster("g", garbage.address), cluster("d", f"127.0.0.1:{dead}")]))
    for _ in range(20):
        assert get(port, "/bad").status == 502
        assert get(port, "/dead").status == 503
        assert get(port, "/nothing").status == 404
        with Conn(port) as conn:
            conn.send(SMUGGLING["obs_fold"])
            conn.read_response()
    with Conn(port) as conn:
        for i in range(50):
            assert conn.request("GET", f"/good/{i}").status == 200
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "all connections closed")
