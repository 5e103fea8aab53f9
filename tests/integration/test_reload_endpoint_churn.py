"""Reloads that change what live traffic depends on (endpoints, listeners) while connections are
open, in flight or pooled; and memory across a reload storm.

- The upstream connection of a request in flight to an endpoint a reload removes is closed when
  the exchange ends, not pooled (the reload's prune only saw idle ones): reused, it would serve
  the address again once Kubernetes gives it to a new pod.
- A listener removed and re-added by two configs published back to back keeps its CPU steering
  (its new sockets once joined the old ones' reuseport group, and steering could end up crossed).
- A 600-reload storm leaves no per-reload heap growth."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from .backends import Reply, recv_all, recv_head
from .conftest import apply_and_wait
from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rule, total, wait_for
from .test_steering import connect_from_cpu, per_worker_opened

pytestmark = pytest.mark.timeout(90)

ONE = [0]
CYCLES = 16


def idle_ups(c) -> int:  # type: ignore[no-untyped-def]
    return total(c, "upstream_conns_idle")


def endpoint_a(tcp_server, release: threading.Event | None = None):  # type: ignore[no-untyped-def]
    """An upstream that answers each connection's request with "A" (once release is set, if
    given): its address, and events set when a request arrived and when the proxy closed."""
    got, eof = threading.Event(), threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        got.set()
        if release is not None:
            release.wait(20)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA")
        recv_all(conn)
        eof.set()

    return tcp_server(handler).address, got, eof


def test_upstream_conn_busy_at_reload_to_a_removed_endpoint_is_not_pooled(core, tcp_server, http_backend) -> None:
    """A request is in flight to endpoint A when a reload replaces A with B in the cluster. The
    request finishes on A (its config's endpoint). Its upstream connection must then be closed,
    not put back in the pool: no live config names A any more, so it can never be reused, and
    the reload's prune (rl_http_pools_prune, which closes idle connections to removed endpoints)
    has already run. Expected: A sees EOF within a few seconds, upstream_conns_idle returns to 0.
    Fails: rl_http_up_detach (rl_http_up.c) pools it whatever the newest config says; only
    rl_http_pools_prune, run once per config in switch_cfg (rl_worker.c), closes such
    connections, and only the ones idle at that moment. It stays until the cluster's
    idleTimeout (60s)."""
    release = threading.Event()
    a, got_req, eof = endpoint_a(tcp_server, release)
    b = http_backend(lambda req: Reply(200, b"B"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "up"))], [cluster("up", a)]), cpus=ONE)
    with Conn(port) as conn:
        conn.send(build_request("GET", "/held"))
        assert got_req.wait(5)
        apply_and_wait(c, config([http_listener(port, rule("r", "up"))], [cluster("up", b.address)], generation=2))
        release.set()
        r = conn.read_response()
        assert (r.status, r.text) == (200, "A")
        r = conn.request("GET", "/next")
        assert (r.status, r.text) == (200, "B")
    # B's connection may stay pooled: only A's must go.
    assert eof.wait(5), ("the connection to removed endpoint A went back to the pool and stays open "
                         f"(upstream_conns_idle={idle_ups(c)})")


def test_connection_opened_for_a_request_routed_on_the_old_config_is_not_pooled(core, tcp_server, http_backend) -> None:
    """A client starts a request head under config 1 (cluster up = A); a reload replaces A with
    B before the head ends. The request is routed on the config it began under (its hold) and
    goes to A on a *new* upstream connection, opened after the worker switched. That connection
    is to an endpoint no live config names: once the exchange ends it must be closed (as the
    test in test_reload_endpoint_churn.py expects for one opened before the reload): A sees EOF.
    Failed before: the new connection was taken as named by the newest config, though its
    endpoint came from the client's older one, and was pooled after the exchange."""
    a, got, eof = endpoint_a(tcp_server)
    b = http_backend(lambda req: Reply(200, b"B"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "up"))], [cluster("up", a)]), cpus=ONE)
    with Conn(port) as conn:
        part = b"GET /slow-head HTTP/1.1\r\nHost: test.local\r\n"
        conn.send(part)  # the head is under way (read, and parsed as it came) before the reload
        wait_for(lambda: c.listener_stats().get("web", {}).get("rx_bytes", 0) >= len(part), 5, "head bytes read")
        apply_and_wait(c, config([http_listener(port, rule("r", "up"))], [cluster("up", b.address)], generation=2))
        conn.send(b"X-Late: 1\r\n\r\n")
        r = conn.read_response()
        assert (r.status, r.text) == (200, "A"), "routed on the config the request began under"
        assert got.is_set()
    assert eof.wait(5), "the new connection to removed endpoint A went to the pool and stays open"




def test_listener_removed_and_readded_back_to_back_keeps_cpu_steering(core, http_backend) -> None:
    """A reload removes listener 'extra', the next one (published before the workers took the
    first in: the agent applies each ConfigMap update without waiting) adds it back on the same
    port. ARCHITECTURE.md: "a connection is accepted by the worker on the CPU that received it".
    Failed before: rl_core_apply bound new SO_REUSEPORT sockets while the old ones were still
    open; they joined the old sockets' reuseport group (indices 2, 3), and as the workers closed
    the old ones the kernel moved the last socket into each freed index: if worker 0 closed
    first, the cBPF program's "CPU -> index" sent CPU 0's connections to worker 1 and back, for
    the listener's life (about half the cycles). Now the re-add waits until the old sockets are
    gone (rl_steer_wait_unbound)."""
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    be = http_backend(lambda req: Reply(200, b"ok"))
    port, port2 = free_port(), free_port()
    base = [http_listener(port, rule("r", "up"))]
    extra = http_listener(port2, rule("r2", "up"), name="extra")
    cl = [cluster("up", be.address)]
    c = core(config(base + [extra], cl), cpus=[0, 1])
    gen = 1
    bad = []
    for cycle in range(CYCLES):
        c.apply(config(base, cl, generation=gen + 1))
        c.apply(config(base + [extra], cl, generation=gen + 2))
        gen += 2
        wait_for(lambda: c.served_generation() == gen, 5, f"generation {gen}")
        for cpu in (0, 1):
            before = per_worker_opened(c, "extra")
            connect_from_cpu(cpu, port2, 10)
            after = wait_for(lambda: (lambda x: x if sum(x) == sum(before) + 10 else None)(
                per_worker_opened(c, "extra")), 5, "accepts counted")
            delta = [a - b for a, b in zip(after, before)]
            if delta[cpu] != 10:
                bad.append((cycle, cpu, delta))
    assert not bad, f"connections accepted by the wrong worker after a remove/re-add: {bad}"


# ---- memory across a reload storm (measured in a child Python, alone in its heap) ----

CHURN_CHILD = r"""
import ctypes, gc, os, socket, sys, threading, time
root = sys.argv[1]
sys.path[:0] = [root, os.path.join(root, "tests")]
from ringlane_sidecar.core import Core
from ringlane_sidecar.config.model import Limits
from tests.integration.helpers import (cluster, config, free_port, header_filter, http_listener, rule, wait_for,
                                       wait_settled)

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def heap():
    gc.collect()
    return int(libc.mallinfo2().uordblks)

def backend():
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0)); ls.listen(128)
    def serve(s):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                _, _, buf = buf.partition(b"\r\n\r\n")
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        finally:
            s.close()
    def loop():
        while True:
            s, _ = ls.accept()
            threading.Thread(target=serve, args=(s,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return "127.0.0.1:%d" % ls.getsockname()[1]

engine = sys.argv[2]
b1, b2 = backend(), backend()
port = free_port()
def cfg(gen):
    odd = gen % 2
    rules = [rule("r%d" % i, "c%d" % (i % 4), prefix="/p%d" % i, headers=[("x-h%d" % i, "v")],
                  filters=[header_filter(set=[("x-set-%d" % i, "v" * 40)], remove=["x-gone"])])
             for i in range(40)]
    rules.append(rule("all", "c0"))
    cls = [cluster("c%d" % k, b1 if odd else b2, b2 if odd else b1) for k in range(4)]
    return config([http_listener(port, *rules)], cls, generation=gen,
                  limits=Limits(request_header_timeout="2s", idle_timeout="%ds" % (30 + odd)))

stop = threading.Event()
errors = []
def client():
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            # 20 requests a connection: 3 made ~20k connections a run, whose TIME_WAITs (60 s)
            # took most of the ephemeral ports by the second engine's run (connects then failed).
            for i in range(20):
                s.sendall(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
                buf = b""
                while not buf.endswith(b"ok"):
                    d = s.recv(4096)
                    if not d:
                        raise OSError("closed")
                    buf += d
            s.close()
        except OSError as e:
            errors.append(repr(e))

c = Core(engine, [0, 1])
gen = 1
c.apply(cfg(gen))
wait_for(lambda: c.served_generation() == gen, 10, "gen 1")
def storm(n):
    global gen
    stop.clear()
    ts = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for t in ts:
        t.start()
    for _ in range(n):
        gen += 1
        c.apply(cfg(gen))
        wait_for(lambda: c.served_generation() == gen, 10, "gen %d" % gen)
    stop.set()
    for t in ts:
        t.join(10)
    wait_settled(c, 20)
    wait_for(lambda: c.oldest_seq() == gen, 10, "old configs released")

# Warm-up: arenas, pools, scratch. The heap climbs to a plateau for some hundred reloads (60
# left it climbing through every interval in about one run in eight: 4.44, 4.54, 4.62, 4.69 MB).
storm(300)
heaps = [heap()]
for _ in range(4):
    storm(200)
    heaps.append(heap())
print("ERRORS", len(errors), errors[:3], flush=True)
print("HEAPS", heaps, flush=True)
# A one-off growth (a table doubling, an arena) lands in one interval; a leak in all of them.
print("GROWTH", min(b - a for a, b in zip(heaps, heaps[1:])) / 200.0, flush=True)
c.close()
"""


def test_reload_storm_frees_every_config(core, engine) -> None:
    """4 x 200 reloads (a 41-rule config, alternating endpoints and idle timeout) while clients open
    and close keep-alive connections: once the storm ends and every connection is closed, the
    core's heap is back where it was (epoch free releases every old config and its listener
    groups). Measured as glibc heap in use in a child Python running only the core."""
    from .conftest import run_python
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = f"import sys; sys.argv = ['churn', {root!r}, {engine!r}]; exec({CHURN_CHILD!r})"
    rc, out = run_python(script, 240)
    assert rc == 0, out[-3000:]
    growth = float(out.split("GROWTH")[1].split()[0])
    assert "ERRORS 0" in out, out
    assert growth < 100, f"heap grew {growth:.0f} B per reload in every interval:\n{out[-2000:]}"


class NamedServer:
    """An HTTP/1.1 keep-alive server on a given port answering its name; stop_listening() closes
    only the listening socket (connections it accepted keep being served), so another server can
    take the same address: a pod IP that Kubernetes gave to a new pod."""

    def __init__(self, name: str, port: int, hold: threading.Event | None = None) -> None:
        self.name, self.hold = name, hold
        self.got = threading.Event()
        self.requests: list[str] = []
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(64)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s: socket.socket) -> None:
        buf = b""
        try:
            while True:
                got = recv_head(s, buf)
                if got is None:
                    return
                head, buf = got
                target = head.split(b" ")[1].decode()
                self.requests.append(target)
                self.got.set()
                if self.hold is not None and target == "/held":
                    self.hold.wait(20)
                body = self.name.encode()
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            s.close()

    def stop_listening(self) -> None:
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()

    def close(self) -> None:
        self.stop_listening()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.mark.parametrize("readd", ["after-the-exchange", "during-the-exchange"])
def test_endpoint_removed_then_its_address_reused_gets_no_request_on_the_old_connection(core, http_backend,
                                                                                         readd) -> None:
    """Kubernetes recycles pod IPs. Endpoint A (old pod) has a request in flight when a reload
    replaces it with B; the next reload names A's address again, now a new pod, either after the
    old pod's exchange ended or while it is still running. The new pod must get the requests: a
    connection to the old pod cannot carry one. Failed before: the old pod's connection, busy at
    the first reload, went back to the pool after it (the reload's prune had run), the second
    reload's prune kept it (its address named again), and rl_http_up_get reused it; then, with
    a check of the newest config only at the end of the exchange, the same when the address came
    back during it. Now a switch marks busy connections whose endpoint it drops (u->stale)."""
    release = threading.Event()
    pa = free_port()
    old = NamedServer("old-pod", pa, hold=release)
    b = http_backend(lambda req: Reply(200, b"B"))
    port = free_port()
    new = None

    def readd_address(c) -> None:  # type: ignore[no-untyped-def]
        nonlocal new
        old.stop_listening()  # the old pod goes away; its IP goes to a new pod
        new = NamedServer("new-pod", pa)
        apply_and_wait(c, config([http_listener(port, rule("r", "up"))], [cluster("up", f"127.0.0.1:{pa}")],
                                 generation=3))

    try:
        c = core(config([http_listener(port, rule("r", "up"))], [cluster("up", f"127.0.0.1:{pa}")]), cpus=ONE)
        with Conn(port) as conn:
            conn.send(build_request("GET", "/held"))
            assert old.got.wait(5)
            apply_and_wait(c, config([http_listener(port, rule("r", "up"))], [cluster("up", b.address)],
                                     generation=2))
            if readd == "during-the-exchange":
                readd_address(c)
            release.set()
            assert conn.read_response().text == "old-pod"
        if readd == "after-the-exchange":
            readd_address(c)
        answers = []
        with Conn(port) as conn:
            for i in range(3):
                answers.append(conn.request("GET", f"/after/{i}").text)
        assert answers == ["new-pod"] * 3, (
            f"requests after the reloads went to the removed endpoint's old connection: {answers}")
    finally:
        old.close()
        if new is not None:
            new.close()
