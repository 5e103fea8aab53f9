"""The soak's clients: each thread loops over randomly chosen scenarios (keep-alive, pipelining,
request bodies, WebSocket upgrades, TCP relay, resets, a reader that stops reading, garbage,
half-close, HTTP through the TCP relay, HTTP/1.0) until the run stops. Every request carries a
fresh id and the behaviour its backend should act out (`id<N>-<behaviour>`, see backends.py), and
every response is checked against it (invariants.check_response)."""
from __future__ import annotations

import hashlib
import itertools
import random
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable

from .invariants import Findings, check_response
from .scenario import Topology
from .wire import Closed, Malformed, ResponseReader, close_with_rst

# the keep-alive scenario's behaviours ("ok" weighted up)
KEEPALIVE_BEHAVIOURS = ("ok", "ok", "ok", "eof", "h10", "slow", "chunk", "info", "close", "reset", "stall", "s503",
                        "flaky", "idleclose", "big")
PIPELINE_BEHAVIOURS = ["ok", "ok", "chunk", "info", "slow", "s503", "flaky", "close", "idleclose", "reset", "big",
                       "stall", "eof"]
BODY_BEHAVIOURS = ["ok", "ok", "chunk", "slow", "early", "reset", "s503", "close", "idleclose", "info", "earlyka",
                   "eof"]
CONNECT_TIMEOUT = 6.0  # also each read's: a response slower than this is a hang


@dataclass(frozen=True)
class ClientOptions:
    """Narrowing a failure down; the defaults are the soak."""
    keepalive_behaviours: tuple[str, ...] = KEEPALIVE_BEHAVIOURS
    head: bool = True  # HEAD among the keep-alive and pipelined methods
    keepalive_only: bool = False  # the keep-alive scenario alone
    verbose: bool = False  # print each connection the proxy closed early


def connect(port: int, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def build(method: str, path: str, headers: Iterable[tuple[str, str]] = (), body: bytes | None = None,
          chunked: bool = False, trailers: bool = False, lane: str | None = None) -> tuple[bytes, bytes]:
    """(head, encoded body) of a request; a body is announced with its digest in X-Sha, which the
    backend checks."""
    hs = [f"{method} {path} HTTP/1.1", "Host: chaos.local"] + [f"{k}: {v}" for k, v in headers]
    if lane:
        hs.append(f"X-Lane: {lane}")
    if body is not None:
        hs.append(f"X-Sha: {hashlib.sha256(body).hexdigest()[:16]}")
        if chunked:
            hs.append("Transfer-Encoding: chunked")
        else:
            hs.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(hs) + "\r\n\r\n").encode()
    if body is None:
        return head, b""
    if not chunked:
        return head, body
    out = b""
    i = 0
    while i < len(body):
        # chunk boundaries come from the unseeded module RNG: they need not replay
        k = min(random.randint(1, max(1, len(body) // 2)), len(body) - i)
        out += f"{k:x}\r\n".encode() + body[i:i + k] + b"\r\n"
        i += k
    out += b"0\r\n" + (b"X-Trail: yes\r\n" if trailers else b"") + b"\r\n"
    return head, out


def path_for(rng: random.Random, rid: str, beh: str) -> tuple[str, str | None]:
    """A path to one of the HTTP rules (api, exact, small via the x-lane header, catch-all) and
    the lane header value it needs."""
    kind = rng.random()
    if kind < 0.55:
        return f"/api/v/id{rid}-{beh}", None
    if kind < 0.7:
        return f"/exact?q=id{rid}-{beh}", None
    if kind < 0.85:
        return f"/other/id{rid}-{beh}", "small"
    return f"/misc/id{rid}-{beh}", None


def closes(hs: dict[str, list[str]]) -> bool:
    return [v.lower() for v in hs.get("connection", [])] == ["close"]


class Clients:
    def __init__(self, seed: int, top: Topology, findings: Findings, stop: threading.Event,
                 options: ClientOptions) -> None:
        self.seed = seed
        self.top = top
        self.findings = findings
        self.stop = stop  # the run is over: leave after the current scenario
        self.draining = threading.Event()  # the proxy closes connections now: not worth counting
        self.opts = options
        self.ids = itertools.count(1)
        self.current = threading.local()  # for the closed-early count: the behaviour in flight
        self.keepalive_methods = ["GET", "GET", "DELETE"] + (["HEAD"] if options.head else [])
        self.pipeline_methods = ["GET", "GET"] + (["HEAD"] if options.head else [])
        weights: list[tuple[Callable[[random.Random], None], int]] = [
            (self.keepalive, 30), (self.pipeline, 12), (self.body, 18), (self.ws, 8), (self.tcp, 5),
            (self.reset, 8), (self.noread, 3), (self.garbage, 3), (self.halfclose, 3), (self.tcphttp, 6),
            (self.http10, 6)]
        self.scenarios = weights[:1] if options.keepalive_only else weights

    def _rid(self) -> str:
        return str(next(self.ids))

    def _reader(self, s: socket.socket) -> ResponseReader:
        return ResponseReader(s, self.findings.stats)

    def run(self, n: int) -> None:
        """Client thread n: scenarios until stop. Errors a hostile backend or the drain explain
        (the proxy closing or resetting) are counted; anything else is a violation."""
        rng = random.Random(self.seed * 1000 + n)
        weighted = [f for f, w in self.scenarios for _ in range(w)]
        stats = self.findings.stats
        while not self.stop.is_set():
            fn = rng.choice(weighted)
            self.current.beh, self.current.info = "-", None
            t0 = time.monotonic()
            try:
                fn(rng)
                stats[fn.__name__] += 1
            except Malformed as e:
                self.findings.violation(f"client {fn.__name__}: malformed response: {e}")
            except socket.timeout:
                if not self.stop.is_set():
                    self.findings.violation(f"client {fn.__name__}: timed out after {time.monotonic() - t0:.1f}s (hang?)")
            except (Closed, ConnectionResetError, BrokenPipeError, ConnectionRefusedError) as e:
                if not self.draining.is_set():
                    stats[f"closed_{fn.__name__}_{self.current.beh}"] += 1
                    if self.opts.verbose:
                        info = self.current.info
                        print("closed", fn.__name__, self.current.beh, e,
                              (info[:3], info[3].buf[:400]) if info else None, flush=True)
            except Exception:
                self.findings.violation(f"client {fn.__name__}: {traceback.format_exc()}")
            time.sleep(rng.uniform(0, 0.02))

    def keepalive(self, rng: random.Random) -> None:
        """Up to 6 requests on one connection, sometimes idling (past the idle timeout: closed)."""
        s = connect(self.top.http_port)
        r = self._reader(s)
        try:
            for _ in range(rng.randint(1, 6)):
                rid = self._rid()
                beh = rng.choice(self.opts.keepalive_behaviours)
                method = rng.choice(self.keepalive_methods)
                self.current.beh = beh
                path, lane = path_for(rng, rid, beh)
                head, _ = build(method, path, lane=lane)
                s.sendall(head)
                self.current.info = (path, lane, method, r)
                status, hs, body = r.response(head=method == "HEAD")
                check_response(self.findings, rid, beh, method, status, hs, body, "keepalive")
                if closes(hs) or status in (400, 408, 413, 431) or beh == "h10":
                    return
                if rng.random() < 0.1:
                    if rng.random() < 0.5:
                        time.sleep(rng.uniform(0.3, 0.7))
                    else:
                        time.sleep(1.4)  # past the idle timeout: must be closed
                        try:
                            s.settimeout(1.0)
                            d = s.recv(100)
                            if d:
                                self.findings.violation(f"keepalive: bytes on idle conn {d!r}")
                        except socket.timeout:
                            self.findings.violation("keepalive: idle connection not closed after 1.4s (idleTimeout 1s)")
                        except ConnectionResetError:
                            pass
                        return
        finally:
            s.close()

    def pipeline(self, rng: random.Random) -> None:
        """Up to 6 requests (some POSTs with bodies) sent at once, sometimes 7 bytes at a time;
        the answers must come back in order, nothing after a Connection: close."""
        s = connect(self.top.http_port)
        r = self._reader(s)
        reqs = []
        out = b""
        for _ in range(rng.randint(2, 6)):
            rid = self._rid()
            beh = rng.choice(PIPELINE_BEHAVIOURS)
            method = rng.choice(self.pipeline_methods)
            path, lane = path_for(rng, rid, beh)
            if rng.random() < 0.25 and beh not in ("close", "eof"):
                method = "POST"
                head, payload = build(method, path, [], rng.randbytes(rng.randint(0, 3000)),
                                      chunked=rng.random() < 0.5, trailers=rng.random() < 0.5, lane=lane)
                head += payload
            else:
                head, _ = build(method, path, lane=lane)
            out += head
            reqs.append((rid, beh, method))
        try:
            if rng.random() < 0.3:
                for i in range(0, len(out), 7):
                    s.sendall(out[i:i + 7])
            else:
                s.sendall(out)
            for rid, beh, method in reqs:
                self.current.beh = beh
                status, hs, body = r.response(head=method == "HEAD")
                check_response(self.findings, rid, beh, method, status, hs, body, "pipeline")
                if closes(hs):
                    tail = r.to_close()
                    if tail:
                        self.findings.violation(f"pipeline: bytes after Connection: close response: {tail[:200]!r}")
                    return
        finally:
            s.close()

    def body(self, rng: random.Random) -> None:
        """POST/PUT bodies up to 400 kB, chunked or not, with Expect: 100-continue sometimes,
        sometimes a byte at a time; the backend must have received exactly what was sent."""
        s = connect(self.top.http_port)
        r = self._reader(s)
        try:
            for _ in range(rng.randint(1, 3)):
                rid = self._rid()
                beh = rng.choice(BODY_BEHAVIOURS)
                self.current.beh = beh
                method = rng.choice(["POST", "PUT"])
                path, lane = path_for(rng, rid, beh)
                n = rng.choice([0, 1, 10, 1000, 20000, 200_000, 400_000])
                body = rng.randbytes(n)
                chunked = rng.random() < 0.5
                expect = rng.random() < 0.3
                head, payload = build(method, path, [("Expect", "100-continue")] if expect else [], body,
                                      chunked=chunked, trailers=rng.random() < 0.5, lane=lane)
                s.sendall(head)
                if expect and rng.random() < 0.7:
                    # wait for 100 (or a final answer) a little
                    s.settimeout(1.0)
                    try:
                        r.fill()
                    except socket.timeout:
                        pass
                    s.settimeout(CONNECT_TIMEOUT)
                if rng.random() < 0.1 and len(payload) < 300:
                    for b in payload:
                        s.sendall(bytes([b]))
                else:
                    try:
                        s.sendall(payload)
                    except OSError:
                        pass  # early answer/close
                status, hs, rbody = r.response()
                check_response(self.findings, rid, beh, method, status, hs, rbody, "body")
                if status == 200 and beh not in ("early", "big", "earlyka") and rbody.decode("latin-1").split()[1:3] != \
                        [f"n{n}", f"sha{hashlib.sha256(body).hexdigest()[:16]}"]:
                    self.findings.violation(f"body: id{rid}: backend saw other body: {rbody[:100]!r} (sent {n})")
                if closes(hs) or status != 200:
                    return
        finally:
            s.close()

    def ws(self, rng: random.Random) -> None:
        """An upgrade (early data after the head sometimes) and echoed messages; or a refused
        upgrade, after which the connection still serves HTTP."""
        s = connect(self.top.http_port)
        r = self._reader(s)
        rid = self._rid()
        beh = "wsno" if rng.random() < 0.15 else "ws"
        self.current.beh = beh
        early = f"id{rid}:early:".encode() if beh == "ws" and rng.random() < 0.3 else b""
        s.sendall(f"GET /ws/id{rid}-{beh} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".encode()
                  + early)
        try:
            status, hs, body = r.response()
            if status != 101:
                check_response(self.findings, rid, beh, "GET", status, hs, body, "ws")
                if beh == "wsno" and status == 200 and not early:
                    rid = self._rid()
                    s.sendall(build("GET", f"/api/v/id{rid}-ok")[0])
                    status, hs, body = r.response()
                    check_response(self.findings, rid, "ok", "GET", status, hs, body, "ws-after-refused")
                return
            if early:
                got = r.exact(len(early))
                if got != early:
                    self.findings.violation(f"ws id{rid}: early data echo mismatch {got!r}")
            for i in range(rng.randint(1, 5)):
                msg = f"id{rid}:{i}:".encode() + rng.randbytes(rng.randint(1, 5000)).hex().encode()
                s.sendall(msg)
                got = r.exact(len(msg))
                if got != msg:
                    self.findings.violation(f"ws id{rid}: echo mismatch {got[:80]!r} vs {msg[:80]!r}")
                    return
            if rng.random() < 0.2:
                time.sleep(1.3)  # tunnel idle timeout: expect close
                try:
                    r.fill()
                    self.findings.violation(f"ws id{rid}: bytes after idle: {r.buf[:80]!r}")
                except (Closed, ConnectionResetError):
                    pass
                return
            s.shutdown(socket.SHUT_WR)
            rest = r.to_close()
            if rest:
                self.findings.violation(f"ws id{rid}: extra bytes after half-close {rest[:80]!r}")
        finally:
            s.close()

    def tcp(self, rng: random.Random) -> None:
        """Up to 300 kB through the TCP listener to the echo backend, sent while reading."""
        s = connect(self.top.tcp_port)
        r = self._reader(s)
        try:
            data = rng.randbytes(rng.randint(1, 300_000))

            def send_all() -> None:
                try:
                    s.sendall(data)
                except OSError:
                    pass

            t = threading.Thread(target=send_all)
            t.start()
            got = r.exact(len(data))
            t.join()
            if got != data:
                self.findings.violation("tcp relay: echo mismatch")
            if rng.random() < 0.3:
                close_with_rst(s)
                return
            s.shutdown(socket.SHUT_WR)
            if r.to_close():
                self.findings.violation("tcp relay: extra bytes")
        finally:
            s.close()

    def halfclose(self, rng: random.Random) -> None:
        """A request followed by a FIN: answered or closed, never a wrong answer."""
        s = connect(self.top.http_port)
        r = self._reader(s)
        rid = self._rid()
        beh = rng.choice(["ok", "chunk", "slow"])
        self.current.beh = beh
        path, lane = path_for(rng, rid, beh)
        try:
            s.sendall(build("GET", path, lane=lane)[0])
            s.shutdown(socket.SHUT_WR)
            try:
                status, hs, body = r.response()
            except (Closed, ConnectionResetError):
                self.findings.stats["halfclose_noresp"] += 1
                return
            check_response(self.findings, rid, beh, "GET", status, hs, body, "halfclose")
            self.findings.stats["halfclose_resp"] += 1
        finally:
            s.close()

    def tcphttp(self, rng: random.Random) -> None:
        """HTTP requests through the TCP relay to b3 (no X-Forwarded-For there: X-Via-Relay)."""
        s = connect(self.top.relay_port)
        r = self._reader(s)
        try:
            for _ in range(rng.randint(1, 3)):
                rid = self._rid()
                beh = rng.choice(["ok", "chunk", "slow", "info"])
                self.current.beh = beh
                s.sendall(build("GET", f"/relay/id{rid}-{beh}", [("X-Via-Relay", "1")])[0])
                status, hs, body = r.response()
                check_response(self.findings, rid, beh, "GET", status, hs, body, "tcphttp")
        finally:
            s.close()

    def http10(self, rng: random.Random) -> None:
        """HTTP/1.0 requests, with keep-alive sometimes: never a chunked answer."""
        s = connect(self.top.http_port)
        r = self._reader(s)
        try:
            ka = rng.random() < 0.5
            for _ in range(rng.randint(1, 3) if ka else 1):
                rid = self._rid()
                beh = rng.choice(["ok", "chunk", "info", "eof", "slow", "big"])
                self.current.beh = beh
                path, lane = path_for(rng, rid, beh)
                req = f"GET {path} HTTP/1.0\r\nHost: x\r\n" + ("Connection: keep-alive\r\n" if ka else "") + \
                    (f"X-Lane: {lane}\r\n" if lane else "") + "\r\n"
                s.sendall(req.encode())
                status, hs, body = r.response()
                if "transfer-encoding" in hs:
                    self.findings.violation(f"http10 id{rid}/{beh}: chunked response to an HTTP/1.0 client: {hs}")
                check_response(self.findings, rid, beh, "GET", status, hs, body, "http10")
                conn = [v.lower() for v in hs.get("connection", [])]
                if not ka or "keep-alive" not in conn:
                    return
        finally:
            s.close()

    def reset(self, rng: random.Random) -> None:
        """An RST in the middle of a head, a body, or a big response."""
        s = connect(self.top.http_port)
        rid = self._rid()
        mode = rng.random()
        path, lane = path_for(rng, rid, rng.choice(["ok", "big", "slow", "stall", "chunk"]))
        if mode < 0.3:
            head, _ = build("GET", path, lane=lane)
            s.sendall(head[:rng.randint(1, len(head) - 1)])
        elif mode < 0.6:
            body = rng.randbytes(50_000)
            head, payload = build("POST", path, [], body, chunked=rng.random() < 0.5, lane=lane)
            s.sendall(head + payload[:rng.randint(0, len(payload) - 1)])
        else:
            head, _ = build("GET", f"/api/v/id{rid}-big")
            s.sendall(head)
            try:
                s.recv(rng.randint(1, 30000))
            except OSError:
                pass
        time.sleep(rng.uniform(0, 0.2))
        close_with_rst(s)

    def noread(self, rng: random.Random) -> None:
        """Big responses to a client that never reads them (small receive buffer), then leaves."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(CONNECT_TIMEOUT)
        s.connect(("127.0.0.1", self.top.http_port))
        rid = self._rid()
        s.sendall(build("GET", f"/api/v/id{rid}-big")[0] * rng.randint(1, 3))
        time.sleep(rng.uniform(0.2, 2.0))
        if rng.random() < 0.5:
            s.close()
        else:
            close_with_rst(s)

    def garbage(self, rng: random.Random) -> None:
        """Requests a proxy must refuse (smuggling-shaped framing, bare LF, obs-fold, too many
        headers): a 400, 431 or 505, or a close."""
        s = connect(self.top.http_port)
        r = self._reader(s)
        junk = rng.choice([b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                           b"GET /\n\n", b"BLAH\r\n\r\n",
                           b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                           b"GET / HTTP/1.1\r\nHost: x\r\n X: y\r\n\r\n",
                           b"GET / HTTP/1.1\r\n" + b"X-H: v\r\n" * 200 + b"\r\n"])
        try:
            s.sendall(junk)
            status, hs, body = r.response()
            if status not in (400, 431, 505):
                self.findings.violation(f"garbage {junk[:40]!r}: status {status}")
        except (Closed, ConnectionResetError, BrokenPipeError):
            pass
        finally:
            s.close()
