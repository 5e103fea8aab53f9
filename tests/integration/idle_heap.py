"""Heap a core holds per idle keep-alive connection, measured in a Python of its own:
`python idle_heap.py ENGINE PROTOCOL NGINX_ADDRESS` prints "MEASURED <small> <big>", the bytes
per connection after a small request and after 1 MiB each way (see test_idle_memory.py).

Measured as glibc's malloc heap in use (mallinfo2, every arena) around connections made by a
separate client process. The heap is the whole process's, so the core must be alone in it: in
the test session a garbage collection or a thread left by an earlier test freeing memory was
subtracted from the core's (CI once measured 157 B for ~600)."""
from __future__ import annotations

import ctypes
import gc
import os
import subprocess
import sys

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from ringlane_sidecar.config.model import Retry  # noqa: E402
from ringlane_sidecar.core import Core  # noqa: E402

from tests.integration.helpers import (cluster, config, free_port, http_listener, rule,  # noqa: E402
                                       tcp_listener, total, wait_for, wait_settled)

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


def bytes_per_idle_connection(c: Core, port: int, kind: str) -> float:
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
    wait_settled(c)  # upstream sides too: what they free later must not count against the next round
    return used / CONNS


def main(engine: str, protocol: str, nginx: str) -> None:
    gc.disable()
    port, dead = free_port(), free_port()
    # [refused, nginx]: every request (or session) goes to the refused endpoint first, so an
    # HTTP upload is kept while the retry waits; one worker, so all of it happens in one arena.
    retry = Retry(attempts=1, on=("connect-failure",), backoff="10ms")
    listener = (http_listener(port, rule("r", "b", retry=retry)) if protocol == "http" else
                tcp_listener(port, "b", retry=retry))
    cfg = config([listener], [cluster("b", f"127.0.0.1:{dead}", nginx)])
    c = Core(engine, [0])
    try:
        c.apply(cfg)
        wait_for(lambda: c.served_generation() == cfg.generation, 5, "the config to be served")
        bytes_per_idle_connection(c, port, "small")  # warm-up: the worker's scratch, pools, arenas
        small = bytes_per_idle_connection(c, port, "small")
        big = bytes_per_idle_connection(c, port, "big")
        print("MEASURED", small, big, flush=True)
    finally:
        c.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
