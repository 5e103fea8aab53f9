"""HTTP/1.1 message framing and request smuggling, differential against a real HAProxy.

The same raw client bytes go once through Ringlane and once through HAProxy (mode http,
default options) in front of the same recording backend, which keeps every byte it receives
per connection and reads requests with a strict RFC 9112 parser. Ringlane never forwards bytes
that the backend frames differently from how Ringlane framed them (a request hidden in a body,
a body cut short, a desynchronised stream): that would be request smuggling."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from nginx_proc import nginx_conf, nginx_exe, running_nginx

from .backends import TcpServer
from .helpers import cluster, config, free_port, http_listener, port_open, rule, wait_for

pytestmark = pytest.mark.timeout(60)


# ---- a strict recording backend ----

class BadMessage(Exception):
    pass


@dataclass
class Seen:
    """One request as the backend framed it."""
    conn: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Recorder:
    raw: dict[int, bytearray] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    partial: dict[int, bool] = field(default_factory=dict)  # a connection is inside a request
    lock: threading.Lock = field(default_factory=threading.Lock)
    # a raw response per request target (for the response-side tests); default: a 200 echo
    responses: dict[str, bytes] = field(default_factory=dict)

    def reset(self) -> None:
        with self.lock:
            self.raw.clear()
            self.seen.clear()
            self.errors.clear()
            self.partial.clear()
            self.responses.clear()


class _In:
    def __init__(self, sock: socket.socket, rec: Recorder, index: int) -> None:
        self.sock, self.rec, self.index, self.buf = sock, rec, index, b""

    def fill(self) -> bool:
        b = self.sock.recv(65536)
        if not b:
            return False
        with self.rec.lock:
            self.rec.raw.setdefault(self.index, bytearray()).extend(b)
        self.buf += b
        with self.rec.lock:
            self.rec.partial[self.index] = True
        return True

    def line(self, limit: int = 16384) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > limit:
                raise BadMessage("line too long")
            if not self.fill():
                raise EOFError
        line, _, self.buf = self.buf.partition(b"\r\n")
        if b"\n" in line or b"\r" in line:
            raise BadMessage(f"bare CR/LF in {line!r}")
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise EOFError
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


TCHAR = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def strict_request(r: _In, index: int) -> Seen | None:
    """RFC 9112 read of one request; BadMessage for anything ambiguous."""
    try:
        line = r.line()
    except EOFError:
        if r.buf:
            raise BadMessage(f"EOF with a partial request {r.buf!r}")
        return None
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= TCHAR or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadMessage(f"request line {line!r}")
    headers = []
    while True:
        try:
            h = r.line()
        except EOFError:
            raise BadMessage("EOF in head") from None
        if not h:
            break
        name, colon, value = h.partition(b":")
        if not colon or not name or not set(name) <= TCHAR:
            raise BadMessage(f"field line {h!r}")
        v = value.strip(b" \t")
        if any(c < 0x20 and c != 0x09 or c == 0x7f for c in v):
            raise BadMessage(f"control char in {h!r}")
        headers.append((name.decode("latin-1"), v.decode("latin-1")))
    seen = Seen(index, parts[0].decode(), parts[1].decode("latin-1"), headers, b"")
    te = seen.header_all("transfer-encoding")
    cl = seen.header_all("content-length")
    if te and cl:
        raise BadMessage("CL and TE")
    if te:
        codings = [c.strip(" \t").lower() for c in ",".join(te).split(",")]
        if codings[-1] != "chunked" or codings.count("chunked") != 1:
            raise BadMessage(f"TE {te!r}")
        body = []
        while True:
            size_line = r.line()
            size, _, ext = size_line.partition(b";")
            if not size or not set(size) <= set(b"0123456789abcdefABCDEF") or len(size) > 15:
                raise BadMessage(f"chunk size {size_line!r}")
            n = int(size, 16)
            if n == 0:
                while t := r.line():  # trailer fields: field-lines, no obs-fold
                    name, colon, value = t.partition(b":")
                    if not colon or not name or not set(name) <= TCHAR or \
                            any(c < 0x20 and c != 0x09 or c == 0x7f for c in value):
                        raise BadMessage(f"trailer line {t!r}")
                break
            body.append(r.exact(n))
            if r.exact(2) != b"\r\n":
                raise BadMessage("no CRLF after chunk data")
        seen.body = b"".join(body)
    elif cl:
        if len(set(cl)) != 1 or not cl[0].isdigit() or len(cl[0]) > 15:
            raise BadMessage(f"CL {cl!r}")
        seen.body = r.exact(int(cl[0]))
    return seen


def recording_handler(rec: Recorder):  # type: ignore[no-untyped-def]
    def handle(conn: socket.socket, index: int) -> None:
        r = _In(conn, rec, index)
        while True:
            try:
                req = strict_request(r, index)
            except (BadMessage, EOFError, ValueError) as exc:
                with rec.lock:
                    rec.partial[index] = False
                    if not isinstance(exc, EOFError) and "EOF" not in str(exc):  # a cut, not a framing error
                        rec.errors.append((index, repr(exc)[:200]))
                conn.sendall(b"HTTP/1.1 400 Backend Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                return
            if req is None:
                return
            with rec.lock:
                rec.seen.append(req)
                rec.partial[index] = bool(r.buf)
                raw = rec.responses.get(req.target)
            if raw is not None:
                conn.sendall(raw)
                if raw.endswith(b"#close"):
                    return
                continue
            body = f"{req.method} {req.target} {len(req.body)}".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return handle


# ---- HAProxy ----

HAPROXY_CFG = """\
global
    maxconn 200
defaults
    mode http
    timeout connect 2s
    timeout client 3s
    timeout server 3s
    timeout http-request 2s
frontend f
    bind 127.0.0.1:{port}
    default_backend b
backend b
    server s1 127.0.0.1:{backend}
"""


@dataclass
class Bench:
    rec: Recorder
    backend: TcpServer
    haproxy_port: int


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(exe):
        pytest.skip("HAProxy is not installed")
    rec = Recorder()
    backend = TcpServer(recording_handler(rec))
    port = free_port()
    d = tmp_path_factory.mktemp("haproxy")
    (d / "haproxy.cfg").write_text(HAPROXY_CFG.format(port=port, backend=backend.port))
    proc = subprocess.Popen([exe, "-f", str(d / "haproxy.cfg"), "-db"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or port_open(port), 10, "haproxy to listen")
        if proc.poll() is not None:
            pytest.fail(f"haproxy exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        yield Bench(rec, backend, port)
    finally:
        proc.kill()
        proc.wait()
        backend.close()


# ---- the client side ----

@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


class Desync(Exception):
    """The client cannot frame what it received (RFC 9112)."""


def _crlf_line(data: bytes) -> tuple[bytes, bytes]:
    line, sep, rest = data.partition(b"\r\n")
    if not sep or b"\n" in line or b"\r" in line:
        raise Desync(f"no clean CRLF line in {data[:60]!r}")
    return line, rest


def parse_responses(data: bytes) -> tuple[list[Resp], bytes]:
    """Final responses in data as a strict RFC 9112 client frames them (1xx skipped), and the
    unparsed rest; Desync when the bytes cannot be framed."""
    out: list[Resp] = []
    while data:
        if not data.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")):
            raise Desync(f"not a status line: {data[:60]!r}")
        if b"\r\n\r\n" not in data:
            break
        status_line, data = _crlf_line(data)
        status = int(status_line.split(b" ")[1])
        headers = []
        while True:
            h, data = _crlf_line(data)
            if not h:
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        r = Resp(status, headers, b"")
        codings = [c.strip().lower() for c in ",".join(v for k, v in headers if k.lower() == "transfer-encoding").split(",")]
        cl = r.header("content-length")
        if status in (204, 304) or 100 <= status < 200:
            pass
        elif codings[-1] == "chunked":
            body = b""
            while True:
                size, data = _crlf_line(data)
                n = int(size.split(b";")[0], 16)
                if n == 0:
                    while True:
                        t, data = _crlf_line(data)
                        if not t:
                            break
                        if t[:1] in (b" ", b"\t") or b":" not in t:
                            raise Desync(f"not a trailer field line: {t!r}")
                    break
                body += data[:n]
                if data[n:n + 2] != b"\r\n":
                    raise Desync(f"no CRLF after chunk data: {data[n:n + 20]!r}")
                data = data[n + 2:]
            r.body = body
        elif codings != [""]:
            r.body, data = data, b""  # a final coding other than chunked: read to close
        elif cl is not None:
            r.body, data = data[:int(cl)], data[int(cl):]
        else:
            r.body, data = data, b""
        if not 100 <= status < 200:
            out.append(r)
    return out, data


def exchange(port: int, data: bytes, half_close: bool = True, timeout: float = 3.0) -> bytes:
    """Sends data (then FIN), returns everything received until the proxy closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        got = b""
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except (socket.timeout, ConnectionResetError):
            pass
        return got


@dataclass
class Outcome:
    responses: list[Resp]  # as a strict client frames them; status -1: it could not
    seen: list[tuple[str, str, int]]  # (method, target, body length) as the backend framed them
    backend_errors: list[str]  # framing errors of the strict backend (EOF cuts excluded)
    partial: bool  # the backend is still inside a request Ringlane considers complete
    raw: bytes  # what the backend received, connections joined by ||
    answer: bytes  # what the client received

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    @property
    def upstream_answers(self) -> int:
        return sum(1 for r in self.responses if r.status > 0 and r.header("server") != "ringlane")

    def __str__(self) -> str:
        return (f"statuses={self.statuses} backend saw={self.seen} backend errors={self.backend_errors} "
                f"partial={self.partial}\n      backend raw={self.raw[:300]!r}")


def run_case(bench: Bench, port: int, data: bytes, half_close: bool = True) -> Outcome:
    bench.rec.reset()
    answer = exchange(port, data, half_close)
    try:
        resps, _ = parse_responses(answer)
    except Desync:
        resps = [Resp(-1, [], answer)]
    # the backend recorded each request before answering it; a cut reaches it a moment later
    try:
        wait_for(lambda: not any(bench.rec.partial.values()), 0.5, "the backend to finish its requests")
    except AssertionError:
        pass
    with bench.rec.lock:
        seen = [(s.method, s.target, len(s.body)) for s in bench.rec.seen]
        errors = [e for _, e in bench.rec.errors]
        partial = any(bench.rec.partial.values())
        raw = b"||".join(bytes(v) for v in bench.rec.raw.values())
    return Outcome(resps, seen, errors, partial, raw, answer)


def ringlane(core, bench: Bench) -> int:  # type: ignore[no-untyped-def]
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", bench.backend.address)]), cpus=[0])
    return port


# ---- nginx as the backend's HTTP parser: Ringlane -> nginx (proxy_pass) -> recorder ----

NGINX_SERVER = """\
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{backend};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
"""


@pytest.fixture(scope="module")
def nginx_front(bench: Bench, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An nginx reverse proxy in front of the recording backend: what it forwards is how nginx's
    own request parser (ngx_http_parse_chunked) framed the bytes Ringlane sent it."""
    exe = nginx_exe()
    if exe is None:
        pytest.skip("nginx is not installed")
    d = tmp_path_factory.mktemp("nginx_front")
    port = free_port()
    conf = nginx_conf(d, NGINX_SERVER.format(port=port, backend=bench.backend.port), connections=256)
    with running_nginx(exe, d, conf, [port]):
        yield port


# ==== request framing: the same bytes through Ringlane and HAProxy ====

def req(extra: bytes = b"", body: bytes = b"", method: bytes = b"POST", target: bytes = b"/a",
        version: bytes = b"HTTP/1.1", host: bytes = b"Host: x\r\n") -> bytes:
    return method + b" " + target + b" " + version + b"\r\n" + host + extra + b"\r\n" + body


TE = b"Transfer-Encoding: chunked\r\n"
NEXT = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"  # pipelined after the case: a second request

# Shapes not already in test_http_errors.SMUGGLING. Each must be refused, or forwarded so that a
# strict RFC 9112 backend frames exactly the requests Ringlane framed (and answers).
REQUESTS = {
    # Transfer-Encoding spellings
    "te_gzip_chunked": req(b"Transfer-Encoding: gzip, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n" + NEXT),
    "te_identity": req(b"Transfer-Encoding: identity\r\n", b"5\r\nhello\r\n0\r\n\r\n" + NEXT),
    "te_two_lines_chunked_first": req(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", b"0\r\n\r\n" + NEXT),
    "te_two_lines_chunked_last": req(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + NEXT),
    "te_chunked_twice": req(TE + TE, b"0\r\n\r\n" + NEXT),
    "te_chunked_comma_chunked": req(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n" + NEXT),
    "te_trailing_space": req(b"Transfer-Encoding: chunked \r\n", b"0\r\n\r\n" + NEXT),
    "te_tab": req(b"Transfer-Encoding:\tchunked\r\n", b"0\r\n\r\n" + NEXT),
    "te_upper": req(b"Transfer-Encoding: CHUNKED\r\n", b"0\r\n\r\n" + NEXT),
    "te_xchunked": req(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + NEXT),
    "te_vtab": req(b"Transfer-Encoding: chunked\x0b\r\n", b"0\r\n\r\n" + NEXT),
    "te_nbsp": req(b"Transfer-Encoding: chunked\xa0\r\n", b"0\r\n\r\n" + NEXT),
    "te_empty_then_chunked": req(b"Transfer-Encoding: \r\n" + TE, b"0\r\n\r\n" + NEXT),
    "te_comma_chunked": req(b"Transfer-Encoding: ,chunked\r\n", b"0\r\n\r\n" + NEXT),
    "te_chunked_comma": req(b"Transfer-Encoding: chunked,\r\n", b"0\r\n\r\n" + NEXT),
    "te_quoted": req(b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n" + NEXT),
    "te_space_before_colon": req(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n" + NEXT),
    "te_named_by_connection": req(b"Connection: transfer-encoding\r\n" + TE, b"0\r\n\r\n" + NEXT),
    # Content-Length spellings
    "cl_plus": req(b"Content-Length: +5\r\n", b"hello" + NEXT),
    "cl_leading_zero": req(b"Content-Length: 05\r\n", b"hello" + NEXT),
    "cl_spaces": req(b"Content-Length:  5 \r\n", b"hello" + NEXT),
    "cl_list": req(b"Content-Length: 5, 5\r\n", b"hello" + NEXT),
    "cl_hex": req(b"Content-Length: 0x5\r\n", b"hello" + NEXT),
    "cl_empty": req(b"Content-Length: \r\n", NEXT),
    "cl_nbsp": req(b"Content-Length: 5\xa0\r\n", b"hello" + NEXT),
    "cl_over_2_64": req(b"Content-Length: 18446744073709551616\r\n", b"hello"),
    "cl_named_by_connection": req(b"Connection: content-length\r\nContent-Length: 5\r\n", b"hello" + NEXT),
    # chunk-size lines
    "chunk_leading_zeros": req(TE, b"0005\r\nhello\r\n0\r\n\r\n" + NEXT),
    "chunk_size_overflow": req(TE, b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_0x": req(TE, b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_space_after": req(TE, b"5 \r\nhello\r\n0\r\n\r\n" + NEXT),
    "chunk_size_space_before": req(TE, b" 5\r\nhello\r\n0\r\n\r\n"),
    "chunk_size_bare_lf": req(TE, b"5\nhello\r\n0\r\n\r\n" + NEXT),
    "chunk_size_bare_cr": req(TE, b"5\rhello\r\n0\r\n\r\n" + NEXT),
    "chunk_ext_quoted": req(TE, b'5;a="b c"\r\nhello\r\n0\r\n\r\n' + NEXT),
    "chunk_ext_quoted_crlf": req(TE, b'5;a="b;c\r\n5"\r\nhello\r\n0\r\n\r\n'),
    "chunk_ext_bare_lf": req(TE, b"2;\nxx\r\n45\r\n0\r\n\r\n" + NEXT + b"\r\n0\r\n\r\n"),
    "chunk_ext_ctl": req(TE, b"5;a\x01\r\nhello\r\n0\r\n\r\n" + NEXT),
    "chunk_ext_empty": req(TE, b"5;\r\nhello\r\n0\r\n\r\n" + NEXT),
    "last_chunk_00_with_ext": req(TE, b"5\r\nhello\r\n00;x=y\r\n\r\n" + NEXT),
    # the two bytes after chunk data (RFC 9112 7.1: CRLF)
    "chunk_data_then_XX": req(TE, b"5\r\nhelloXX0\r\n\r\n" + NEXT),
    "chunk_data_then_CRCR": req(TE, b"5\r\nhello\r\r0\r\n\r\n" + NEXT),
    "chunk_data_then_LFLF": req(TE, b"5\r\nhello\n\n0\r\n\r\n" + NEXT),
    "chunk_data_then_LF_size": req(TE, b"5\r\nhello\n10\r\n\r\n" + NEXT),
    # the trailer section
    "trailer_field": req(TE, b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n" + NEXT),
    "trailer_content_length": req(TE, b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n" + NEXT),
    "trailer_transfer_encoding": req(TE, b"5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n" + NEXT),
    "trailer_nul": req(TE, b"5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n" + NEXT),
    "trailer_bad_line": req(TE, b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"),
    "trailer_end_CR_X": req(TE, b"5\r\nhello\r\n0\r\n\rX" + NEXT),
    "trailer_end_bare_lf": req(TE, b"5\r\nhello\r\n0\r\n\n" + NEXT),
    "trailer_field_then_bare_lf": req(TE, b"5\r\nhello\r\n0\r\nX-T: 1\r\n\n" + NEXT),
    "trailer_field_bare_lf": req(TE, b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n" + NEXT),
    "trailer_obs_fold": req(TE, b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n" + NEXT),
    # heads
    "bare_cr_in_value": req(b"X-A: a\rb\r\n"),
    "bare_cr_line_end": b"GET /a HTTP/1.1\rHost: x\r\n\r\n",
    "cr_in_name": req(b"X\rA: b\r\n"),
    "del_in_value": req(b"X-A: a\x7fb\r\n"),
    "ctl_in_value": req(b"X-A: a\x01b\r\n"),
    "tab_before_colon": req(b"Content-Length\t: 5\r\n", b"hello"),
    "name_bad_char": req(b"X[A]: b\r\n"),
    "empty_name": req(b": b\r\n"),
    "host_empty": req(method=b"GET", host=b"Host: \r\n"),
    "http10_cl_and_te": req(b"Content-Length: 5\r\n" + TE, b"hello", version=b"HTTP/1.0"),
    "get_with_cl_body": req(b"Content-Length: 5\r\n", b"hello" + NEXT, method=b"GET"),
    "get_with_chunked_body": req(TE, b"5\r\nhello\r\n0\r\n\r\n" + NEXT, method=b"GET"),
    "pipelined_after_400": req(b"X-A: a\x00b\r\n") + NEXT,
    "request_line_two_spaces": b"GET  /a HTTP/1.1\r\nHost: x\r\n\r\n",
    "expect_100_continue": req(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello" + NEXT),
    "expect_unknown": req(b"Expect: bogus\r\nContent-Length: 5\r\n", b"hello" + NEXT),
    "connection_close_then_pipelined": req(b"Connection: close\r\n", method=b"GET") + NEXT,
    "upgrade_with_cl_body": req(b"Connection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 5\r\n", b"hello" + NEXT),
    "upgrade_with_chunked_body": req(b"Connection: upgrade\r\nUpgrade: websocket\r\n" + TE, b"0\r\n\r\n" + NEXT),
    "leading_empty_lines": b"\r\n\r\n" + NEXT,
}


@pytest.mark.parametrize("case", sorted(REQUESTS))
def test_request_framing_matches_a_strict_backend_vs_haproxy(core, bench, case) -> None:
    """The raw bytes go through Ringlane (FIN after them), then through HAProxy, to the same
    strict recording backend. Ringlane may refuse (400/413/501...) what HAProxy normalises, but
    what it forwards must be framed by the backend exactly as Ringlane framed it: no framing
    error, no request left unfinished, one upstream answer per request the backend saw, and the
    first request's body as long as HAProxy's reading of it."""
    port = ringlane(core, bench)
    data = REQUESTS[case]
    rl = run_case(bench, port, data)
    ha = run_case(bench, bench.haproxy_port, data)
    ctx = f"\n  Ringlane: {rl}\n  HAProxy:  {ha}"
    assert all(s > 0 for s in rl.statuses), f"the client cannot frame Ringlane's answer {rl.answer!r}{ctx}"
    assert not rl.backend_errors, f"Ringlane forwarded framing the backend reads differently{ctx}"
    assert not rl.partial, f"Ringlane ended a request the backend is still reading (it absorbs what follows){ctx}"
    assert len(rl.seen) == rl.upstream_answers, f"the backend framed requests Ringlane did not{ctx}"
    if rl.seen and ha.seen and not ha.backend_errors:
        assert rl.seen[0][2] == ha.seen[0][2], f"the first body differs in length{ctx}"


# ==== a real lenient backend parser: the hidden request ====

HIDDEN = b"GET /hidden HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n"


def skew_payload() -> bytes:
    """One chunked POST for a lenient llhttp, two requests for nginx.

    After chunk data llhttp 8.1 built without LLHTTP_STRICT_MODE skips ANY two bytes; nginx
    (ngx_http_parse_chunked) accepts a bare LF there. So after "xx", llhttp eats "\\n1" and reads
    chunk size "1", while nginx eats "\\n" and reads chunk size "11" (17): the two disagree on
    where the next chunk starts, and the bytes llhttp takes as chunk data of size X hold, for
    nginx, the end of the body and a whole second request."""
    x = 10 + 7 + len(HIDDEN)  # llhttp's big chunk: padding, nginx's "\r\n0\r\n\r\n", the hidden request
    body = (b"2\r\nxx\n11\r\n" + b"a\r\n" + b"%x\r\n" % x + b"P" * 10   # nginx: 17 bytes of data
            + b"\r\n0\r\n\r\n" + HIDDEN                                    # nginx: body end, request 2
            + b"\r\n0\r\n\r\n")                                            # llhttp: body end (nginx: body of request 2)
    return b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body


def test_chunk_data_terminator_skew_smuggles_a_request_to_an_nginx_backend(core, bench, nginx_front) -> None:
    """Client -> Ringlane -> nginx (proxy_pass) -> recorder. A lenient llhttp reads one POST
    where nginx, a correct and common backend, reads a second request GET /hidden. Ringlane
    (llhttp in strict mode) never lets nginx run a request it did not parse, route, filter and
    log: every request the backend sees has X-Forwarded-For. HAProxy 2.6 in front of the same
    nginx frames the body like nginx (both take the bare LF) and so re-encodes two requests and
    answers two: no disagreement there."""
    port = free_port()
    core(config([http_listener(port, rule("all", "b"))], [cluster("b", f"127.0.0.1:{nginx_front}")]), cpus=[0])
    rl = run_case(bench, port, skew_payload())
    try:  # nginx forwards the hidden request after answering the first: give it a moment
        wait_for(lambda: len(bench.rec.seen) >= 2, 1.0, "a second request at the backend")
    except AssertionError:
        pass
    with bench.rec.lock:
        seen = list(bench.rec.seen)
    assert [s.target for s in seen if not s.header_all("x-forwarded-for")] == [], (
        f"the backend ran requests that never went through Ringlane: {[(s.method, s.target) for s in seen]}; "
        f"client got {rl.statuses}")
    assert len(seen) <= 1 and rl.upstream_answers <= 1


# ==== request target ====

def test_fragment_in_request_target_does_not_bypass_a_path_rule(core, bench) -> None:
    """RFC 9112 3.2: origin-form is absolute-path ["?" query]; a '#' is not allowed (HAProxy: 400).
    Ringlane answers GET /admin#x with 400 (or routes it by the /admin rule). Routed on the path
    "/admin#x", the catch-all rule would take it (PathPrefix /admin needs '/' after the prefix),
    while backends that split the fragment off (gunicorn, Werkzeug, urllib.parse) serve /admin.
    The same route confusion the dot-segment check in rl_http_req_facts prevents."""
    port = free_port()
    core(config([http_listener(port, rule("admin", "b", prefix="/admin", tag=True), rule("all", "b"))],
                [cluster("b", bench.backend.address)]), cpus=[0])
    data = b"GET /admin#x HTTP/1.1\r\nHost: x\r\n\r\n"
    ha = run_case(bench, bench.haproxy_port, data)
    assert ha.statuses == [400], ha
    rl = run_case(bench, port, data)
    with bench.rec.lock:
        routes = [(s.target, s.header_all("x-route")) for s in bench.rec.seen]
    assert rl.statuses == [400] or routes == [("/admin#x", ["admin"])], (
        f"GET /admin#x bypassed the /admin rule: client {rl.statuses}, backend saw {routes}")


# ==== response framing from the backend, toward a strict client ====

OK_NEXT = b"GET /next 0"
RESPONSES = {
    "cl_and_te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "two_different_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
    "negative_cl": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello",
    "cl_plus": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    "chunked_with_trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    "te_chunked_not_last": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"
                           b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
    "te_identity_and_cl": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
    "extra_bytes_after_body": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
    "304_with_te": b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    "100_with_cl_then_200": b"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "nul_in_value": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 5\r\n\r\nhello",
    # llhttp leniencies: forwarded raw, they would desynchronise a strict client
    "chunk_data_then_XX": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "chunk_data_then_LF_size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n10\r\n\r\n",
    "trailer_end_CR_X": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\rX",
    "trailer_obs_fold": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n",
    "empty_line_before_status": b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
}


@pytest.mark.parametrize("case", sorted(RESPONSES))
def test_response_framing_reaches_a_strict_client_intact(core, bench, case) -> None:
    """The backend answers GET /r with odd framing; the client pipelines GET /next and sends FIN.
    What the client receives must frame cleanly (RFC 9112) into the answer to /r (relayed or a
    502) and, unless that answer ends the connection, the backend's answer to /next: never
    bytes the backend injected. (HAProxy 2.6 answers 502 to every case in the second group.)"""
    port = ringlane(core, bench)
    bench.rec.reset()
    bench.rec.responses["/r"] = RESPONSES[case]
    answer = exchange(port, b"GET /r HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        resps, rest = parse_responses(answer)
    except Desync as exc:
        raise AssertionError(f"a strict client cannot frame what Ringlane relayed ({exc}):\n{answer!r}") from None
    assert not rest and resps, answer
    assert b"smuggled" not in b"".join(r.body for r in resps[1:]), answer
    if len(resps) == 1:  # the first answer ended the connection: read to close
        assert resps[0].header("content-length") is None and resps[0].header("connection") == "close", answer
    else:
        assert len(resps) == 2 and resps[1].body == OK_NEXT, answer
