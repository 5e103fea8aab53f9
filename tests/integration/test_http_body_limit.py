"""limits.maxRequestBodyBytes: a declared Content-Length over the limit gets 413 before anything
goes upstream; a chunked body that grows past it gets 413 while no response byte has gone out
(else a cut), and the upstream connection holding part of it is closed, never pooled. Just at
the limit passes. The connection closes after a 413, lingering so a client still uploading
reads the answer instead of a reset."""
from __future__ import annotations

import hashlib
import socket
import threading

import pytest

from ringlane_sidecar.config.model import Limits

from .backends import digest_app
from .conftest import worker_cpus
from .helpers import Closed, Conn, cluster, config, free_port, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(30)

LIMIT = 1000


def limit_cfg(port: int, backend: str, limit: int = LIMIT):  # type: ignore[no-untyped-def]
    return config([http_listener(port, rule("up", "b"))], [cluster("b", backend)],
                  limits=Limits(max_request_body_bytes=limit, request_header_timeout="5s"))


def expect_413_then_eof(conn: Conn) -> None:
    r = conn.read_response()
    assert (r.status, r.reason, r.header("server")) == (413, "Content Too Large", "ringlane"), r
    assert r.header("connection") == "close"
    assert conn.at_eof(3), "the connection stayed open after 413"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class Recorder:
    """A raw upstream that records what each connection sent and whether it was closed; it never answers."""

    def __init__(self) -> None:
        self.data: dict[int, bytes] = {}
        self.closed: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, conn: socket.socket, index: int) -> None:
        with self.lock:
            self.data[index] = b""
        while True:
            try:
                b = conn.recv(65536)
            except ConnectionResetError:  # the proxy resets a connection holding part of a request
                b = b""
            with self.lock:
                if not b:
                    self.closed.add(index)
                    return
                self.data[index] += b

    def got(self, index: int) -> bytes:
        with self.lock:
            return self.data.get(index, b"")


# ---- Content-Length ----

def test_content_length_over_limit_is_413_before_upstream(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    c = core(limit_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + b"a" * 1001)
        expect_413_then_eof(conn)
    assert be.count == 0
    assert c.cluster_stats()["b"] == {"requests": 0, "connect_errors": 0, "connections_opened": 0, "active": 0}
    st = wait_for(lambda: c.rule_stats().get(("web", "up")), 3, "the 413 to be counted")
    assert st["codes"]["4xx"] == 1


def test_content_length_at_limit_passes(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(limit_cfg(port, be.address))
    body = bytes(range(256)) * 3 + b"z" * (LIMIT - 768)
    with Conn(port) as conn:
        for _ in range(2):  # and the connection stays usable
            r = conn.request("POST", "/up", body=body)
            assert r.status == 200 and r.text == f"{LIMIT} {hashlib.sha256(body).hexdigest()} length\n"


def test_expect_continue_over_limit_gets_413_without_sending_the_body(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(limit_cfg(port, be.address))
    with Conn(port) as conn:
        conn.send(b"PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 50000000\r\n\r\n")
        expect_413_then_eof(conn)
    assert be.count == 0


def test_unlimited_by_default(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(config([http_listener(port, rule("up", "b"))], [cluster("b", be.address)]))
    body = b"q" * 3_000_000
    with Conn(port) as conn:
        r = conn.request("POST", "/up", body=body)
        assert r.status == 200 and r.text.startswith(f"{len(body)} ")


def test_client_still_uploading_reads_the_413(core, http_backend) -> None:
    """A 32 MiB upload refused at its head: the proxy reads and discards the rest (lingering
    close), so the client's send completes and the 413 is read, not lost to a reset."""
    be = http_backend(digest_app)
    port = free_port()
    core(limit_cfg(port, be.address))
    size = 32 << 20
    conn = Conn(port, timeout=10)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            conn.sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"u" * (1 << 20)
            for _ in range(size >> 20):
                conn.sock.sendall(block)
        except OSError as exc:
            errors.append(exc)

    t = threading.Thread(target=upload, daemon=True)
    t.start()
    try:
        expect_413_then_eof(conn)
        t.join(10)
        assert not t.is_alive() and errors == [], f"the upload failed: {errors}"
    finally:
        conn.close()
    assert be.count == 0


# ---- chunked ----

def test_chunked_at_limit_passes(core, http_backend) -> None:
    be = http_backend(digest_app)
    port = free_port()
    core(limit_cfg(port, be.address))
    parts = [b"x" * 300, b"y" * 300, b"z" * 400]  # exactly LIMIT bytes of body; framing not counted
    body = b"".join(parts)
    with Conn(port) as conn:
        for _ in range(2):
            conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                      b"".join(chunk(p) for p in parts) + b"0\r\n\r\n")
            r = conn.read_response()
            assert r.status == 200 and r.text == f"{LIMIT} {hashlib.sha256(body).hexdigest()} chunked\n"


def test_chunked_past_limit_mid_stream_is_413_and_upstream_discarded(core, tcp_server) -> None:
    rec = Recorder()
    up = tcp_server(rec)
    port = free_port()
    c = core(limit_cfg(port, up.address), cpus=worker_cpus()[:1])  # one worker: one pool to check
    with Conn(port) as conn:
        conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a" * 600))
        # The head and the first 600 bytes are upstream already: the body is streamed.
        wait_for(lambda: b"a" * 600 in rec.got(0), 5, "the first chunk to reach the upstream")
        conn.send(chunk(b"b" * 600))  # 1200 > LIMIT
        expect_413_then_eof(conn)
    # The upstream connection holds a partial request: it is closed, not returned to the pool.
    wait_for(lambda: 0 in rec.closed, 5, "the upstream connection to be closed")
    assert b"b" * 600 not in rec.got(0)  # nothing past the limit was forwarded
    wait_for(lambda: c.cluster_stats()["b"]["active"] == 0, 3, "no request in flight")
    st = c.cluster_stats()["b"]
    assert (st["requests"], st["connections_opened"]) == (1, 1)


def test_pooled_connection_not_reused_after_413(core, http_backend) -> None:
    """The same with a real HTTP upstream: the next request arrives on a new upstream connection."""
    be = http_backend(digest_app)
    port = free_port()
    c = core(limit_cfg(port, be.address), cpus=worker_cpus()[:1])
    with Conn(port) as conn:
        assert conn.request("POST", "/up", body=b"warm").status == 200  # upstream connection 0, pooled
        conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a" * 600))
        wait_for(lambda: c.cluster_stats()["b"]["active"] == 1, 5, "the chunked request to go upstream")
        conn.send(chunk(b"b" * 600))
        expect_413_then_eof(conn)
    with Conn(port) as conn:
        r = conn.request("POST", "/up", body=b"after")
        assert r.status == 200 and r.text.startswith("5 ")
    assert [q.conn_index for q in be.requests] == [0, 1], "the connection holding a partial body was reused"


def test_chunked_past_limit_after_response_started_is_cut(core, tcp_server) -> None:
    """The upstream answers before reading the body; then the body grows past the limit. A 413
    cannot follow bytes of another response: the client connection is cut instead."""
    rec = Recorder()

    def early(conn: socket.socket, index: int) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        rec(conn, index)

    up = tcp_server(early)
    port = free_port()
    core(limit_cfg(port, up.address))
    with Conn(port) as conn:
        conn.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"a" * 600))
        status, _, headers, _ = conn.read_head()
        assert status == 200
        assert conn._line() == b"5" and conn._exact(7) == b"hello\r\n"
        conn.send(chunk(b"b" * 600))
        with pytest.raises((Closed, ConnectionResetError)):
            conn._line()  # no 0-chunk, no 413: the response ends in a cut
    wait_for(lambda: 0 in rec.closed, 5, "the upstream connection to be closed")
