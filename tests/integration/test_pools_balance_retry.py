"""Upstream pools, balancing and retries under endpoint churn and reloads: the pool's
connection limit, weights and policies, pooled connections, in-flight counts, reloads that
change endpoints, and retries."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from ringlane_sidecar.config.model import Retry, Timeouts

from .backends import Reply, Request, echo_handler, raw_then_close, reset_action, upgrade_echo
from .conftest import apply_and_wait
from .helpers import Conn, build_request, cluster, config, free_port, http_listener, rule, tcp_listener, wait_for

pytestmark = pytest.mark.timeout(60)

ONE = [0]  # one worker: it sees every request, so pools and counts are exact


def named(name: str):  # type: ignore[no-untyped-def]
    def app(req: Request) -> Reply:
        return Reply(200, f"{name} {req.target}\n".encode())
    return app


def upstream_conns(c) -> int:  # type: ignore[no-untyped-def]
    return sum(t.upstream_conns_active for t in c.totals())


def idle_conns(c) -> int:  # type: ignore[no-untyped-def]
    return sum(t.upstream_conns_idle for t in c.totals())


def active(c, name: str) -> int:  # type: ignore[no-untyped-def]
    return c.cluster_stats()[name]["active"]


# ---- the pool's connection limit and retries that need a fresh connection ----

def closes_second_request():  # type: ignore[no-untyped-def]
    """Per backend connection: answer request 1 with keep-alive, close on request 2 unanswered."""
    seen: dict[int, int] = {}

    def app(req: Request):  # type: ignore[no-untyped-def]
        seen[req.conn_index] = seen.get(req.conn_index, 0) + 1
        if seen[req.conn_index] == 2:
            return raw_then_close(b"")
        return Reply(200, f"conn {req.conn_index}\n".encode())
    return app


def test_stale_pooled_retry_at_max_connections(core, http_backend) -> None:
    """maxConnections: 1. The only pooled connection is stale (the backend closes it as the next
    GET arrives): the proxy sends the GET again on a fresh connection (the keep-alive race).
    The dead connection no longer counts against the limit, so the new one is allowed and the
    client gets the backend's 200, not a proxy 503."""
    be = http_backend(closes_second_request())
    port = free_port()
    core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address, max_connections=1)]), cpus=ONE)
    with Conn(port) as conn:
        assert conn.request("GET", "/warm").status == 200
        r = conn.request("GET", "/again")
        assert (r.status, r.header("server")) == (200, None), (r.status, r.text, be.count)
    assert [q.target for q in be.requests] == ["/warm", "/again", "/again"]


def test_reset_retry_without_backoff_at_max_connections(core, http_backend) -> None:
    """maxConnections: 1, retry on reset with backoff 0: the first connection is reset as the
    request arrives. The retry starts at once and still gets a new connection (the reset one is
    dead and no longer counts), and succeeds."""
    def app(req: Request):  # type: ignore[no-untyped-def]
        return reset_action if req.conn_index == 0 else Reply(200, b"ok\n")
    be = http_backend(app)
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("reset",), backoff="0s")))],
                [cluster("b", be.address, max_connections=1)]), cpus=ONE)
    with Conn(port) as conn:
        r = conn.request("GET", "/x")
        assert (r.status, r.header("server")) == (200, None), (r.status, r.text, be.count)
    assert be.count == 2


def test_max_connections_reached_answers_503_at_once_and_recovers(core, http_backend) -> None:
    """maxConnections: 1 with one request held: a second concurrent request gets a prompt 503
    (no hang, no crash); once the first ends, requests are served again on the pooled conn."""
    release = threading.Event()

    def app(req: Request) -> Reply:
        if req.target == "/hold":
            release.wait(20)
        return Reply(200, b"ok\n")
    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address, max_connections=1)]), cpus=ONE)
    held = Conn(port, timeout=10)
    try:
        held.send(build_request("GET", "/hold"))
        wait_for(lambda: be.count == 1, 5, "the held request to arrive")
        t0 = time.monotonic()
        with Conn(port, timeout=5) as conn:
            r = conn.request("GET", "/second")
        assert r.status == 503 and time.monotonic() - t0 < 2
        # Refused here, not sent: upstream_requests_total ("sent upstream") stays at 1 (it was 2).
        assert c.cluster_stats()["b"]["requests"] == 1, c.cluster_stats()["b"]
        release.set()
        assert held.read_response().status == 200
        with Conn(port) as conn:
            for i in range(5):
                assert conn.request("GET", f"/after/{i}").status == 200
        assert be.accepted == 1  # the one connection was pooled and reused
        wait_for(lambda: active(c, "b") == 0, 5, "the in-flight gauge back to 0")
    finally:
        release.set()
        held.close()


def test_tcp_relay_honours_cluster_max_connections(core, tcp_server) -> None:
    """The schema: maxConnections is the most upstream connections per worker, for tcp listeners
    too. Each session opens an upstream connection: with maxConnections: 1 and one session open,
    a second opens none and its client is closed (like Envoy's tcp_proxy overflow)."""
    srv = tcp_server(echo_handler)
    port = free_port()
    core(config([tcp_listener(port, "t")], [cluster("t", srv.address, max_connections=1)]), cpus=ONE)
    socks = []
    try:
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
        s0 = socks[0]
        s0.sendall(b"hi")
        assert s0.recv(2) == b"hi"
        for s in socks[1:]:  # each is either closed by the proxy or at least not connected upstream
            s.settimeout(2)
            try:
                s.sendall(b"x")
                got = s.recv(1)
            except (ConnectionResetError, socket.timeout):
                got = b""
            assert got == b"", "a session over the limit was relayed"
        assert srv.accepted == 1, f"{srv.accepted} upstream connections with maxConnections: 1"
    finally:
        for s in socks:
            s.close()


# ---- weights and policies ----

def test_weight_zero_backend_gets_nothing_and_90_10_split(core, http_backend) -> None:
    a, b, z = http_backend(named("a")), http_backend(named("b")), http_backend(named("z"))
    port = free_port()
    core(config([http_listener(port, rule("r", ("ca", 90), ("cz", 0), ("cb", 10)))],
                [cluster("ca", a.address), cluster("cb", b.address), cluster("cz", z.address)]))
    n = 400
    with Conn(port) as conn:
        for i in range(n):
            assert conn.request("GET", f"/{i}").status == 200
    assert z.count == 0
    assert a.count + b.count == n
    assert 16 <= b.count <= 70, f"weight 10 of 100 got {b.count} of {n}"


def test_random_spreads_over_two_endpoints(core, http_backend) -> None:
    policy = "random"
    a, b = http_backend(named("a")), http_backend(named("b"))
    port = free_port()
    core(config([http_listener(port, rule("r", "lb"))], [cluster("lb", a.address, b.address, load_balancer=policy)]),
         cpus=ONE)
    n = 200
    with Conn(port) as conn:
        for i in range(n):
            assert conn.request("GET", f"/{i}").status == 200
    assert 60 <= a.count <= n - 60, f"{policy}: a got {a.count} of {n}"


# ---- pools: leaks, idle timeout, stale connections ----

def test_thousand_keepalive_requests_use_one_upstream_connection(core, http_backend) -> None:
    be = http_backend(named("a"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    with Conn(port) as conn:
        for i in range(1000):
            assert conn.request("GET", f"/{i}").status == 200
    for i in range(50):  # and new client connections too
        with Conn(port) as conn:
            assert conn.request("GET", f"/n/{i}").status == 200
    assert be.accepted == 1
    # The client may read the last answer before the worker has pooled the connection again.
    wait_for(lambda: idle_conns(c) == 1, 3, "the upstream connection to be pooled")
    assert upstream_conns(c) == 1
    assert active(c, "b") == 0


def test_cluster_idle_timeout_closes_pooled_connections(core, http_backend) -> None:
    be = http_backend(named("a"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address, idle_timeout="300ms")]),
             cpus=ONE)
    with Conn(port) as conn:
        assert conn.request("GET", "/1").status == 200
        wait_for(lambda: idle_conns(c) == 1, 3, "the upstream connection to be pooled")
        wait_for(lambda: upstream_conns(c) == 0, 3, "the idle upstream connection to close")
        assert idle_conns(c) == 0
        assert conn.request("GET", "/2").status == 200  # a new one
    assert be.accepted == 2


def test_post_after_backend_closed_idle_connection_is_sent_once_on_a_new_one(core, http_backend) -> None:
    """The backend closes each connection ~instantly after its (keep-alive) answer: the proxy
    sees the FIN on the idle pooled connection; the POST that follows goes on a fresh
    connection, reaches the backend once, and is answered 200."""
    def app(req: Request):  # type: ignore[no-untyped-def]
        def act(conn: socket.socket, r) -> None:  # type: ignore[no-untyped-def]
            body = f"{req.method} {req.target} {len(req.body)}\n".encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return act
    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    with Conn(port) as conn:
        assert conn.request("GET", "/warm").status == 200
        wait_for(lambda: upstream_conns(c) == 0, 3, "the proxy to notice the upstream close")
        r = conn.request("POST", "/order", body=b"x" * 5000)
        assert (r.status, r.text) == (200, "POST /order 5000\n")
    assert [q.target for q in be.requests] == ["/warm", "/order"]


# ---- least-request counts after every way an exchange can end ----

def eventful_app(name: str, release: threading.Event):  # type: ignore[no-untyped-def]
    def app(req: Request):  # type: ignore[no-untyped-def]
        t = req.target.removeprefix("/retry")
        if t.startswith("/slow"):
            release.wait(20)  # past the rule's backend timeout: 504
        elif t.startswith("/reset"):
            return reset_action
        elif t.startswith("/garbage"):
            return raw_then_close(b"garbage\r\n\r\n")
        elif t.startswith("/eof"):
            return raw_then_close(b"")
        elif t.startswith("/partial"):  # half a body, then the client goes away
            def act(conn: socket.socket, r) -> None:  # type: ignore[no-untyped-def]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 1000)
                release.wait(20)
            return act
        elif t.startswith("/ws"):
            return upgrade_echo()
        elif t.startswith("/s503"):
            return Reply(503, b"busy\n")
        return Reply(200, f"{name} {t} {len(req.body)}\n".encode())
    return app


def test_in_flight_counts_return_to_zero_after_every_ending(core, http_backend) -> None:
    """Timeouts, resets, garbage, EOFs, client aborts mid-response, upgrades, 100-continue,
    retries on 503 and reset, a reload: afterwards the gauge is 0 and least-request still
    spreads over both endpoints (a leaked count on one keeps every request off it)."""
    policy = "least-request"
    release = threading.Event()
    a, b = http_backend(eventful_app("a", release)), http_backend(eventful_app("b", release))
    port = free_port()

    def cfg(gen: int):  # type: ignore[no-untyped-def]
        return config([http_listener(port,
                                     rule("slow", "lb", prefix="/slow", timeouts=Timeouts(backend_request="150ms")),
                                     rule("retry", "lb", prefix="/retry",
                                          retry=Retry(attempts=1, on=("503", "reset"), backoff="1ms")),
                                     rule("r", "lb"))],
                      [cluster("lb", a.address, b.address, load_balancer=policy)], generation=gen)
    c = core(cfg(1), cpus=ONE)
    try:
        for i in range(6):
            with Conn(port) as conn:
                assert conn.request("GET", f"/slow/{i}").status == 504
            for path, want in (("/reset", 502), ("/garbage", 502), ("/eof", 502), ("/retry/reset", 502),
                               ("/retry/s503", 503)):
                with Conn(port) as conn:
                    assert conn.request("GET", f"{path}/{i}").status == want, path
            with Conn(port) as conn:  # client reads the head and resets mid-body
                conn.send(build_request("GET", f"/partial/{i}"))
                conn.read_head()
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            with Conn(port) as conn:
                conn.send(build_request("GET", f"/ws/{i}", [("Upgrade", "websocket"), ("Connection", "Upgrade")]))
                assert conn.read_head()[0] == 101
                conn.send(b"ping")
                assert conn._exact(4) == b"ping"
                conn.sock.shutdown(socket.SHUT_WR)
                assert conn.read_to_close() == b""
            with Conn(port) as conn:
                conn.send(b"POST /cont HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
                assert conn.read_head()[0] == 100
                conn.send(b"abc")
                assert conn.read_response().status == 200
            if i == 3:
                apply_and_wait(c, cfg(2))
        release.set()
        wait_for(lambda: active(c, "lb") == 0, 5, f"the in-flight gauge back to 0 (now {active(c, 'lb')})")
        before_a, before_b = a.count, b.count
        with Conn(port) as conn:
            for i in range(60):
                assert conn.request("GET", f"/after/{i}").status == 200
        got_a, got_b = a.count - before_a, b.count - before_b
        assert got_a + got_b == 60
        assert min(got_a, got_b) >= 12, f"{policy}: a got {got_a}, b got {got_b} of 60"
    finally:
        release.set()


# ---- reloads that change endpoints ----

def test_reload_swapping_endpoints_sends_nothing_to_the_removed_one(core, http_backend) -> None:
    """Round-robin over [A, B]; a reload makes it [A, C]. A keep-alive client connection (and
    the pooled connections to B) must not carry a single request to B afterwards, and the
    cursor splits the rest evenly between A and C."""
    a, b, cc = http_backend(named("a")), http_backend(named("b")), http_backend(named("c"))
    port = free_port()

    def cfg(gen: int, *eps: str):  # type: ignore[no-untyped-def]
        return config([http_listener(port, rule("r", "lb"))], [cluster("lb", *eps)], generation=gen)
    c = core(cfg(1, a.address, b.address), cpus=ONE)
    with Conn(port) as conn:
        for i in range(10):
            assert conn.request("GET", f"/{i}").status == 200
        assert (a.count, b.count) == (5, 5)
        apply_and_wait(c, cfg(2, a.address, cc.address))
        for i in range(20):
            r = conn.request("GET", f"/x{i}")
            assert r.status == 200 and not r.text.startswith("b "), r.text
    assert b.count == 5
    assert (a.count - 5, cc.count) == (10, 10)


# ---- retries: backoff, everything down ----

def test_retry_backoff_is_waited_between_attempts(core, http_backend) -> None:
    seen: list[float] = []

    def app(req: Request) -> Reply:
        seen.append(time.monotonic())
        return Reply(503 if len(seen) < 3 else 200, b"x\n")
    be = http_backend(app)
    port = free_port()
    core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("503",), backoff="200ms")))],
                [cluster("b", be.address)]), cpus=ONE)
    with Conn(port) as conn:
        assert conn.request("GET", "/").status == 200
    assert be.count == 3
    gaps = [seen[i + 1] - seen[i] for i in range(2)]
    assert all(0.18 <= g < 1.0 for g in gaps), gaps


@pytest.mark.parametrize("policy", ["least-request", "round-robin", "random"])
def test_all_endpoints_down_is_503_with_every_attempt_counted(core, policy) -> None:
    dead = [free_port() for _ in range(2)]
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=3, on=("connect-failure",),
                                                                     backoff="1ms")))],
                    [cluster("b", *(f"127.0.0.1:{d}" for d in dead), load_balancer=policy)]), cpus=ONE)
    for i in range(3):
        with Conn(port) as conn:
            r = conn.request("GET", f"/{i}")
            assert (r.status, r.header("server")) == (503, "ringlane")
    st = c.cluster_stats()["b"]
    assert st["connect_errors"] == 12 and st["requests"] == 12 and st["active"] == 0, st
    wait_for(lambda: upstream_conns(c) == 0, 3, "the refused sockets to be released")


def test_connect_timeouts_counted_once_per_attempt(core, blackhole) -> None:
    """io_uring links its own timeout to the connect and the wheel has a backstop: one attempt
    that times out is one connect error, whichever fires first; the gauge ends at 0."""
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="1ms")))],
                    [cluster("b", blackhole, connect_timeout="200ms")]), cpus=ONE)
    for i in range(2):
        with Conn(port) as conn:
            assert conn.request("GET", f"/{i}").status == 503
    wait_for(lambda: upstream_conns(c) == 0, 3, "the timed-out sockets to be released")
    st = c.cluster_stats()["b"]
    assert (st["connect_errors"], st["requests"], st["active"]) == (4, 4, 0), st


def test_concurrent_keepalive_clients_over_a_pool_the_backend_keeps_closing(core, http_backend) -> None:
    """Two workers, 8 keep-alive clients with pipelined pairs, a backend that closes every
    connection as its second request arrives (every reuse meets the keep-alive race): every
    GET is answered 200 by the backend, nothing is lost, the gauges return to 0."""
    seen: dict[int, int] = {}
    lock = threading.Lock()

    def app(req: Request):  # type: ignore[no-untyped-def]
        with lock:
            seen[req.conn_index] = seen.get(req.conn_index, 0) + 1
            n = seen[req.conn_index]
        if n == 2:
            return raw_then_close(b"")
        return Reply(200, f"ok {req.target}\n".encode())
    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    errors: list[str] = []

    def client(k: int) -> None:
        try:
            with Conn(port, timeout=10) as conn:
                for i in range(0, 20, 2):
                    conn.send(build_request("GET", f"/{k}/{i}") + build_request("GET", f"/{k}/{i + 1}"))
                    for j in (i, i + 1):
                        r = conn.read_response()
                        if (r.status, r.text) != (200, f"ok /{k}/{j}\n"):
                            errors.append(f"{k}/{j}: {r.status} {r.text!r}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"{k}: {e!r}")
    ts = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert not errors, errors[:5]
    wait_for(lambda: c.cluster_stats()["b"]["active"] == 0, 5, "the gauge back to 0")
