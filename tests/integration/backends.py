"""Small real backends for what nginx cannot do: a threaded raw-socket server (one handler
thread per connection) and a minimal HTTP/1.1 keep-alive server whose behaviour per request
is a Python function (body digests, header echo, chunked replies, 503-once, stalls, resets,
garbage, 101 + echo)."""
from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable


class TcpServer:
    """Listens on 127.0.0.1:<ephemeral>; runs handler(conn, index) in a thread per connection."""

    def __init__(self, handler: Callable[[socket.socket, int], None], backlog: int = 1024) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.errors: list[BaseException] = []
        self.closing = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"tcpserver-{self.port}")
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                index = self.accepted
                self.accepted += 1
                self.conns.append(conn)
            threading.Thread(target=self._run, args=(conn, index), daemon=True).start()

    def _run(self, conn: socket.socket, index: int) -> None:
        try:
            self.handler(conn, index)
        except OSError:
            pass  # the peer went away: normal for the hostile tests
        except BaseException as exc:  # noqa: BLE001 -- surfaced through .errors
            self.errors.append(exc)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(5)


def reset(conn: socket.socket) -> None:
    """Close with RST instead of FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def recv_head(conn: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes] | None:
    """Reads (after buf) up to the end of a request head: the head without its blank line and
    what came after it; None at EOF first."""
    while b"\r\n\r\n" not in buf:
        d = conn.recv(65536)
        if not d:
            return None
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def recv_all(conn: socket.socket) -> bytes:
    parts = []
    while True:
        b = conn.recv(1 << 16)
        if not b:
            return b"".join(parts)
        parts.append(b)


# ---- raw handlers ----

def echo_handler(conn: socket.socket, index: int) -> None:
    """Echo every byte; on EOF send FIN back."""
    while True:
        b = conn.recv(1 << 18)
        if not b:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(b)


def sha_sink_handler(conn: socket.socket, index: int) -> None:
    """Hash everything until EOF, then answer '<bytes> <sha256 hex>\\n' and close."""
    h = hashlib.sha256()
    n = 0
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    while True:
        k = conn.recv_into(buf)
        if not k:
            break
        h.update(view[:k])
        n += k
    conn.sendall(f"{n} {h.hexdigest()}\n".encode())


# ---- a minimal HTTP/1.1 server ----

class Reader:
    """Buffered reads over a socket that can hand back what it buffered (for tunnels)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        b = self.sock.recv(1 << 16)
        if not b:
            return False
        self.buf += b
        return True

    def line(self) -> bytes | None:
        while b"\n" not in self.buf:
            if not self._fill():
                return None
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def take(self) -> bytes:
        out, self.buf = self.buf, b""
        return out


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    conn_index: int
    chunked: bool = False

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Iterable[tuple[str, str]] = ()
    chunks: list[bytes] | None = None  # sent with Transfer-Encoding: chunked, one write per chunk
    close: bool = False


# An app returns a Reply, or a function that takes over the raw connection (then it is closed).
RawAction = Callable[[socket.socket, Reader], None]
App = Callable[[Request], "Reply | RawAction"]

REASONS = {100: "Continue", 101: "Switching Protocols", 200: "OK", 404: "Not Found", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}


def read_request(r: Reader, conn: socket.socket, index: int) -> Request | None:
    line = r.line()
    while line == b"":
        line = r.line()
    if line is None:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        h = r.line()
        if h is None:
            raise EOFError("EOF inside a request head")
        if not h:
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
    req = Request(method, target, headers, b"", index)
    te = (req.header("transfer-encoding") or "").lower()
    cl = int(req.header("content-length") or 0)
    if (req.header("expect") or "").lower() == "100-continue" and ("chunked" in te or cl > 0):
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in te:
        req.chunked = True
        parts = []
        while True:
            size_line = r.line()
            if size_line is None:
                raise EOFError("EOF inside a chunked body")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while r.line():
                    pass
                break
            parts.append(r.exact(size))
            r.exact(2)
        req.body = b"".join(parts)
    elif cl:
        req.body = r.exact(cl)
    return req


def write_reply(conn: socket.socket, req: Request, rep: Reply) -> None:
    head = [f"HTTP/1.1 {rep.status} {REASONS.get(rep.status, 'Whatever')}"]
    head += [f"{k}: {v}" for k, v in rep.headers]
    if rep.chunks is not None:
        head.append("Transfer-Encoding: chunked")
    else:
        head.append(f"Content-Length: {len(rep.body)}")
    if rep.close:
        head.append("Connection: close")
    conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    if req.method == "HEAD":
        return
    if rep.chunks is not None:
        for c in rep.chunks:
            conn.sendall(f"{len(c):x}\r\n".encode() + c + b"\r\n")
        conn.sendall(b"0\r\n\r\n")
    elif rep.body:
        conn.sendall(rep.body)


class HttpBackend(TcpServer):
    """HTTP/1.1 with keep-alive; app(req) decides each reply. Records every request it read."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.requests: list[Request] = []
        self.req_lock = threading.Lock()
        super().__init__(self._serve)

    def _serve(self, conn: socket.socket, index: int) -> None:
        # The head and the body are separate writes: without this, Nagle holds the body until the
        # proxy's delayed ACK (40 ms a request).
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        r = Reader(conn)
        while True:
            try:
                req = read_request(r, conn, index)
            except EOFError:
                return
            if req is None:
                return
            with self.req_lock:
                self.requests.append(req)
            rep = self.app(req)
            if callable(rep):
                rep(conn, r)
                return
            write_reply(conn, req, rep)
            if rep.close or (req.header("connection") or "").lower() == "close":
                return

    @property
    def count(self) -> int:
        with self.req_lock:
            return len(self.requests)


# ---- apps ----

def digest_app(req: Request) -> Reply:
    """Echo the body's length and sha256 (and whether it came chunked)."""
    body = f"{len(req.body)} {hashlib.sha256(req.body).hexdigest()} {'chunked' if req.chunked else 'length'}\n"
    return Reply(200, body.encode())


def continue_then_created(before_continue: Callable[[], object], got_body: threading.Event) -> Callable[..., None]:
    """A raw backend for Expect: 100-continue: reads the head, runs before_continue (its wait),
    sends the 100, reads a 4-byte body (then sets got_body), answers 201 "ok", reads to EOF."""
    def handler(conn: socket.socket, index: int) -> None:
        got = recv_head(conn)
        if got is None:
            return
        before_continue()
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = got[1]
        while len(body) < 4:
            d = conn.recv(100)
            if not d:
                return
            body += d
        got_body.set()
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        recv_all(conn)
    return handler


def digest_of(body: bytes, framing: str = "length") -> list[str]:
    """What digest_app answers for body, split in words."""
    return [str(len(body)), hashlib.sha256(body).hexdigest(), framing]


def headers_app(req: Request) -> Reply:
    """Echo the request line and the header list as JSON."""
    doc = {"method": req.method, "target": req.target, "headers": req.headers}
    return Reply(200, json.dumps(doc).encode(), headers=[("Content-Type", "application/json")])


@dataclass
class Flaky:
    """The first `fail` requests get status `code`, the rest 200 (counts across connections)."""

    fail: int = 1
    code: int = 503
    seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, req: Request) -> Reply:
        with self.lock:
            self.seen += 1
            n = self.seen
        if n <= self.fail:
            return Reply(self.code, b"failing\n")
        return Reply(200, f"ok after {n - 1} failure(s)\n".encode())


def endless(conn: socket.socket, r: Reader) -> None:
    """A response far larger than every buffer on the way: the proxy must pause the upstream."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n")
    chunk = b"x" * (1 << 16)
    try:
        while True:
            conn.sendall(chunk)
    except OSError:
        pass  # the proxy closed the upstream connection


def stall_forever(release: threading.Event) -> RawAction:
    """Read the request, never answer until release is set (then close)."""
    def act(conn: socket.socket, r: Reader) -> None:
        release.wait(30)
    return act


def raw_then_close(data: bytes) -> RawAction:
    def act(conn: socket.socket, r: Reader) -> None:
        conn.sendall(data)
    return act


def reset_action(conn: socket.socket, r: Reader) -> None:
    reset(conn)


def upgrade_echo(greeting: bytes = b"") -> RawAction:
    """Answer 101 (websocket), optionally send a greeting, then echo bytes until EOF, then FIN."""
    def act(conn: socket.socket, r: Reader) -> None:
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n" + greeting)
        early = r.take()
        if early:
            conn.sendall(early)
        while True:
            b = conn.recv(1 << 16)
            if not b:
                conn.shutdown(socket.SHUT_WR)
                return
            conn.sendall(b)
    return act
