"""The soak's hostile backends. b1, b2 and b3 speak HTTP/1.1 and act out the behaviour a request
names in its path (`id<N>-<behaviour>`), after checking the request is well-formed; `echo` echoes
bytes for the TCP listener. Every 200 body starts `id<N> n<len> sha<digest>` (of the request body
received), so a client can tell whose answer it got and whether its body arrived intact.

Behaviours: ok; slow (answers after up to 1.2 s); info (103, sometimes 100, then 200); chunk
(chunked, trailers sometimes); big (100 kB to 2 MB of repeated `id<N>.`); close (Connection: close);
idleclose (closes right after a keep-alive answer); eof (no length: the body ends at close); h10 (an
HTTP/1.0 answer, then close); s503; flaky (503 the first time an id arrives, then 200); reset (RST
after the head); stall (no answer for 1 to 3 s, then close); early (answers and closes before
reading the body); earlyka (answers before reading the body, keeps the connection); ws (101, then
echo); wsno (refuses the upgrade with a 200)."""
from __future__ import annotations

import hashlib
import random
import re
import socket
import threading
import time
from collections import Counter
from typing import Callable, Iterable

from .invariants import Findings, check_forwarded
from .wire import Malformed, RequestReader, close_with_rst

REQUEST_ID = re.compile(r"id(\d+)-(\w+)")
MAX_ATTEMPTS = 3  # a request plus at most 2 retries (the configs never retry more)


def ok_body(rid: str, body: bytes, extra: str = "") -> bytes:
    return f"id{rid} n{len(body)} sha{hashlib.sha256(body).hexdigest()[:16]}{extra}\n".encode()


def send_reply(s: socket.socket, method: str, rid: str, status: int, body: bytes, chunked: bool = False,
               close: bool = False, trailers: bool = False, extra_headers: Iterable[str] = ()) -> None:
    h = [f"HTTP/1.1 {status} X", f"X-Req-Id: {rid}"]
    h += list(extra_headers)
    if chunked:
        h.append("Transfer-Encoding: chunked")
        if trailers:
            h.append("Trailer: X-Tail")
    else:
        h.append(f"Content-Length: {len(body)}")
    if close:
        h.append("Connection: close")
    out = ("\r\n".join(h) + "\r\n\r\n").encode()
    if method == "HEAD":
        s.sendall(out)
        return
    if not chunked:
        s.sendall(out + body)
        return
    s.sendall(out)
    i = 0
    while i < len(body):
        # chunk boundaries come from the unseeded module RNG: they need not replay
        k = min(random.randint(1, max(1, len(body) // 3)), len(body) - i)
        s.sendall(f"{k:x}\r\n".encode() + body[i:i + k] + b"\r\n")
        i += k
    s.sendall(b"0\r\n" + (f"X-Tail: id{rid}\r\n".encode() if trailers else b"") + b"\r\n")


class Server:
    """Listens on 127.0.0.1:<ephemeral>; runs handler(conn, name) in a thread per connection."""

    def __init__(self, name: str, handler: Callable[[socket.socket, str], None]) -> None:
        self.name = name
        self.handler = handler
        self.conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c: socket.socket) -> None:
        try:
            self.handler(c, self.name)
        except Exception:  # noqa: BLE001 -- a hostile peer; what matters is recorded by the handler
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.sock.close()

    def close_connections(self) -> None:
        """Closes every accepted connection, so the fd check sees only what the core left open."""
        with self._lock:
            for s in self.conns:
                try:
                    s.close()
                except OSError:
                    pass


def echo(c: socket.socket, name: str) -> None:
    c.settimeout(20)
    while True:
        b = c.recv(65536)
        if not b:
            c.shutdown(socket.SHUT_WR)
            return
        c.sendall(b)


class Backends:
    """b1, b2, b3 and echo, with the per-id bookkeeping the retry checks need."""

    def __init__(self, findings: Findings, stop: threading.Event) -> None:
        self.findings = findings
        self.stop = stop  # set at the end of the run: ends the stalls
        self._lock = threading.Lock()
        self._times_seen: Counter[str] = Counter()  # request id -> arrivals at any backend
        self._flaky_failed: set[str] = set()
        self.b1, self.b2, self.b3 = (Server(n, self.serve_http) for n in ("b1", "b2", "b3"))
        self.echo = Server("echo", echo)
        self.servers = (self.b1, self.b2, self.b3, self.echo)

    @property
    def ports(self) -> set[int]:
        return {s.port for s in self.servers}

    def close(self) -> None:
        for srv in self.servers:
            srv.close()
        for srv in self.servers:
            srv.close_connections()

    def _arrival(self, rid: str) -> int:
        with self._lock:
            self._times_seen[rid] += 1
            return self._times_seen[rid]

    def _first_flaky(self, rid: str) -> bool:
        with self._lock:
            first = rid not in self._flaky_failed
            self._flaky_failed.add(rid)
            return first

    def serve_http(self, s: socket.socket, name: str) -> None:
        """One connection from the proxy: request after request until a behaviour ends it."""
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(20)
        r = RequestReader(s)
        rng = random.Random()  # unseeded: the backends' timings need not replay
        try:
            while True:
                req = r.request()
                if req is None:
                    return
                check_forwarded(req)
                method, target, n = req.method, req.target, req.body_length()
                self.findings.stats["be_req"] += 1
                m = REQUEST_ID.search(target)
                if not m:
                    raise Malformed(f"no id in {target}")
                rid, beh = m.group(1), m.group(2)
                k = self._arrival(rid)
                if method == "POST" and k > 1:
                    self.findings.violation(f"backend {name}: POST id{rid}/{beh} received {k} times "
                                            "(non-idempotent retried)")
                elif k > MAX_ATTEMPTS and beh != "reset":  # a reset may also get the stale-pool replay
                    self.findings.violation(f"backend {name}: id{rid}/{beh} received {k} times "
                                            "(more than 1+2 retries)")
                expect = (req.first("expect") or "").lower() == "100-continue"
                # answering before the body is read
                if beh == "early":
                    send_reply(s, method, rid, 200, ok_body(rid, b"", " early"), close=True)
                    time.sleep(0.05)
                    return
                if beh == "reset":
                    close_with_rst(s)
                    return
                if beh == "earlyka":
                    send_reply(s, method, rid, 200, ok_body(rid, b"", " early"))
                    r.body(n)
                    continue
                if beh == "stall":
                    self.stop.wait(rng.uniform(1, 3))
                    return
                if expect and n != 0 and rng.random() < 0.8:
                    s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                body, trailers = r.body(n)
                sha = req.first("x-sha")
                if sha is not None and hashlib.sha256(body).hexdigest()[:16] != sha:
                    raise Malformed(f"id{rid}: body sha mismatch ({len(body)} bytes, trailers {trailers})")
                # answers with framing or connection handling of their own
                if beh == "wsno":
                    send_reply(s, method, rid, 200, ok_body(rid, body))
                    continue
                if beh == "eof":
                    s.sendall(f"HTTP/1.1 200 OK\r\nX-Req-Id: {rid}\r\n\r\n".encode() + ok_body(rid, body)
                              + b"x" * rng.randint(0, 100000))
                    s.shutdown(socket.SHUT_WR)
                    return
                if beh == "h10":
                    b = ok_body(rid, body)
                    s.sendall(f"HTTP/1.0 200 OK\r\nX-Req-Id: {rid}\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b)
                    return
                if beh == "ws":
                    self._websocket(s, r, rid, req.headers)
                    return
                # ordinary answers, possibly delayed or preceded by interim responses
                if beh == "slow":
                    time.sleep(rng.uniform(0.05, 1.2))
                if beh == "info":
                    s.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
                    if rng.random() < 0.5:
                        time.sleep(0.02)
                        s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                status = 200
                if beh == "s503":
                    status = 503
                if beh == "flaky":
                    status = 503 if self._first_flaky(rid) else 200
                if beh == "big":
                    blen = rng.choice([100_000, 700_000, 2_000_000])
                    unit = f"id{rid}.".encode()
                    payload = (unit * (blen // len(unit) + 1))[:blen]
                    send_reply(s, method, rid, 200, payload, chunked=rng.random() < 0.3 and not req.http10)
                    continue
                close = beh == "close"
                chunked = beh == "chunk" and not req.http10
                send_reply(s, method, rid, status, ok_body(rid, body), chunked=chunked, close=close,
                           trailers=chunked and rng.random() < 0.7)
                if close:
                    return
                if beh == "idleclose":
                    time.sleep(rng.uniform(0, 0.05))
                    return
        except Malformed as e:
            self.findings.violation(f"backend {name}: malformed request: {e}")
        except (EOFError, OSError):
            pass

    @staticmethod
    def _websocket(s: socket.socket, r: RequestReader, rid: str, headers: dict[str, list[str]]) -> None:
        """101, then echo everything (bytes that came with the request first) until the proxy
        half-closes."""
        if "websocket" not in [u.lower() for u in headers.get("upgrade", [])]:
            raise Malformed(f"id{rid}: ws without upgrade header {headers}")
        s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        if r.buf:
            s.sendall(r.buf)
        while True:
            b = s.recv(65536)
            if not b:
                s.shutdown(socket.SHUT_WR)
                time.sleep(0.2)
                return
            s.sendall(b)
