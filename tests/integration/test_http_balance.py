"""Least-request balancing: power of two choices over the requests a worker has in flight per
endpoint (Envoy's algorithm), contrasted with round-robin on the same traffic, and the
per-cluster in-flight gauge that must return to zero (no leaked counts).

The counts are per worker (share nothing), so these tests run one worker: it sees every request.
"""
from __future__ import annotations

import socket
import threading
from typing import Callable

import pytest

from ringlane_sidecar.config.model import Retry

from .backends import Reply, Request, echo_handler, reset
from .conftest import worker_cpus
from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rule, tcp_listener, wait_for

pytestmark = pytest.mark.timeout(60)

N = 5   # requests left stuck on the slow endpoint
M = 40  # requests sent while they are stuck


def holding_app(name: str, release: threading.Event, hold: Callable[[Request], bool]):  # type: ignore[no-untyped-def]
    """Answers "<name> <target>", but first waits for release when hold(req)."""
    def app(req: Request) -> Reply:
        if hold(req):
            release.wait(30)
        return Reply(200, f"{name} {req.target}\n".encode())
    return app


def active(c) -> int:  # type: ignore[no-untyped-def]
    return c.cluster_stats()["lb"]["active"]


def wait_active(c, n: int) -> None:  # type: ignore[no-untyped-def]
    wait_for(lambda: active(c) == n, 5, f"{n} requests in flight (gauge: {active(c)})")


@pytest.mark.parametrize("policy", ["least-request", "round-robin"])
def test_requests_avoid_the_endpoint_with_stuck_requests(core, http_backend, policy) -> None:
    release_slow, release_fast = threading.Event(), threading.Event()
    slow = http_backend(holding_app("slow", release_slow, lambda req: True))
    fast = http_backend(holding_app("fast", release_fast, lambda req: req.target.startswith("/hold")))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "lb"))],
                    [cluster("lb", slow.address, fast.address, load_balancer=policy)]),
             cpus=worker_cpus()[:1])
    conns: list[Conn] = []
    try:
        # 1. 2N requests that both endpoints hold: each policy splits them exactly N / N
        #    (least-request: the endpoint with fewer in flight, a tie broken at random).
        for i in range(2 * N):
            conn = Conn(port, timeout=10)
            conns.append(conn)
            conn.send(build_request("GET", f"/hold/{i}"))
            wait_for(lambda: slow.count + fast.count == i + 1, 5, f"request {i} to reach a backend")
        assert (slow.count, fast.count) == (N, N)
        wait_active(c, 2 * N)
        # The fast endpoint lets its N go: N stay stuck on the slow one.
        release_fast.set()
        wait_active(c, N)

        # 2. M requests one after the other, each answered (when the fast endpoint got it)
        #    before the next is sent.
        to_slow = 0
        for j in range(M):
            before_slow, before_fast = slow.count, fast.count
            conn = Conn(port, timeout=10)
            conns.append(conn)
            conn.send(build_request("GET", f"/next/{j}"))
            wait_for(lambda: slow.count + fast.count == before_slow + before_fast + 1, 5, f"request /next/{j}")
            if slow.count > before_slow:
                to_slow += 1
            else:
                r = conn.read_response()
                assert (r.status, r.text) == (200, f"fast /next/{j}\n")
        if policy == "least-request":
            # Two distinct candidates and N > 0 in flight on the slow one: never chosen.
            assert to_slow == 0, f"{to_slow} of {M} requests went to the endpoint with {N} stuck requests"
        else:
            assert to_slow == M // 2, f"round-robin sent {to_slow} of {M} to the slow endpoint"
        wait_active(c, N + to_slow)

        # 3. Everything stuck completes: the gauge (and the per-endpoint counts) go back to zero.
        release_slow.set()
        for conn in conns[:2 * N]:
            assert conn.read_response().status == 200
        wait_active(c, 0)

        # 4. With nothing in flight both endpoints are equal again: least-request spreads at
        #    random. A leaked count on the slow endpoint would keep every request off it.
        before = slow.count
        with Conn(port, timeout=10) as conn:
            for j in range(M):
                assert conn.request("GET", f"/after/{j}").status == 200
        to_slow = slow.count - before
        assert 8 <= to_slow <= M - 8, f"{to_slow} of {M} went to the slow endpoint once it recovered"
        wait_active(c, 0)
    finally:
        release_slow.set()
        release_fast.set()
        for conn in conns:
            conn.close()


def test_active_gauge_counts_retries_and_client_aborts(core, http_backend) -> None:
    """An exchange ends however it ends: a response, a retry that moves on, a client that goes away."""
    release = threading.Event()
    dead = free_port()
    held = http_backend(holding_app("held", release, lambda req: True))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "lb", retry=Retry(attempts=1, on=("connect-failure",),
                                                                       backoff="1ms")))],
                    [cluster("lb", f"127.0.0.1:{dead}", held.address, load_balancer="least-request")]),
             cpus=worker_cpus()[:1])
    try:
        conns = [Conn(port, timeout=10) for _ in range(6)]
        for i, conn in enumerate(conns):
            conn.send(build_request("GET", f"/{i}"))
        # The refused endpoint looks idle (its attempts end at once), so least-request keeps
        # choosing it; each retry avoids it and lands on the held one: all six end up there.
        wait_for(lambda: held.count == 6, 5, "six requests held")
        assert c.cluster_stats()["lb"]["connect_errors"] >= 1
        wait_active(c, 6)
        for conn in conns[:3]:  # three clients give up (reset)
            reset(conn.sock)
        wait_active(c, 3)
        release.set()
        for conn in conns[3:]:
            assert conn.read_response().status == 200
            conn.close()
        wait_active(c, 0)
    finally:
        release.set()


def greeting_echo(name: bytes):  # type: ignore[no-untyped-def]
    """Says its name, then echoes until EOF."""
    def handler(conn: socket.socket, index: int) -> None:
        conn.sendall(name)
        echo_handler(conn, index)
    return handler


def test_tcp_sessions_go_where_fewer_are_open(core, tcp_server) -> None:
    """On a tcp listener a session is one exchange: new sessions go to the endpoint with fewer."""
    a, b = tcp_server(greeting_echo(b"A")), tcp_server(greeting_echo(b"B"))
    port = free_port()
    c = core(config([tcp_listener(port, "lb")], [cluster("lb", a.address, b.address, load_balancer="least-request")]),
             cpus=worker_cpus()[:1])
    socks: list[socket.socket] = []

    def open_session() -> tuple[socket.socket, bytes]:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        socks.append(s)
        return s, s.recv(1)  # the backend's name: the session is connected end to end

    try:
        first = [open_session() for _ in range(2 * N)]
        assert sorted(name for _, name in first) == [b"A"] * N + [b"B"] * N
        wait_active(c, 2 * N)
        for s, name in first:  # end the sessions on A
            if name == b"A":
                s.shutdown(socket.SHUT_WR)
                assert s.recv(1) == b""  # A's FIN came back: the session is over
        wait_active(c, N)
        # A has fewer open until it is level with B again: every new session goes there.
        names = [open_session()[1] for _ in range(N)]
        assert names == [b"A"] * N, f"new sessions with {N} open on B and none on A: {names}"
        wait_active(c, 2 * N)
    finally:
        for s in socks:
            s.close()
    wait_active(c, 0)
