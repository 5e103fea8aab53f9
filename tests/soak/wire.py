"""Strict HTTP/1.1 framing for both ends of the soak: the backends read what the proxy forwards and
the clients read what it answers. What a lenient parser would let pass (bare LF or CR, obs-fold,
header names that are not tokens, Content-Length with Transfer-Encoding) raises Malformed, which
the caller records as a violation."""
from __future__ import annotations

import re
import socket
import struct
from collections import Counter
from dataclasses import dataclass

TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
REQUEST_LINE = re.compile(r"^(GET|HEAD|POST|PUT|DELETE|OPTIONS) (/[\x21-\x7e]*) HTTP/1\.[01]$")
STATUS_LINE = re.compile(r"^HTTP/1\.[01] (\d{3}) [^\r\n]*$")
CHUNK_SIZE = re.compile(rb"^([0-9a-fA-F]{1,16})(;.*)?$")


class Malformed(Exception):
    """Bytes on the wire that break HTTP/1.1 framing or what a proxy may forward."""


class Closed(Exception):
    """The proxy closed a client's connection before a whole response arrived."""


def close_with_rst(s: socket.socket) -> None:
    """Close s with an RST (SO_LINGER 0) instead of a FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    except OSError:
        pass


# ---- backend side: the requests the proxy forwards ----

@dataclass
class ForwardedRequest:
    method: str
    target: str
    http10: bool
    headers: dict[str, list[str]]  # lower-case name -> values in arrival order

    def first(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    def body_length(self) -> int:
        """Content-Length, -1 for chunked, 0 for neither (after invariants.check_forwarded)."""
        cl = self.headers.get("content-length")
        return int(cl[0]) if cl else (-1 if "transfer-encoding" in self.headers else 0)


class RequestReader:
    """Reads requests off a backend's connection; None or EOFError when the proxy closes it."""

    def __init__(self, s: socket.socket) -> None:
        self.s, self.buf = s, b""

    def fill(self) -> bool:
        d = self.s.recv(65536)
        if not d:
            return False
        self.buf += d
        return True

    def line(self, limit: int = 70000) -> bytes | None:
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise Malformed("line too long")
            if not self.fill():
                return None
        line, _, self.buf = self.buf.partition(b"\n")
        if not line.endswith(b"\r"):
            raise Malformed(f"bare LF in {line[:80]!r}")
        line = line[:-1]
        if b"\r" in line:
            raise Malformed(f"bare CR in {line[:80]!r}")
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise EOFError
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def headers(self) -> list[tuple[str, str]]:
        hs = []
        while True:
            h = self.line()
            if h is None:
                raise EOFError
            if not h:
                return hs
            if h[:1] in (b" ", b"\t"):
                raise Malformed(f"obs-fold {h!r}")
            k, sep, v = h.decode("latin-1").partition(":")
            if not sep or not TOKEN.match(k):
                raise Malformed(f"bad header line {h[:80]!r}")
            if any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7f for c in v):
                raise Malformed(f"control char in header {h[:80]!r}")
            hs.append((k.lower(), v.strip(" \t")))

    def request(self) -> ForwardedRequest | None:
        """The next request's head, or None at a clean EOF between requests."""
        line = self.line()
        if line is None:
            return None
        m = REQUEST_LINE.match(line.decode("latin-1"))
        if not m:
            raise Malformed(f"bad request line {line[:100]!r}")
        headers: dict[str, list[str]] = {}
        for k, v in self.headers():
            headers.setdefault(k, []).append(v)
        return ForwardedRequest(m.group(1), m.group(2), line.endswith(b"1.0"), headers)

    def body(self, n: int) -> tuple[bytes, list[str]]:
        """n bytes, or with n == -1 a chunked body: (body, trailer lines)."""
        if n >= 0:
            return self.exact(n), []
        parts = []
        while True:
            sl = self.line()
            if sl is None:
                raise EOFError
            mm = CHUNK_SIZE.match(sl)
            if not mm:
                raise Malformed(f"bad chunk size line {sl[:60]!r}")
            size = int(mm.group(1), 16)
            if size == 0:
                trailers = [f"{k}:{v}" for k, v in self.headers()]
                return b"".join(parts), trailers
            parts.append(self.exact(size))
            if self.exact(2) != b"\r\n":
                raise Malformed("chunk not followed by CRLF")


# ---- client side: the proxy's responses ----

class ResponseReader:
    """Reads responses off a client's connection; Closed when the proxy closes it early."""

    def __init__(self, s: socket.socket, stats: Counter[str]) -> None:
        self.s, self.buf = s, b""
        self.stats = stats

    def fill(self) -> None:
        d = self.s.recv(65536)
        if not d:
            raise Closed(f"closed with {self.buf[:120]!r}")
        self.buf += d

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > 100000:
                raise Malformed("response line too long")
            self.fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        if b"\n" in line or b"\r" in line:
            raise Malformed(f"bare LF/CR in response line {line[:80]!r}")
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def to_close(self) -> bytes:
        try:
            while True:
                self.fill()
        except Closed:
            pass
        out, self.buf = self.buf, b""
        return out

    def response(self, head: bool = False) -> tuple[int, dict[str, list[str]], bytes]:
        """The next final response (1xx interim ones skipped): status, headers, body."""
        while True:
            line = self.line().decode("latin-1")
            m = STATUS_LINE.match(line)
            if line.startswith("HTTP/1.0"):
                self.stats["resp_http10"] += 1
            if not m:
                raise Malformed(f"bad status line {line[:100]!r}")
            status = int(m.group(1))
            hs: dict[str, list[str]] = {}
            while True:
                h = self.line()
                if not h:
                    break
                k, sep, v = h.decode("latin-1").partition(":")
                if not sep or not TOKEN.match(k):
                    raise Malformed(f"bad response header {h[:80]!r}")
                hs.setdefault(k.lower(), []).append(v.strip())
            if not (100 <= status < 200 and status != 101):
                break
        cl, te = hs.get("content-length"), hs.get("transfer-encoding")
        if cl and te:
            raise Malformed(f"response with CL and TE: {hs}")
        if cl and (len(set(cl)) > 1 or not cl[0].isdigit()):
            raise Malformed(f"response CL {cl}")
        if head or status in (101, 204, 304):
            body = b""
        elif te:
            if [t.lower() for t in te] != ["chunked"]:
                raise Malformed(f"response TE {te}")
            body = self._chunked()
        elif cl:
            body = self.exact(int(cl[0]))
        else:
            body = self.to_close()
        return status, hs, body

    def _chunked(self) -> bytes:
        parts = []
        while True:
            sl = self.line()
            mm = CHUNK_SIZE.match(sl)
            if not mm:
                raise Malformed(f"bad response chunk size {sl[:60]!r}")
            size = int(mm.group(1), 16)
            if size == 0:
                while self.line():  # trailers
                    pass
                return b"".join(parts)
            parts.append(self.exact(size))
            if self.exact(2) != b"\r\n":
                raise Malformed("response chunk framing")
