"""Memory per idle connection: hold N keep-alive connections open through a peer (each has
made one request, so the proxy really accepted it and set it up) and compare the peer's VmRSS
before and after all but a first batch. The client is a small epoll loop in this process."""
from __future__ import annotations

import errno
import resource
import selectors
import socket
import time
from dataclasses import dataclass

from ringbench.accounting import rss_kib
from ringbench.net import HOST

MAX_CONNECTING = 256          # connections in the handshake at once (stays under listen backlogs)


@dataclass
class IdleResult:
    connections: int
    opened: int
    rss_before_kib: int
    rss_after_kib: int
    seconds_to_open: float
    problem: str = ""
    warm: int = 0  # connections held before the baseline (not in opened)

    @property
    def bytes_per_conn(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) * 1024 / max(self.opened, 1)


def raise_nofile() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _response_complete(buf: bytes) -> bool:
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) - head_end - 4 >= length


def hold_connections(port: int, path: str, count: int, timeout_s: float) -> tuple[list[socket.socket], int, str]:
    """Opens count connections, makes one keep-alive GET on each and waits for every answer.

    Returns the open sockets (the caller closes them), how many were answered, and a problem
    ("" when all succeeded).
    """
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    sel = selectors.EpollSelector()
    done: list[socket.socket] = []
    pending: dict[socket.socket, bytearray] = {}
    started = 0
    deadline = time.monotonic() + timeout_s
    problem = ""
    try:
        while len(done) < count:
            while started < count and len(pending) < MAX_CONNECTING:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex((HOST, port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    return done + list(pending), len(done), f"connect #{started}: {errno.errorcode.get(err, err)}"
                pending[s] = bytearray()
                sel.register(s, selectors.EVENT_WRITE)
                started += 1
            left = deadline - time.monotonic()
            if left <= 0:
                return done + list(pending), len(done), f"timed out with {len(done)} of {count} connections answered"
            for key, events in sel.select(timeout=min(left, 1.0)):
                obj = key.fileobj
                if not isinstance(obj, socket.socket):
                    continue
                s = obj
                if events & selectors.EVENT_WRITE:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        return done + list(pending), len(done), f"connect failed: {errno.errorcode.get(err, err)}"
                    s.send(request)
                    sel.modify(s, selectors.EVENT_READ)
                    continue
                chunk = s.recv(65536)
                if not chunk:
                    return done + list(pending), len(done), f"the peer closed a connection after {len(done)} answers"
                pending[s] += chunk
                if _response_complete(bytes(pending[s])):
                    if not pending[s].startswith(b"HTTP/1.1 200"):
                        problem = problem or f"unexpected answer: {bytes(pending[s][:40])!r}"
                    sel.unregister(s)
                    del pending[s]
                    done.append(s)
        return done, len(done), problem
    finally:
        sel.close()


def measure(port: int, path: str, count: int, pids: list[int], timeout_s: float = 30.0) -> IdleResult:
    """VmRSS growth per connection, counted from a first batch of connections on: what a proxy
    sets up once for the load rather than per connection (upstream connections pooled for the
    MAX_CONNECTING requests in flight at once, buffer pages touched for the first time, heap
    arenas) is in the baseline, so 1,000 connections give the same answer as 10,000."""
    warm_count = min(MAX_CONNECTING, count // 4)
    t0 = time.monotonic()
    warm, warm_answered, problem = hold_connections(port, path, warm_count, timeout_s)
    socks: list[socket.socket] = []
    answered = 0
    try:
        before = rss_kib(pids)
        if not problem:
            socks, answered, problem = hold_connections(port, path, count - warm_count, timeout_s)
        opened_s = time.monotonic() - t0
        after = rss_kib(pids)
    finally:
        for s in warm + socks:
            s.close()
    return IdleResult(count, answered, before, after, opened_s, problem, warm_answered)
