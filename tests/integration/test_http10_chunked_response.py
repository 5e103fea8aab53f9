"""An HTTP/1.0 client whose upstream answers chunked anyway (its request went up as 1.0, so a
conforming upstream would not; a misbehaving one does). RFC 9112 6.1: a server "MUST NOT send a
response containing Transfer-Encoding unless the corresponding request indicates HTTP/1.1", and
a 1.0 client cannot read chunk framing: it would keep the size lines in the body. The proxy
forwards the body without its framing, without Transfer-Encoding, and ends it by closing the
client connection (as nginx does); the upstream connection stays in sync and is reused."""
from __future__ import annotations

import hashlib
import os
import socket

import pytest

from .backends import Request
from .helpers import Conn, free_port
from .test_response_path_edges import one_worker, scripted, trickle, wait_zero

pytestmark = pytest.mark.timeout(60)

CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n"
           b"5\r\nhello\r\n1;ext=v\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n")
LENGTH = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext"


def head_and_body(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


@pytest.mark.parametrize("step", [0, 1], ids=["one-write", "byte-per-send"])
@pytest.mark.parametrize("keepalive", [False, True], ids=["plain", "keep-alive-asked"])
def test_chunked_response_reaches_an_http10_client_dechunked_and_close_delimited(core, tcp_server, step, keepalive) -> None:
    """The client gets the body bytes only (no size lines, extensions or trailer), no
    Transfer-Encoding, Connection: close, then EOF; a keep-alive opt-in cannot be honoured (the
    length is unknown). The upstream connection, which was framed correctly, serves the next
    request from the pool."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        data = CHUNKED if n == 0 else LENGTH
        if step:
            trickle(conn, data, step)
        else:
            conn.sendall(data)
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.0\r\nHost: x\r\n" + (b"Connection: keep-alive\r\n" if keepalive else b"") + b"\r\n")
        lines, body = head_and_body(conn.read_to_close())
    assert lines[0] == b"HTTP/1.1 200 OK", lines
    names = [ln.split(b":", 1)[0].lower() for ln in lines[1:]]
    assert b"transfer-encoding" not in names, lines
    assert b"connection: close" in [ln.lower() for ln in lines], lines
    assert b"X-Up: 1" in lines, lines
    assert body == b"hello world!", body
    wait_zero(c, pooled=1)
    with Conn(port) as conn:
        conn.send(b"GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert conn.read_to_close().endswith(b"\r\n\r\nnext")
    assert be.accepted == 1, "the upstream connection was not reused"


def test_large_chunked_response_to_an_http10_client_arrives_whole(core, tcp_server) -> None:
    """2 MiB in chunks of odd sizes, across many receive buffers (and pauses, as the client
    reads slower than the upstream writes): the bytes and their order are kept."""
    payload = os.urandom(2 << 20)

    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        out = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
        for i in range(0, len(payload), 7001):
            piece = payload[i:i + 7001]
            out.append(b"%x\r\n" % len(piece) + piece + b"\r\n")
        out.append(b"0\r\n\r\n")
        conn.sendall(b"".join(out))
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port, timeout=30, rcvbuf=65536, read_size=8192) as conn:
        conn.send(b"GET /big HTTP/1.0\r\nHost: x\r\n\r\n")
        _, body = head_and_body(conn.read_to_close())
    assert len(body) == len(payload)
    assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
    wait_zero(c, pooled=1)


def test_http11_client_still_gets_the_chunked_framing(core, tcp_server) -> None:
    """Only a 1.0 client's response is de-chunked: a 1.1 client gets the upstream's framing,
    trailer included, and its connection stays open."""
    def respond(conn: socket.socket, req: Request, n: int) -> bool:
        conn.sendall(CHUNKED if n == 0 else LENGTH)
        return True

    be = tcp_server(scripted(respond))
    port = free_port()
    c = one_worker(core, port, be.address)
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = conn.read_to_close()
    assert b"Transfer-Encoding: chunked\r\n" in data, data
    assert b"6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\nHTTP/1.1 200 OK\r\n" in data, data
    assert data.endswith(b"\r\n\r\nnext"), data
    wait_zero(c, pooled=1)
