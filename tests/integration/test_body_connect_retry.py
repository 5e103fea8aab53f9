"""Requests with a body and retries. Until an upstream connection is up nothing of the request
has reached a backend, so a failed connection is retried for a request with a body as for one
without (the body received so far is kept until a connection is up, bounded like the queue to
one upstream). Once a connection took the body it is streamed, not kept: a reset then ends the
request with 502, whatever the method."""
from __future__ import annotations

import hashlib
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

import pytest

from ringlane_sidecar.config.model import Limits, Retry, Timeouts

from .backends import Reader, Reply, Request, digest_app, digest_of, reset_action
from .helpers import (Conn, build_request, cluster, config, free_port, http_listener, in_flight, rule, wait_for,
                      wait_settled)

pytestmark = pytest.mark.timeout(60)

ONE = [0]  # one worker: round-robin over [refused, live] starts at the refused endpoint


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def test_body_is_replayed_after_a_refused_connection(core, http_backend) -> None:
    """POST and PUT, by length and chunked, alternate between a refused endpoint and a live one:
    every one ends 200 with the body the client sent, and the backend saw each exactly once."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="1ms")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    body = os.urandom(300 * 1024)  # many receive buffers
    with Conn(port, timeout=10) as conn:
        for i in range(4):
            method = "POST" if i % 2 == 0 else "PUT"
            conn.send(build_request(method, f"/by-length/{i}", body=body))
            r = conn.read_response()
            assert (r.status, r.text.split()) == (200, digest_of(body, "length")), r
            conn.send(build_request(method, f"/chunked/{i}", [("Transfer-Encoding", "chunked")]) +
                      chunked(body, 40000))
            r = conn.read_response()
            assert (r.status, r.text.split()) == (200, digest_of(body, "chunked")), r
    assert be.count == 8
    assert c.cluster_stats()["b"]["connect_errors"] >= 4  # half of them went to the refused one first


def test_body_sent_during_the_retry_backoff_is_kept(core, http_backend) -> None:
    """The connection is refused at once; the body (1 MiB, far more than one attempt's queue)
    arrives while the proxy waits out the backoff: it stops reading at the queue's bound and the
    next attempt gets all of it, in order."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="300ms")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    body = os.urandom(1 << 20)
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/upload", [("Content-Length", str(len(body)))]))
        conn.send(body)
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, digest_of(body, "length")), r
        assert c.cluster_stats()["b"]["connect_errors"] == 1
        assert conn.request("GET", "/after").status == 200  # the connection stays usable
    assert be.count == 2


def test_body_without_connect_failure_retry_is_503(core, http_backend) -> None:
    """A rule that retries resets only does not replay a body on a refused connection."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("reset",), backoff="1ms")))],
                [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    with Conn(port) as conn:
        r = conn.request("POST", "/", body=b"x" * 1000)
    assert r.status == 503
    assert be.count == 0


def test_body_that_reached_the_upstream_is_not_replayed(core, http_backend) -> None:
    """An idempotent PUT with a body, reset by the upstream after it took the request: the body
    was streamed and is gone, so the reset is answered 502 even with reset retries on."""
    be = http_backend(lambda req: reset_action)
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("reset", "connect-failure"),
                                                                 backoff="1ms")))],
                [cluster("b", be.address)]), cpus=ONE)
    with Conn(port) as conn:
        r = conn.request("PUT", "/", body=b"y" * 5000)
    assert r.status == 502
    assert be.count == 1


# ---- bodies that arrive while the retry waits ----

def connect_errors(c, n: int) -> None:  # type: ignore[no-untyped-def]
    """Waits until the n-th connect failure (the retry's backoff starts right after it)."""
    wait_for(lambda: c.cluster_stats()["b"]["connect_errors"] >= n, 10,
             lambda: f"{n} connect failure(s) (now {c.cluster_stats()['b']['connect_errors']})")


def target_digest_app(req: Request) -> Reply:
    """The method and target, then what digest_app answers: tells pipelined answers apart."""
    body = f"{req.method} {req.target} {len(req.body)} {hashlib.sha256(req.body).hexdigest()} " \
           f"{'chunked' if req.chunked else 'length'}\n"
    return Reply(200, body.encode())


@dataclass
class Seen:
    """A chunked request as the raw backend below read it."""
    target: str
    wire: bytes  # everything after the head: chunk framing and trailer section, byte for byte
    body: bytes
    trailers: list[tuple[str, str]]


def chunked_recorder(seen: list[Seen]):  # type: ignore[no-untyped-def]
    """A raw keep-alive backend for chunked requests that keeps the trailer fields (the shared
    HTTP backend drops them) and the body's bytes as they came; answers like digest_app."""
    def handler(conn: socket.socket, index: int) -> None:
        r = Reader(conn)
        while True:
            line = r.line()
            if line is None:
                return
            target = line.decode("latin-1").split(" ")[1]
            while r.line():  # the rest of the head (the proxy sends Transfer-Encoding: chunked)
                pass
            wire, parts, trailers = b"", [], []
            while True:
                size_line = r.line()
                assert size_line is not None, "EOF inside a chunked body"
                wire += size_line + b"\r\n"
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    break
                data = r.exact(size + 2)
                wire += data
                parts.append(data[:-2])
            while (t := r.line()):
                wire += t + b"\r\n"
                k, _, v = t.decode("latin-1").partition(":")
                trailers.append((k.strip(), v.strip()))
            wire += b"\r\n"
            body = b"".join(parts)
            seen.append(Seen(target, wire, body, trailers))
            reply = f"{len(body)} {hashlib.sha256(body).hexdigest()} chunked\n".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(reply) + reply)
    return handler


def test_chunked_body_with_trailer_trickling_across_two_refused_endpoints(core, tcp_server) -> None:
    """A chunked body with chunk extensions and a trailer field, sent a few bytes per segment
    while two endpoints refuse in turn (so the proxy holds it through both backoffs, and stops
    reading at its bound): the live endpoint gets the chunked section byte for byte, trailer
    included, exactly once."""
    seen: list[Seen] = []
    be = tcp_server(chunked_recorder(seen))
    port, dead1, dead2 = free_port(), free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("connect-failure",),
                                                                     backoff="50ms")))],
                    [cluster("b", f"127.0.0.1:{dead1}", f"127.0.0.1:{dead2}", be.address)]), cpus=ONE)
    body = os.urandom(1500)
    sizes = [1, 17, 300, 2, 700, 480]
    parts, at = [], 0
    for i, n in enumerate(sizes):
        ext = b";x=1" if i % 2 else b""
        parts.append(f"{n:x}".encode() + ext + b"\r\n" + body[at:at + n] + b"\r\n")
        at += n
    assert at == len(body)
    trailer = ("X-Body-Sha256", hashlib.sha256(body).hexdigest())
    wire = b"".join(parts) + b"0\r\n" + f"{trailer[0]}: {trailer[1]}\r\n\r\n".encode()
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/trailer", [("Transfer-Encoding", "chunked"), ("Trailer", trailer[0])]))
        for i in range(0, len(wire), 7):
            conn.send(wire[i:i + 7])
            time.sleep(0.001)  # pacing: small segments, spread over the backoffs (not a synchronisation)
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, digest_of(body, "chunked")), r
        assert c.cluster_stats()["b"]["connect_errors"] == 2
    assert len(seen) == 1 and be.accepted == 1, seen
    assert seen[0].target == "/trailer"
    assert seen[0].body == body
    assert seen[0].trailers == [trailer]
    assert seen[0].wire == wire, "the chunked section did not reach the backend as the client sent it"


def test_body_parts_sent_during_each_of_three_backoffs_arrive_in_order(core, http_backend) -> None:
    """Three endpoints refuse in turn, then one takes the request: one part of the body is sent
    after each failure (during that backoff; the later ones past the proxy's bound, so they wait
    unread) and the last one after the third; the backend gets the whole body, in order, once."""
    be = http_backend(digest_app)
    port, dead = free_port(), [free_port() for _ in range(3)]
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=3, on=("connect-failure",),
                                                                     backoff="1s")))],
                    [cluster("b", *(f"127.0.0.1:{d}" for d in dead), be.address)]), cpus=ONE)
    body = os.urandom(20_000 + 60_000 + 150_000 + 1234)
    cuts = [0, 20_000, 80_000, 230_000, len(body)]
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/parts", [("Content-Length", str(len(body)))]))
        for n in range(3):
            connect_errors(c, n + 1)
            assert be.accepted == 0
            conn.send(body[cuts[n]:cuts[n + 1]])
        connect_errors(c, 3)
        conn.send(body[cuts[3]:])
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, digest_of(body, "length")), r
    assert c.cluster_stats()["b"]["connect_errors"] == 3
    assert be.count == 1 and be.accepted == 1


def test_body_sent_while_the_connect_hangs_then_retried(core, http_backend, blackhole) -> None:
    """The first endpoint drops SYNs: the body arrives while the connect hangs (it is queued to
    that connection and kept), the connect times out, and more of it arrives during the backoff;
    the live endpoint then gets all of it. (Backoffs of 1 s: the test must see each connect
    error before the next attempt, also on a loaded machine.)"""
    be = http_backend(digest_app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="1s")))],
                    [cluster("b", blackhole, be.address, connect_timeout="300ms")]), cpus=ONE)
    body = os.urandom(400_000)
    with Conn(port, timeout=10) as conn:
        start = time.monotonic()
        conn.send(build_request("PUT", "/hang", [("Content-Length", str(len(body)))]) + body[:100_000])
        connect_errors(c, 1)
        assert time.monotonic() - start >= 0.25, "the connect did not hang"
        assert be.accepted == 0
        conn.send(body[100_000:])
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, digest_of(body, "length")), r
    assert c.cluster_stats()["b"]["connect_errors"] == 1
    assert be.count == 1


def test_expect_continue_comes_from_the_endpoint_reached_after_a_retry(core, http_backend) -> None:
    """Expect: 100-continue and a refused first endpoint: the client waits with its body; the
    100 comes from the live endpoint once the retry reached it; then the body goes and the
    answer has its digest."""
    be = http_backend(digest_app)  # answers 100 Continue to an Expect with a body
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="50ms")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    body = os.urandom(100_000)
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/expect", [("Expect", "100-continue"), ("Content-Length", str(len(body)))]))
        status, _, _, _ = conn.read_head()
        assert status == 100
        assert c.cluster_stats()["b"]["connect_errors"] == 1 and be.accepted == 1
        conn.send(body)
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, digest_of(body, "length")), r
    assert be.count == 1
    assert [v.lower() for v in be.requests[0].header_all("expect")] == ["100-continue"]


def test_pipelined_requests_with_bodies_each_retried(core, http_backend) -> None:
    """A POST with a body, two GETs and a chunked POST in one send, and round-robin sends each
    of them to the refused endpoint first: each is retried (the later ones on the pooled
    connection), and all four are answered in order, each with its own body."""
    be = http_backend(target_digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="20ms")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    first, last = os.urandom(100_000), os.urandom(70_000)
    data = (build_request("POST", "/1", body=first) + build_request("GET", "/2") + build_request("GET", "/3") +
            build_request("POST", "/4", [("Transfer-Encoding", "chunked")]) + chunked(last, 9000))
    empty = digest_of(b"", "length")
    with Conn(port, timeout=10) as conn:
        conn.send(data)
        got = [conn.read_response() for _ in range(4)]
    want = [["POST", "/1", *digest_of(first, "length")], ["GET", "/2", *empty], ["GET", "/3", *empty],
            ["POST", "/4", *digest_of(last, "chunked")]]
    assert [(r.status, r.text.split()) for r in got] == [(200, w) for w in want], got
    assert c.cluster_stats()["b"]["connect_errors"] == 4
    assert [q.target for q in be.requests] == ["/1", "/2", "/3", "/4"]


def test_body_over_the_limit_during_the_backoff_is_413(core, http_backend) -> None:
    """A chunked body (no declared length) grows past maxRequestBodyBytes while the proxy waits
    out the backoff after a refused connect: 413, the next attempt never starts, nothing
    reaches the live endpoint, and the connection and its gauges are released."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="2s")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)],
                    limits=Limits(request_header_timeout="2s", max_request_body_bytes=8192)), cpus=ONE)
    with Conn(port, timeout=10) as conn:
        # chunks without the last one: the body goes on
        conn.send(build_request("POST", "/big", [("Transfer-Encoding", "chunked")]) + chunked(b"a" * 3000, 3000)[:-5])
        connect_errors(c, 1)
        start = time.monotonic()
        conn.send(chunked(os.urandom(12_000), 4000)[:-5])  # past the limit during the backoff
        r = conn.read_response()
        assert r.status == 413, r
        assert time.monotonic() - start < 1.5, "answered at the end of the backoff, not when the body grew"
        assert conn.at_eof(5), "the connection stays open after a body it did not read"
    wait_settled(c)
    assert c.cluster_stats()["b"]["requests"] == 1, "an attempt started after the 413"
    assert be.accepted == 0 and be.count == 0


def test_request_timeout_during_the_backoff_while_the_body_arrives_is_504(core, http_backend) -> None:
    """timeouts.request ends before the backoff would: the client is still sending its body
    (past the proxy's bound, so it waits unread) when the 504 comes; no attempt reaches the live
    endpoint, and the connection and its gauges are released."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", timeouts=Timeouts(request="600ms"),
                                              retry=Retry(attempts=1, on=("connect-failure",), backoff="5s")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    size = 1 << 20
    with Conn(port, timeout=10) as conn:
        start = time.monotonic()
        conn.send(build_request("POST", "/slow", [("Content-Length", str(size))]))
        connect_errors(c, 1)
        sent = 0
        deadline = time.monotonic() + 10
        while not select.select([conn.sock], [], [], 0.02)[0]:  # pacing: a piece per 20 ms until an answer
            assert time.monotonic() < deadline, "no answer while the body was arriving"
            conn.send(b"z" * 1000)
            sent += 1000
        r = conn.read_response()
        elapsed = time.monotonic() - start
        assert r.status == 504, r
        assert 0.5 <= elapsed < 4, f"504 after {elapsed:.2f}s (request timeout 600ms, backoff 5s)"
        assert 0 < sent < size
        assert conn.at_eof(5), "the connection stays open after a body it did not read"
    wait_settled(c)
    assert c.cluster_stats()["b"]["requests"] == 1
    assert be.accepted == 0


def stuff(conn: Conn, data: bytes) -> int:
    """Sends data without blocking until the kernel takes no more for 0.5 s; returns how much went."""
    conn.sock.setblocking(False)
    sent = 0
    try:
        while sent < len(data) and select.select([], [conn.sock], [], 0.5)[1]:
            try:
                sent += conn.sock.send(data[sent:sent + 65536])
            except BlockingIOError:
                pass
    finally:
        conn.sock.settimeout(10)
    return sent


@pytest.mark.parametrize("paused", [False, True], ids=["reading", "paused"])
@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_gone_mid_body_while_the_retry_waits(core, http_backend, how: str, paused: bool) -> None:
    """The client closes (FIN) or resets (SO_LINGER 0) mid-body during the backoff after a
    refused connect. While the proxy still reads ("reading": a small part of the body sent) it
    sees that at once and no attempt follows; once it stopped reading at its bound ("paused":
    the client sent until the kernel took no more) it sees it no later than when the next
    attempt connects. Either way the client connection, the upstream one and the request in
    flight are all released, and no upstream connection is pooled after a partial body."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="3s")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    size = 64 << 20
    conn = Conn(port, timeout=10)
    try:
        conn.send(build_request("POST", "/gone", [("Content-Length", str(size))]))
        connect_errors(c, 1)
        if paused:
            sent = stuff(conn, b"p" * (16 << 20))  # the kernel's buffers take a few MiB at most
            assert 8 * 16384 < sent < 16 << 20, f"sent {sent}: the proxy did not stop reading during the backoff"
        else:
            conn.send(b"q" * 3000)
        assert in_flight(c) == (1, 0, 0), "one client connection, nothing upstream during the backoff"
        if how == "reset":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        conn.close()
    wait_settled(c)
    assert sum(t.upstream_conns_idle for t in c.totals()) == 0, "a connection that took a partial body was pooled"
    if not paused:
        assert be.accepted == 0, "the proxy noticed the client had gone only when the retry ran"
    assert be.count == 0
