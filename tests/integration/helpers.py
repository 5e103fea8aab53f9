"""Helpers for the integration tests: ports and condition waits (from tests/polling.py, shared
with the agent tests), a raw HTTP/1.1 client that parses responses byte-exactly, and short
builders for core configs."""
from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from ringlane_sidecar.config.model import (
    Backend,
    Cluster,
    Config,
    Endpoint,
    Filter,
    Header,
    HeaderMatch,
    HeaderModifier,
    Limits,
    Listener,
    Match,
    PathMatch,
    Retry,
    Rule,
    Timeouts,
    UrlRewrite,
)
from polling import free_port, port_open, wait_for  # noqa: F401 -- re-exported for the tests


def own_stream_sockets() -> Iterator[socket.socket]:
    """A dup of each stream socket of this process (the core runs in it, so the proxy's sockets
    are among them); the caller closes each."""
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = os.dup(int(name))
        except OSError:
            continue  # closed meanwhile
        try:
            s = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)  # not a socket
            continue
        if s.type == socket.SOCK_STREAM:
            yield s
        else:
            s.close()


def proxy_side(client: socket.socket) -> socket.socket | None:
    """A dup of the proxy's side of client's connection (the socket whose peer is client's
    local address), or None (not accepted yet)."""
    for s in own_stream_sockets():
        try:
            if s.getpeername() == client.getsockname():
                return s
        except OSError:
            pass  # unconnected or listening
        s.close()
    return None


def accepted_nodelay(client: socket.socket) -> int:
    """TCP_NODELAY of the proxy's side of client's connection."""
    s = proxy_side(client)
    if s is None:
        raise AssertionError(f"no socket of this process is connected to {client.getsockname()}")
    with s:
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# ---- a raw HTTP/1.1 client ----

@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_len: int  # bytes of the whole response on the wire

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class Closed(Exception):
    """The peer closed the connection before a whole response arrived."""


class Conn:
    """One client connection: send raw bytes, read responses with exact framing, count bytes."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0, rcvbuf: int = 0,
                 read_size: int = 1 << 20) -> None:
        """rcvbuf (set before connecting) and read_size make a slow reader."""
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.read_size = read_size
        self.buf = b""
        self.sent = 0
        self.received = 0

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def request(self, method: str = "GET", path: str = "/", headers: Iterable[tuple[str, str]] = (),
                body: bytes | None = None, host: str = "test.local") -> Response:
        self.send(build_request(method, path, headers, body, host))
        return self.read_response(head=method == "HEAD")

    def _fill(self) -> None:
        chunk = self.sock.recv(self.read_size)
        if not chunk:
            raise Closed(f"connection closed with {len(self.buf)} unparsed bytes: {self.buf[:200]!r}")
        self.received += len(chunk)
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self) -> tuple[int, str, list[tuple[str, str]], int]:
        start = self.received - len(self.buf)
        line = self._line()
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise AssertionError(f"not an HTTP status line: {line!r}")
        headers = []
        while True:
            h = self._line()
            if not h:
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        return int(parts[1]), parts[2] if len(parts) > 2 else "", headers, start

    def read_response(self, head: bool = False) -> Response:
        """One final response (1xx interim responses are skipped)."""
        while True:
            status, reason, headers, start = self.read_head()
            if not 100 <= status < 200 or status == 101:
                break
        r = Response(status, reason, headers, b"", 0)
        te = (r.header("transfer-encoding") or "").lower()
        cl = r.header("content-length")
        if head or status in (101, 204, 304):
            body = b""
        elif "chunked" in te:
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers
                        pass
                    break
                parts.append(self._exact(size))
                if self._exact(2) != b"\r\n":
                    raise AssertionError("bad chunk framing")
            body = b"".join(parts)
        elif cl is not None:
            body = self._exact(int(cl))
        else:
            body = self.read_to_close()
        r.body = body
        r.raw_len = (self.received - len(self.buf)) - start
        return r

    def read_to_close(self) -> bytes:
        try:
            while True:
                self._fill()
        except Closed:
            pass
        out, self.buf = self.buf, b""
        return out

    def at_eof(self, timeout: float = 3.0) -> bool:
        """True when the peer closes (EOF or reset) within timeout with no further bytes."""
        if self.buf:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        self.received += len(data)
        self.buf += data
        return not data

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_request(method: str = "GET", path: str = "/", headers: Iterable[tuple[str, str]] = (),
                  body: bytes | None = None, host: str = "test.local") -> bytes:
    hs = list(headers)
    names = {k.lower() for k, _ in hs}
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"] if "host" not in names else [f"{method} {path} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in hs]
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def get(port: int, path: str = "/", headers: Iterable[tuple[str, str]] = (), host: str = "test.local",
        method: str = "GET", body: bytes | None = None, timeout: float = 5.0) -> Response:
    """One request on a fresh connection."""
    with Conn(port, timeout=timeout) as c:
        return c.request(method, path, headers, body, host)


def nginx_echo(r: Response) -> dict[str, str]:
    """Backend A's echo body: uri|x-env|x-forwarded-for|x-debug|x-route|host|method."""
    keys = ("uri", "x_env", "xff", "x_debug", "route", "host", "method")
    return dict(zip(keys, r.text.rstrip("\n").split("|")))


# ---- config builders ----

def cluster(name: str, *addresses: str, **kw: object) -> Cluster:
    return Cluster(name=name, endpoints=tuple(Endpoint(address=a) for a in addresses), **kw)  # type: ignore[arg-type]


def rule(name: str, *backends: str | tuple[str, int], prefix: str | None = None, exact: str | None = None,
         headers: Iterable[tuple[str, str]] = (), method: str | None = None,
         matches: tuple[Match, ...] | None = None, hostnames: Iterable[str] = (),
         timeouts: Timeouts | None = None, retry: Retry | None = None, filters: Iterable[Filter] = (),
         tag: bool = False) -> Rule:
    """An HTTP rule; with no path given it matches PathPrefix "/" (what parse_config fills in).
    tag=True adds a filter setting x-route: <name> so backend A's echo shows which rule served."""
    if matches is None:
        path = PathMatch("Exact", exact) if exact is not None else PathMatch("PathPrefix", prefix or "/")
        matches = (Match(path=path, headers=tuple(HeaderMatch(k, v) for k, v in headers), method=method),)
    fs = list(filters)
    if tag:
        fs.append(Filter(request_header_modifier=HeaderModifier(set=(Header("x-route", name),))))
    bs = tuple(Backend(cluster=b) if isinstance(b, str) else Backend(cluster=b[0], weight=b[1]) for b in backends)
    return Rule(name=name, backends=bs, matches=matches, hostnames=tuple(hostnames),
                timeouts=timeouts or Timeouts(), retry=retry or Retry(), filters=tuple(fs))


def tcp_rule(cluster_name: str, retry: Retry = Retry()) -> Rule:
    return Rule(name="tcp", backends=(Backend(cluster=cluster_name),), retry=retry)


def http_listener(port: int, *rules: Rule, name: str = "web") -> Listener:
    return Listener(name=name, address=f"127.0.0.1:{port}", protocol="http", rules=tuple(rules))


def tcp_listener(port: int, cluster_name: str, name: str = "tcp", retry: Retry = Retry()) -> Listener:
    return Listener(name=name, address=f"127.0.0.1:{port}", protocol="tcp", rules=(tcp_rule(cluster_name, retry),))


def relay_cfg(port: int, *backends: str, limits: Limits | None = None, retry: Retry = Retry(), **kw: object) -> Config:
    """One TCP relay listener on port to a cluster "up" of backends (kw: the cluster's options)."""
    return config([tcp_listener(port, "up", retry=retry)], [cluster("up", *backends, **kw)], limits=limits)


def config(listeners: Iterable[Listener], clusters: Iterable[Cluster], generation: int = 1,
           limits: Limits | None = None) -> Config:
    return Config(generation=generation, limits=limits or Limits(request_header_timeout="2s"),
                  listeners=tuple(listeners), clusters=tuple(clusters))


def header_filter(set: Iterable[tuple[str, str]] = (), add: Iterable[tuple[str, str]] = (),  # noqa: A002
                  remove: Iterable[str] = ()) -> Filter:
    return Filter(request_header_modifier=HeaderModifier(set=tuple(Header(k, v) for k, v in set),
                                                         add=tuple(Header(k, v) for k, v in add),
                                                         remove=tuple(remove)))


def rewrite_filter(prefix: str) -> Filter:
    return Filter(url_rewrite=UrlRewrite(replace_prefix_match=prefix))


# ---- raw sockets ----

def fill_until_blocked(s: socket.socket, chunk: bytes = b"z" * 65536) -> int:
    """Writes until s stays unwritable for 1 s (the proxy stopped reading it): bytes written."""
    s.setblocking(False)
    n = 0
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 1.0:  # a quiet period, measured: not synchronisation
        try:
            n += s.send(chunk)
            quiet_since = time.monotonic()
        except BlockingIOError:
            select.select([], [s], [], 0.05)
    return n


def fill_all_until_blocked(socks: list[socket.socket], chunk: bytes = b"z" * 65536) -> None:
    """Writes to every (non-blocking) socket until none took a byte for 20 waits of 50 ms in a
    row: the proxy paused them all."""
    quiet = 0
    while quiet < 20:
        wrote = False
        for s in socks:
            try:
                s.send(chunk)
                wrote = True
            except BlockingIOError:
                pass
        if wrote:
            quiet = 0
        else:
            quiet += 1
            select.select([], socks, [], 0.05)


def recv_until_close(s: socket.socket, timeout: float = 10.0) -> tuple[bytes, str]:
    """Everything s receives, and how it ended: 'eof', 'reset' or 'timeout'."""
    s.settimeout(timeout)
    parts = []
    try:
        while True:
            d = s.recv(1 << 16)
            if not d:
                return b"".join(parts), "eof"
            parts.append(d)
    except ConnectionResetError:
        return b"".join(parts), "reset"
    except socket.timeout:
        return b"".join(parts), "timeout"


def wait_error(conn: socket.socket, timeout_ms: int) -> str:
    """Waits (not reading) for an error or hang-up on conn: 'reset', 'hup' or 'nothing'."""
    p = select.poll()
    p.register(conn, select.POLLERR | select.POLLHUP)
    ev = p.poll(timeout_ms)
    if not ev:
        return "nothing"
    return "reset" if ev[0][1] & select.POLLERR else "hup"


# ---- stats ----

ZERO_CODES = {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends data on a new connection and returns all it gets back until the proxy closes it
    (or resets it, or the timeout passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def total(c, field: str) -> int:  # type: ignore[no-untyped-def]
    """A worker gauge or counter of core c, summed over its workers."""
    return sum(getattr(t, field) for t in c.totals())


def in_flight(c) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """(client connections, busy upstream connections (open minus idle pooled ones), requests in
    flight to any cluster) of core c."""
    busy = total(c, "upstream_conns_active") - total(c, "upstream_conns_idle")
    return total(c, "conns_active"), busy, sum(cs["active"] for cs in c.cluster_stats().values())


def wait_settled(c, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Waits until no client connection, busy upstream connection or request in flight is left."""
    wait_for(lambda: in_flight(c) == (0, 0, 0), timeout,
             lambda: f"no client connection, busy upstream connection or request in flight (now {in_flight(c)})")


def relay_gauges(c, listener: str = "tcp", cluster_name: str = "up") -> dict:  # type: ignore[no-untyped-def,type-arg]
    """What a TCP relay holds: client connections, upstream connections, the cluster's sessions in
    flight, and the listener's opened minus closed connections."""
    ts = list(c.totals())
    ls = c.listener_stats()[listener]
    return {"conns_active": sum(t.conns_active for t in ts),
            "upstream_conns_active": sum(t.upstream_conns_active for t in ts),
            "cluster_active": c.cluster_stats()[cluster_name]["active"],
            "open_minus_closed": ls["conns_opened"] - ls["conns_closed"]}


def wait_relay_idle(c, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Waits until every relay_gauges value is back to zero."""
    zero = {"conns_active": 0, "upstream_conns_active": 0, "cluster_active": 0, "open_minus_closed": 0}
    try:
        wait_for(lambda: relay_gauges(c) == zero, timeout, "gauges back to zero")
    except AssertionError:
        raise AssertionError(f"relay gauges not back to zero after {timeout}s: {relay_gauges(c)}") from None


def wait_codes(core, listener: str, route: str, timeout: float = 3.0, **expected: int) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Wait until rule_stats()[(listener, route)]["codes"] equals ZERO_CODES updated with
    expected (keys like s2xx=3 or "2xx"), then return that rule's stats. A response is counted
    on the worker right after its bytes are queued, so a client can see it a moment earlier."""
    want = dict(ZERO_CODES)
    for k, v in expected.items():
        want[k.lstrip("s")] = v

    def ready():  # type: ignore[no-untyped-def]
        st = core.rule_stats().get((listener, route))
        return st if st and st["codes"] == want else None

    try:
        return wait_for(ready, timeout, f"codes of {(listener, route)} to be {want}")
    except AssertionError:
        raise AssertionError(f"rule_stats{(listener, route)} = {core.rule_stats().get((listener, route))}, "
                             f"expected codes {want}") from None
