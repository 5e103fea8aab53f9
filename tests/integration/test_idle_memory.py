"""Memory an idle keep-alive connection holds after it has been used (the target is <= 1 KiB,
and no buffers): a connection that has carried a 1 MiB download to a slow reader and a 1 MiB
upload (over HTTP, replayed after a refused connection) must hold no more, once idle, than one
that carried a small request; so must a TCP relay session idle after the same bursts. The
queues that grew for those transfers give their arrays back.

Measured as the core's malloc heap in use (glibc mallinfo2, every arena) around connections
made by a separate process to an nginx backend, so that only the core allocates meanwhile."""
from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from ringlane_sidecar.config.model import Retry

from .conftest import SANITIZER_PRELOAD
from .helpers import cluster, config, free_port, http_listener, rule, tcp_listener, total, wait_for

pytestmark = pytest.mark.timeout(120)

CONNS = 60

# argv: port, connections, "big" or "small". Each connection makes its requests, then stays open
# until stdin closes.
CLIENT = r"""
import os, socket, sys
port, n, big = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "big"
body = os.urandom(1 << 20)

def exchange(s, req):
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(rest) < length:
        rest += s.recv(1 << 20)

socks = []
for _ in range(n):
    s = socket.socket()
    if big:  # a small receive window: the proxy's queue to this client fills up
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.connect(("127.0.0.1", port))
    if big:
        exchange(s, b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        exchange(s, b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    else:
        exchange(s, b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def heap_in_use() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    return int(libc.mallinfo2().uordblks)


def bytes_per_idle_connection(c, port: int, kind: str) -> float:  # type: ignore[no-untyped-def]
    before = heap_in_use()
    p = subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(CONNS), kind],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", "the client failed"
        wait_for(lambda: total(c, "conns_active") == CONNS, 10, "the connections to be open")
        used = heap_in_use() - before
    finally:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(30)
    wait_for(lambda: total(c, "conns_active") == 0, 10, "the connections to close")
    return used / CONNS


@pytest.mark.skipif(bool(SANITIZER_PRELOAD), reason="under ASan the heap is the sanitizer's, not glibc's")
@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_used_connections_hold_no_more_once_idle(core, nginx, protocol) -> None:
    port, dead = free_port(), free_port()
    # [refused, nginx]: every request (or session) goes to the refused endpoint first, so an
    # HTTP upload is kept while the retry waits; one worker, so all of it happens in one arena.
    retry = Retry(attempts=1, on=("connect-failure",), backoff="10ms")
    listener = (http_listener(port, rule("r", "b", retry=retry)) if protocol == "http" else
                tcp_listener(port, "b", retry=retry))
    c = core(config([listener], [cluster("b", f"127.0.0.1:{dead}", nginx.a)]), cpus=[0])
    bytes_per_idle_connection(c, port, "small")  # warm-up: the worker's scratch, pools, arenas
    small = bytes_per_idle_connection(c, port, "small")
    big = bytes_per_idle_connection(c, port, "big")
    assert small <= 1024, f"{small:.0f} bytes per idle connection"
    assert big <= small + 64, f"{big:.0f} bytes per idle connection after 1 MiB each way, {small:.0f} after a small request"
