"""A foreign SO_REUSEPORT socket on a listener's address, and a FIN that comes with the response
a pipelined request waits behind. From a review pass: both failed before on both engines."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager

import pytest

from ringlane_sidecar.config.model import Listener
from ringlane_sidecar.core import CoreError

from .backends import recv_head
from .conftest import apply_and_wait
from .helpers import Closed, Conn, build_request, cluster, config, free_port, get, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(60)


def _request_from_cpu(cpu: int, port: int, timeout: float) -> str:
    """One GET on a new connection made by a thread pinned to cpu: 'ok', or what went wrong."""
    out: list[str] = []

    def run() -> None:
        try:
            os.sched_setaffinity(threading.get_native_id(), {cpu})
            with Conn(port, timeout=timeout) as c:
                out.append("ok" if c.request("GET", f"/from-cpu{cpu}").status == 200 else "bad status")
        except (OSError, Closed) as exc:
            out.append(f"{type(exc).__name__}: {exc}")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout + 5)
    return out[0] if out else "no result"


@pytest.mark.skipif(not {0, 1} <= os.sched_getaffinity(0), reason="needs CPUs 0 and 1")
def test_foreign_reuseport_listener_on_the_port_does_not_swallow_connections(core, nginx) -> None:
    """Another process (a second sidecar, the app with SO_REUSEPORT, a stray) already listens on
    the listener's address with SO_REUSEPORT and never accepts. The port is taken: the core
    refuses the listener as it does a plainly taken port. Before, the bind succeeded (the
    group admits a socket of the same uid), the steering program's index 0 was the foreign
    socket, and every connection whose SYN was handled on CPU 0 hung."""
    port = free_port()
    stray = socket.socket()
    stray.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    stray.bind(("127.0.0.1", port))
    stray.listen(16)
    try:
        with pytest.raises(CoreError, match="in use"):
            core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=[0, 1])
    finally:
        stray.close()
    # Once the port is free again, the same config listens and both workers serve.
    core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=[0, 1])
    assert {cpu: _request_from_cpu(cpu, port, 3.0) for cpu in (0, 1)} == {0: "ok", 1: "ok"}


def test_pipelined_post_behind_a_response_followed_by_fin_is_not_a_502(core, tcp_server) -> None:
    """The backend answers GET /warm (keep-alive framing, no Connection: close) and closes the
    connection at once: the response and the FIN reach the proxy together (one segment). A FIN
    that comes a moment later is the keep-alive race every proxy has (a GET is retried). A POST pipelined
    behind the GET must go on a new connection (the proxy already holds that FIN), reach the
    backend once and be answered. Before, the response's end pooled the connection and the
    POST, replayed at once, took it before the engine delivered the FIN: a 502 for a request
    the backend never saw. (When
    the client sends the POST after reading the response, the proxy has seen the FIN and
    opens a new connection: test_post_after_backend_closed_idle_connection_is_sent_once_on_a_new_one.)"""
    seen: list[bytes] = []

    def handler(conn: socket.socket, index: int) -> None:
        got = recv_head(conn)
        if got is None:
            return
        head, rest = got
        seen.append(head.split(b"\r\n")[0])
        if head.startswith(b"GET"):
            # corked: the FIN goes in the answer's own segment, so it is there when the answer is
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm")
            conn.shutdown(socket.SHUT_WR)
            return
        while len(rest) < 5:
            d = conn.recv(100)
            if not d:
                return
            rest += d
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + rest[:5])

    be = tcp_server(handler)
    port = free_port()
    # No retry policy needed: the POST never reached the backend. One worker: one pool.
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=[0])
    for i in range(20):
        seen.clear()
        with Conn(port) as c:
            c.send(build_request("GET", f"/warm{i}") + build_request("POST", f"/order{i}", body=b"order"))
            r1 = c.read_response()
            r2 = c.read_response()
        assert (r1.status, r1.body) == (200, b"warm"), (i, r1)
        assert (r2.status, r2.body) == (200, b"order"), (i, r2, seen)


# ==== listener probe: an address on a port whose old sockets (another address) still close ====

@contextmanager
def _workers_busy(cpus=(0, 1)):  # type: ignore[no-untyped-def]
    """The core's workers get no CPU for a while, as when each is in a long loop turn under
    load: they are SCHED_IDLE and a busy loop runs on each of their CPUs (the test's own
    thread still gets its fair share). Nothing waits on them meanwhile."""
    tids = [int(t) for t in os.listdir("/proc/self/task")
            if open(f"/proc/self/task/{t}/comm").read().startswith("rl-worker")]
    assert tids
    for t in tids:
        os.sched_setscheduler(t, os.SCHED_IDLE, os.sched_param(0))
    hogs = [subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", "while 1: pass"]) for cpu in cpus]
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait()


@pytest.mark.skipif(not {0, 1} <= set(os.sched_getaffinity(0)), reason="needs CPUs 0 and 1")
def test_wildcard_listener_on_a_port_just_left_by_loopback_is_not_refused(core, nginx) -> None:
    """Config 1 listens on 127.0.0.1:P; config 2 drops it (a listener on port Q instead);
    config 3 listens on 0.0.0.0:P. The workers close the 127.0.0.1:P sockets at their next
    loop turn; a busy worker (here: one kept off the CPU for the few ms the two reloads take)
    still has them open when config 3 is applied. Those are our own sockets: config 3 waits for
    them (bounded) and listens. (The first version of the foreign-socket probe collided with
    them and refused config 3 as "in use".)"""
    p, q = free_port(), free_port()
    c = core(config([http_listener(p, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=[0, 1])
    wild = Listener(name="web", address=f"0.0.0.0:{p}", protocol="http", rules=(rule("all", "a"),))
    with _workers_busy():
        c.apply(config([http_listener(q, rule("all", "a"))], [cluster("a", nginx.a)], generation=2))
        try:
            c.apply(config([wild], [cluster("a", nginx.a)], generation=3))
            err = ""
        except CoreError as exc:
            err = str(exc)
    assert err == "", err
    wait_for(lambda: c.served_generation() == 3, 5.0, "workers on config 3")
    assert get(p, "/x").status == 200


@pytest.mark.skipif(not {0, 1} <= set(os.sched_getaffinity(0)), reason="needs CPUs 0 and 1")
def test_foreign_reuseport_socket_on_a_readded_address_is_refused(core, nginx) -> None:
    """The address 127.0.0.1:P left the config (config 2), and meanwhile another process of
    the same uid listens there with SO_REUSEPORT (the app took the freed port, a second
    sidecar, a stray). Config 3 adds 127.0.0.1:P back: after waiting (bounded) for what could
    be our own old sockets, it is refused as in use, as an address that was never ours is.
    (The first version listened anyway after the wait and joined the foreign group.)"""
    p, q = free_port(), free_port()
    c = core(config([http_listener(p, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=[0, 1])
    apply_and_wait(c, config([http_listener(q, rule("all", "a"))], [cluster("a", nginx.a)], generation=2))
    wait_for(lambda: _address_free(p), 5.0, "our old sockets on P to close")
    stray = socket.socket()
    stray.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        stray.bind(("127.0.0.1", p))
        stray.listen(16)
        try:
            apply_and_wait(c, config([http_listener(p, rule("all", "a"))], [cluster("a", nginx.a)], generation=3))
        except CoreError as exc:
            assert "in use" in str(exc)
            return
        hung = {cpu: _request_from_cpu(cpu, p, 2.0) for cpu in (0, 1)}
        pytest.fail(f"config 3 joined the foreign SO_REUSEPORT group on 127.0.0.1:{p}; requests by CPU: {hung}")
    finally:
        stray.close()


def _address_free(port: int) -> bool:
    """Nothing listens on 127.0.0.1:port (the probe rl_steer_wait_unbound makes)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
