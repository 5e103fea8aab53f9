"""Engine edges found in a review, each test failed before its fix (on the engine named in its
docstring; both engines run it): a socket starved of receive buffers that also sends (epoll
corrupted its lists and spun), a socket closed while connecting (io_uring kept it until the
connect timed out), receive buffers all parked in queues to peers that do not read (the worker
could read no socket any more).

Scenarios that can hang a worker run the core in a child Python (a spinning worker cannot be
joined by Core.close()); the parent only waits for the child's exit code with a deadline."""
from __future__ import annotations

import os
import select
import socket
import sys
import threading
from typing import Callable

import pytest

from .conftest import run_python
from .helpers import Conn, cluster, config, free_port, http_listener, rule, tcp_listener, total, wait_for

pytestmark = pytest.mark.timeout(90)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_child(func: str, *args: object, timeout: float = 40) -> tuple[int, str]:
    """Runs func(*args) of this module in a child Python; its exit code and output."""
    script = (f"import sys; sys.path[:0] = [{ROOT!r}, {os.path.join(ROOT, 'tests')!r}]\n"
              f"from tests.integration import test_engine_edges as m\n"
              f"m.{func}(*{args!r})\n")
    return run_python(script, timeout)


def _exit(code: int, msg: str = "") -> None:
    print(msg, flush=True)
    sys.stdout.flush()
    os._exit(code)


def _fill_send(s: socket.socket, done: Callable[[], bool], deadline: float = 10.0) -> int:
    """Sends until the socket stays unwritable for 0.5 s (the proxy stopped reading) and done()
    says so (a worker stalled for that long has not necessarily stopped)."""
    import time

    s.setblocking(False)
    sent = 0
    chunk = b"x" * 65536
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        _, w, _ = select.select([], [s], [], 0.5)
        if not w and done():
            break
        if not w:
            continue
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            continue
    s.setblocking(True)
    return sent


def _worker_busy() -> bool:
    """True when a worker thread of this process burns CPU while nothing happens (0.5 s)."""
    import time

    def ticks() -> int:
        n = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            if "rl-worker" in st:
                fields = st.rsplit(")", 1)[1].split()
                n += int(fields[11]) + int(fields[12])
        return n

    t0 = ticks()
    time.sleep(0.5)  # measuring CPU use over a window, not synchronising
    return ticks() - t0 > 25


# ---- epoll: a starved socket put on the pending list (list corruption) ----

def _child_starved_socket_sends(engine: str) -> None:
    from ringlane_sidecar.core import Core

    from tests.integration.backends import TcpServer

    release = threading.Event()

    def pusher(conn: socket.socket, index: int) -> None:
        """Sends until the test ends and never reads (a fixed amount could all fit in the kernel's
        autotuned socket buffers, and the proxy's queues would not fill up)."""
        conn.setblocking(True)
        chunk = b"y" * 65536
        try:
            while not release.is_set():
                conn.sendall(chunk)
        except OSError:
            pass
        release.wait(30)

    srv = TcpServer(pusher)
    port = free_port()
    c = Core(engine, [0], buf_size=4096, recv_bufs=8, spill_bufs=1)  # no heap copies to fall back on
    cfg = config([tcp_listener(port, "p")], [cluster("p", srv.address)])
    c.apply(cfg)
    wait_for(lambda: c.served_generation() == cfg.generation, 5, "config")
    # R2: the backend pushes to a client that does not read: its queue holds receive buffers
    # and a send waits for room.
    c2 = socket.socket()
    c2.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c2.connect(("127.0.0.1", port))
    wait_for(lambda: srv.accepted == 1, 5, "R2 upstream")
    # R1: a client pushing to a backend that does not read, and not reading either: the
    # rest of the buffers go.
    c1 = socket.socket()
    c1.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c1.connect(("127.0.0.1", port))
    wait_for(lambda: srv.accepted == 2, 5, "R1 upstream")
    _fill_send(c1, lambda: total(c, "uring_buf_exhausted") > 0)
    # C2 sends: the proxy finds no receive buffer for it (C2 starved).
    c2.sendall(b"z" * 1000)
    try:
        wait_for(lambda: total(c, "uring_buf_exhausted") > 0, 5, "the receive buffers to run out")
    except AssertionError as e:
        _exit(5, f"setup: {e}")
    # C2 reads: room on its socket, the waiting send goes on while C2 is starved.
    c2.settimeout(5)
    got = 0
    try:
        while got < (1 << 20):
            b = c2.recv(65536)
            if not b:
                break
            got += len(b)
    except OSError as e:
        _exit(3, f"C2 stalled after {got} bytes: {e!r}; loop_turns={total(c, 'loop_turns')}")
    # Everything closes: the worker must notice and count every connection gone.
    release.set()
    for s in (c1, c2):
        s.close()
    srv.close()
    try:
        wait_for(lambda: total(c, "conns_active") == 0, 5, "the relays to close")
    except AssertionError:
        _exit(4, f"the worker is stuck: conns_active={total(c, 'conns_active')}, "
                 f"worker CPU busy={_worker_busy()}")
    _exit(0, f"ok {got}")


def test_starved_socket_that_sends_keeps_the_worker_alive(engine) -> None:
    """rl_engine_epoll.c: a socket waiting for a receive buffer sits on the `starved` list
    through its `pending` node; push_pending() (called by ep_send, ep_connect, ep_recv_start)
    only checks RL_S_PENDING and links the same node into the pending list. When a buffer
    comes back, ep_buf_recycle pops a self-linked node off `starved` forever: the worker spins
    at 100% CPU and never serves anything again (here: a relay client that cannot be read for
    lack of buffers takes the bytes queued for it)."""
    rc, out = run_child("_child_starved_socket_sends", engine)
    assert rc == 0, f"rc={rc}\n{out}"


# ---- io_uring: an upstream closed while its connect is in flight stayed open ----

def test_upstream_closed_while_connecting_is_released_at_once(core, blackhole) -> None:
    """rl_engine_uring.c ur_close: a connect in flight is not cancelled ("its timeout is
    linked"), so an upstream closed while connecting (request timeout, client gone, retry)
    keeps its socket, its rl_http_up and upstream_conns_active until the cluster's
    connectTimeout, or until the kernel gives up (about 2 min) with connectTimeout 0s, where
    no timeout is linked at all. epoll closes it at once."""
    from ringlane_sidecar.config.model import Timeouts

    port = free_port()
    c = core(config([http_listener(port, rule("all", "h", timeouts=Timeouts(request="300ms")))],
                    [cluster("h", blackhole, connect_timeout="20s")]), cpus=[0])
    with Conn(port, timeout=5) as conn:
        r = conn.request("GET", "/hang")
        assert r.status == 504, r
    # The request timed out while its upstream was still connecting: that connection is closed.
    wait_for(lambda: total(c, "conns_active") == 0, 5, "the client connection to be released")
    wait_for(lambda: total(c, "upstream_conns_active") == 0, 3,
             f"the connecting upstream to be released (active={total(c, 'upstream_conns_active')})")


# ---- both engines: receive buffers all parked in queues to busy upstreams (deadlock) ----

RELAY_BYTES = 16 << 20


def _write_then_read(conn: socket.socket, index: int) -> None:
    """A backend that answers before it reads: sends RELAY_BYTES, then reads RELAY_BYTES."""
    block = b"u" * (1 << 20)
    for _ in range(RELAY_BYTES >> 20):
        conn.sendall(block)
    got = 0
    while got < RELAY_BYTES:
        b = conn.recv(1 << 20)
        if not b:
            return
        got += len(b)


def _child_full_duplex_relays(engine: str) -> None:
    from ringlane_sidecar.core import Core

    from tests.integration.backends import TcpServer

    srv = TcpServer(_write_then_read)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: the backend buffers little
    port = free_port()
    c = Core(engine, [0], buf_size=4096, recv_bufs=8)
    cfg = config([tcp_listener(port, "w")], [cluster("w", srv.address)])
    c.apply(cfg)
    wait_for(lambda: c.served_generation() == cfg.generation, 5, "config")
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(4)]
    received = [0] * len(clients)
    sent = [0] * len(clients)
    errors: list[BaseException] = []

    def send(i: int) -> None:
        block = b"c" * (1 << 20)
        try:
            for _ in range(RELAY_BYTES >> 20):
                clients[i].sendall(block)
                sent[i] += len(block)
        except OSError as e:
            errors.append(e)

    def recv(i: int) -> None:
        try:
            while received[i] < RELAY_BYTES:
                b = clients[i].recv(1 << 20)
                if not b:
                    return
                received[i] += len(b)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=f, args=(i,), daemon=True) for i in range(len(clients)) for f in (send, recv)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stuck = [t for t in threads if t.is_alive()]
    if not stuck and received == [RELAY_BYTES] * len(clients):
        _exit(0)
    _exit(3, f"relays stalled: received {received}, sent {sent} of {RELAY_BYTES} each; "
        f"buffer exhaustions {total(c, 'uring_buf_exhausted')}; errors {errors[:2]}; worker spinning={_worker_busy()}")




def test_full_duplex_relays_do_not_deadlock_on_receive_buffers(engine) -> None:
    """Four TCP relays to a backend that writes before it reads, with full-duplex clients. Each
    relay parked PAUSE_AT (4) receive buffers in its client->upstream queue (the upstream is not
    reading), so with 8 receive buffers none was left to read the upstreams: the backends blocked
    writing, never read, and the relays (and every other connection of the worker) stopped for
    good (reliably on epoll, in some runs on io_uring). Scarce receive buffers are now copied
    out to the heap, so the upstreams are read."""
    rc, out = run_child("_child_full_duplex_relays", engine, timeout=60)
    assert rc == 0, f"rc={rc}\n{out}"
