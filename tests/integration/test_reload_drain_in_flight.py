"""Review: config reloads and drain while exchanges are in flight.

By design (rl_http.c adopt_newest_cfg, rl_cfg_hold) a request is served entirely by the config
its connection held when the request began (retries included); the connection moves to the
newest config between requests. These tests check that contract at the edges: retry backoffs
with a kept body, connects, large responses, pooled connections, listener/route/limit changes,
reload storms with pipelining, and drain (retry, 100-continue, pool, deadline mid-upload, a
second drain, a reload during drain). Run under ASan for the use-after-free side."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

import pytest

from ringlane_sidecar.config.model import Limits, Retry
from ringlane_sidecar.core import CoreError

from .backends import Reply, continue_then_created, digest_app, digest_of, recv_all, recv_head
from .conftest import apply_and_wait
from .helpers import (Closed, Conn, build_request, cluster, config, free_port, http_listener, port_open, rule,
                      wait_for, wait_settled)

pytestmark = pytest.mark.timeout(90)

ONE = [0]  # one worker: round-robin over [refused, live] starts at the refused endpoint


def start_drain(c, timeout_ms: int) -> None:  # type: ignore[no-untyped-def]
    """Starts a drain and waits until every worker has taken it in: a response the backend
    sends from now on is written under the drain."""
    c.drain(timeout_ms)
    wait_for(lambda: c.running_workers() == 0 or all(t.draining for t in c.totals()), 5,
             "the workers to take the drain in")


def all_zero_after_exit(c) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    ts = list(c.totals())
    return (sum(t.conns_active for t in ts), sum(t.upstream_conns_active for t in ts),
            sum(t.upstream_conns_idle for t in ts))


def name_app(name: str):  # type: ignore[no-untyped-def]
    def app(req):  # type: ignore[no-untyped-def]
        body = f"{name} {len(req.body)} {hashlib.sha256(req.body).hexdigest()}".encode()
        return Reply(200, body)
    return app


# ---- reloads ----

def test_cluster_removed_while_retry_backoff_holds_the_body(core, http_backend) -> None:
    """Endpoint 1 refuses, the retry waits 1.5s with half the body kept; meanwhile 5 reloads
    remove cluster b (the route now goes to cluster n). The request began on gen 1, so it ends on
    gen 1's live endpoint with the whole body; the next request on the same connection goes to
    cluster n; every gauge is back to zero."""
    old, new = http_backend(name_app("old")), http_backend(name_app("new"))
    port, dead = free_port(), free_port()
    r1 = rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",), backoff="1500ms"))
    c = core(config([http_listener(port, r1)], [cluster("b", f"127.0.0.1:{dead}", old.address)]), cpus=ONE)
    body = os.urandom(200_000)
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/up", [("Content-Length", str(len(body)))]) + body[:100_000])
        wait_for(lambda: c.cluster_stats()["b"]["connect_errors"] >= 1, 5, "the first connect to be refused")
        for g in range(2, 7):
            apply_and_wait(c, config([http_listener(port, rule("r", "n"))], [cluster("n", new.address)],
                                     generation=g))
        conn.send(body[100_000:])
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, ["old", *digest_of(body)[:2]]), r
        r = conn.request("POST", "/next", body=b"abc")
        assert r.status == 200 and r.text.startswith("new "), r
    assert old.count == 1 and new.count == 1
    wait_settled(c)


def test_cluster_address_changed_while_connecting(core, http_backend, blackhole) -> None:
    """The only endpoint is a blackhole (connect hangs, connectTimeout 600ms). While the connect
    is pending a reload points cluster b at a live backend. The pending request ends 503 (its
    config's endpoint never answered) and is not sent to the new address; the next request on
    the connection is; gauges return to zero."""
    be = http_backend(name_app("new"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", blackhole, connect_timeout="600ms")]),
             cpus=ONE)
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("GET", "/pending"))
        wait_for(lambda: sum(t.upstream_conns_active for t in c.totals()) == 1, 5, "the connect to start")
        apply_and_wait(c, config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)], generation=2))
        r = conn.read_response()
        assert r.status == 503, r
        assert be.count == 0
        assert conn.request("GET", "/next").status == 200
    assert be.count == 1
    wait_settled(c)


def test_cluster_removed_while_streaming_a_large_response(core, http_backend) -> None:
    """An 8 MiB response streams to a client reading slowly; mid-stream cluster b is removed and
    the route moves to cluster n. Every byte arrives intact; the next request on the connection
    goes to n."""
    big = os.urandom(8 << 20)

    def old_app(req):  # type: ignore[no-untyped-def]
        return Reply(200, big)

    old, new = http_backend(old_app), http_backend(name_app("new"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", old.address)]), cpus=ONE)
    with Conn(port, timeout=10, rcvbuf=65536, read_size=65536) as conn:
        conn.send(build_request("GET", "/big"))
        status, _, headers, _ = conn.read_head()
        assert status == 200
        got = conn._exact(1 << 20)
        apply_and_wait(c, config([http_listener(port, rule("r", "n"))], [cluster("n", new.address)], generation=2))
        got += conn._exact(len(big) - len(got))
        assert hashlib.sha256(got).digest() == hashlib.sha256(big).digest()
        r = conn.request("GET", "/next")
        assert r.status == 200 and r.text.startswith("new "), r
    wait_settled(c)


def test_idle_pooled_connection_of_a_removed_cluster_is_closed(core, tcp_server, http_backend) -> None:
    """A request leaves an idle keep-alive connection to endpoint A in cluster b's pool (idle
    timeout 60s). A reload removes cluster b (no config names A any more). The proxy should let
    that connection go: A sees EOF within 5s, and upstream_conns_idle returns to 0. (A pooled
    connection to an endpoint that no live config names can only ever be closed.)
    Fails: switch_cfg (rl_worker.c:133) never visits the per-slot pools; the connection stays
    pooled until its own idle timer (rl_http_up.c:91, cluster idleTimeout), and is only closed
    early when the slot's pool is at maxConnections (rl_http_up.c:129)."""
    eof = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        got = recv_head(conn)
        if got is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        recv_all(conn)
        eof.set()

    srv = tcp_server(handler)
    other = http_backend(name_app("new"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE)
    with Conn(port) as conn:
        assert conn.request("GET", "/").status == 200
    wait_for(lambda: sum(t.upstream_conns_idle for t in c.totals()) == 1, 5, "the connection to be pooled")
    apply_and_wait(c, config([http_listener(port, rule("r", "n"))], [cluster("n", other.address)], generation=2))
    wait_for(lambda: c.oldest_seq() >= 2, 5, "gen 1 let go")
    assert eof.wait(5), ("the idle pooled connection to an endpoint no config names stayed open "
                         f"(upstream_conns_idle={sum(t.upstream_conns_idle for t in c.totals())})")
    wait_for(lambda: sum(t.upstream_conns_idle for t in c.totals()) == 0, 5, "no idle upstream connection")


def test_listener_removed_mid_request_with_a_pipelined_request(core, http_backend) -> None:
    """Request 1 is in flight and request 2 is pipelined behind it when a reload removes the
    listener. The connection cannot go on (it closes once answered), so either request 2 is
    answered, or the response to request 1 announces `Connection: close` (as drain does) so a
    client knows request 2 was not processed and may resend it. A keep-alive response followed
    by a silent close loses request 2 without notice.
    Fails: the listener's removal is only noticed in finish_request -> adopt_newest_cfg
    (rl_http.c:252, keepalive = 0 at :246), after response 1's head was written as keep-alive
    (rl_http.c:845); the connection then closes with request 2 unanswered."""
    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/slow":
            release.wait(10)
        return Reply(200, req.target.encode())

    be = http_backend(app)
    port, port2 = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    try:
        with Conn(port, timeout=10) as conn:
            conn.send(build_request("GET", "/slow") + build_request("GET", "/second"))
            wait_for(lambda: be.count == 1, 5, "request 1 to reach the backend")
            apply_and_wait(c, config([http_listener(port2, rule("r", "b"), name="other")], [cluster("b", be.address)],
                                     generation=2))
            release.set()
            r1 = conn.read_response()
            assert (r1.status, r1.body) == (200, b"/slow")
            closing = [v.lower() for v in r1.header_all("connection")] == ["close"]
            try:
                r2 = conn.read_response()
                answered = r2.status == 200 and r2.body == b"/second"
            except (Closed, ConnectionResetError):
                answered = False
            assert answered or closing, ("request 2 was dropped, and response 1 did not announce the close: "
                                         f"{r1.headers}")
    finally:
        release.set()
    wait_settled(c)


def test_body_limit_lowered_mid_upload_applies_from_the_next_request(core, http_backend) -> None:
    """A 1 MiB upload starts under maxRequestBodyBytes unlimited; half-way a reload sets 1000.
    The upload in flight keeps its config's limit (200, whole body); the next request on the
    same connection is under the new limit (413)."""
    be = http_backend(digest_app)
    port = free_port()
    listeners = [http_listener(port, rule("r", "b"))]
    clusters = [cluster("b", be.address)]
    c = core(config(listeners, clusters), cpus=ONE)
    body = os.urandom(1 << 20)
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/a", [("Content-Length", str(len(body)))]) + body[:1 << 19])
        wait_for(lambda: be.count == 0 and sum(t.upstream_conns_active for t in c.totals()) == 1, 5, "upload to start")
        apply_and_wait(c, config(listeners, clusters, generation=2,
                                 limits=Limits(request_header_timeout="2s", max_request_body_bytes=1000)))
        conn.send(body[1 << 19:])
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, digest_of(body)), r
        r = conn.request("POST", "/b", body=b"z" * 5000)
        assert r.status == 413, r
    wait_settled(c)


def test_route_renamed_mid_request_counts_each_request_once_on_its_own_route(core, http_backend) -> None:
    """A request in flight on route "ra" while a reload renames it "rb": it is counted once on
    ra (the config it began on), the next one once on rb, and nothing lands on route ""."""
    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/slow":
            release.wait(10)
        return Reply(200, b"ok")

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("ra", "b"))], [cluster("b", be.address)]), cpus=ONE)
    try:
        with Conn(port, timeout=10) as conn:
            conn.send(build_request("GET", "/slow"))
            wait_for(lambda: be.count == 1, 5, "slow request at the backend")
            apply_and_wait(c, config([http_listener(port, rule("rb", "b"))], [cluster("b", be.address)], generation=2))
            release.set()
            assert conn.read_response().status == 200
            assert conn.request("GET", "/fast").status == 200
            # read while the connection (and so gen 1) may still be held
            st = c.rule_stats()
            wait_for(lambda: c.rule_stats().get(("web", "rb"), {}).get("codes", {}).get("2xx") == 1, 5, "rb counted")
            assert st.get(("web", "ra"), {"codes": {"2xx": 1}})["codes"]["2xx"] == 1, st
    finally:
        release.set()
    st = c.rule_stats()
    assert sum(st.get(("web", ""), {"codes": {"x": 0}})["codes"].values()) == 0, st
    wait_settled(c)


def test_reload_storm_with_pipelined_keepalive_traffic(core, http_backend) -> None:
    """300 generations (the cluster's address flips between two backends, the rule name and the
    body limit change) while 4 clients send batches of 3 pipelined requests with bodies. Every
    request is answered 200 by one of the two backends with its body intact; afterwards, the
    final config's backend alone serves; gauges return to zero."""
    a, b = http_backend(name_app("A")), http_backend(name_app("B"))
    port = free_port()

    def cfg(g: int):  # type: ignore[no-untyped-def]
        addr = a.address if g % 2 else b.address
        return config([http_listener(port, rule(f"r{g % 3}", "c"))], [cluster("c", addr)], generation=g,
                      limits=Limits(request_header_timeout="2s", max_request_body_bytes=100_000 + g))

    c = core(cfg(1))
    stop = threading.Event()
    errors: list[str] = []
    done = [0]

    def client(i: int) -> None:
        try:
            with Conn(port, timeout=10) as conn:
                n = 0
                while not stop.is_set():
                    bodies = [os.urandom(1000 + 997 * ((n + k) % 50)) for k in range(3)]
                    conn.send(b"".join(build_request("POST", f"/{i}/{n + k}", body=bd) for k, bd in enumerate(bodies)))
                    for bd in bodies:
                        r = conn.read_response()
                        want = [str(len(bd)), hashlib.sha256(bd).hexdigest()]
                        if r.status != 200 or r.text.split()[1:] != want or r.text.split()[0] not in ("A", "B"):
                            errors.append(f"client {i}: {r.status} {r.text[:80]!r}")
                            return
                    n += 3
                    done[0] += 3
        except Exception as exc:  # noqa: BLE001
            errors.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for g in range(2, 302):
            c.apply(cfg(g))
            if g % 25 == 0:
                wait_for(lambda: c.served_generation() == g, 5, "workers to catch up")
    finally:
        wait_for(lambda: c.served_generation() == 301, 5, "last generation served")
        stop.set()
        for t in threads:
            t.join(20)
    assert not errors, errors[:5]
    assert done[0] > 100
    base = a.count
    with Conn(port) as conn:  # gen 301 is odd: A
        for _ in range(5):
            r = conn.request("POST", "/final", body=b"x")
            assert r.status == 200 and r.text.startswith("A "), r
    assert a.count == base + 5
    wait_settled(c)


# ---- drain ----

def test_drain_while_retry_backoff_holds_the_body(core, http_backend) -> None:
    """Drain starts while a POST waits out a 1s connect-retry backoff with its body kept. The
    retry still runs: 200 with the whole body and `Connection: close`, then the workers exit and
    every gauge is 0."""
    be = http_backend(digest_app)
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=1, on=("connect-failure",),
                                                                     backoff="1s")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=ONE)
    body = os.urandom(300_000)
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/up", [("Content-Length", str(len(body)))]) + body[:1000])
        wait_for(lambda: c.cluster_stats()["b"]["connect_errors"] >= 1, 5, "first connect refused")
        start_drain(c, 8000)
        conn.send(body[1000:])
        r = conn.read_response()
        assert (r.status, r.text.split()) == (200, digest_of(body)), r
        assert [v.lower() for v in r.header_all("connection")] == ["close"], r.headers
        assert conn.at_eof(3)
    wait_for(lambda: c.running_workers() == 0, 5, "workers to exit")
    assert all_zero_after_exit(c) == (0, 0, 0)


def test_drain_while_client_awaits_100_continue(core, tcp_server) -> None:
    """Drain starts while the client waits for the upstream's 100 Continue. The 100 comes, the
    body goes up, the 201 comes back with `Connection: close`, the workers exit."""
    go = threading.Event()
    got_body = threading.Event()

    srv = tcp_server(continue_then_created(lambda: go.wait(10), got_body))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE)
    try:
        with Conn(port, timeout=10) as conn:
            conn.send(build_request("PUT", "/x", [("Expect", "100-continue"), ("Content-Length", "4")]))
            wait_for(lambda: srv.accepted == 1, 5, "the head to reach the upstream")
            start_drain(c, 8000)
            go.set()
            status, _, _, _ = conn.read_head()
            assert status == 100
            conn.send(b"data")
            r = conn.read_response()
            assert (r.status, r.body) == (201, b"ok"), r
            assert [v.lower() for v in r.header_all("connection")] == ["close"], r.headers
            assert conn.at_eof(3)
    finally:
        go.set()
    assert got_body.is_set()
    wait_for(lambda: c.running_workers() == 0, 5, "workers to exit")
    assert all_zero_after_exit(c) == (0, 0, 0)


def test_drain_closes_idle_pool_and_exits(core, tcp_server) -> None:
    """Three idle pooled upstream connections, no client: drain closes them at once (each
    upstream sees EOF), the workers exit well before the deadline, gauges are 0."""
    eofs = threading.Semaphore(0)
    three = threading.Barrier(3)  # all three requests in flight at once: three upstream connections

    def handler(conn: socket.socket, index: int) -> None:
        got = recv_head(conn)
        if got is None:
            return
        three.wait(5)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        recv_all(conn)
        eofs.release()

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE)
    conns = [Conn(port) for _ in range(3)]
    for k in conns:
        k.send(build_request("GET", "/"))
    for k in conns:
        assert k.read_response().status == 200
        k.close()
    wait_for(lambda: sum(t.upstream_conns_idle for t in c.totals()) == 3, 5, "3 idle pooled")
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "clients gone")
    start = time.monotonic()
    start_drain(c, 10_000)
    wait_for(lambda: c.running_workers() == 0, 3, "workers to exit")
    assert time.monotonic() - start < 2
    for _ in range(3):
        assert eofs.acquire(timeout=3), "an idle pooled upstream was not closed"
    assert all_zero_after_exit(c) == (0, 0, 0)


def test_drain_deadline_mid_body_upload(core, tcp_server) -> None:
    """A 1 MB upload is half sent when the drain deadline (500ms) passes: the client is cut
    (EOF or reset, no fake 200), the upstream does not see the request complete, the request is
    counted once (as 5xx), and the workers exit on time."""
    seen = threading.Event()
    complete = threading.Event()
    got = [0]

    def handler(conn: socket.socket, index: int) -> None:
        h = recv_head(conn)
        if h is None:
            return
        seen.set()
        n = len(h[1])
        try:
            while n < 1_000_000:
                d = conn.recv(65536)
                if not d:
                    break
                n += len(d)
        except ConnectionResetError:
            pass
        got[0] = n
        if n >= 1_000_000:
            complete.set()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE)
    with Conn(port, timeout=10) as conn:
        conn.send(build_request("POST", "/up", [("Content-Length", "1000000")]) + b"x" * 400_000)
        assert seen.wait(5)
        start = time.monotonic()
        start_drain(c, 500)
        wait_for(lambda: c.running_workers() == 0, 3, "workers to exit at the deadline")
        assert time.monotonic() - start < 1.5
        try:
            conn.send(b"y" * 600_000)
        except OSError:
            pass
        with pytest.raises((Closed, ConnectionResetError, BrokenPipeError)):
            conn.read_response()
    assert not complete.is_set(), got
    st = c.rule_stats()[("web", "r")]["codes"]
    assert sum(st.values()) == 1 and st["5xx"] == 1, st
    assert all_zero_after_exit(c) == (0, 0, 0)


def test_second_drain_and_reload_during_drain(core, http_backend) -> None:
    """A request in flight; drain(5000), then drain again (200ms) and a reload: the reload is
    refused (CoreError) and changes nothing; the in-flight request is either answered with
    `Connection: close` or cut by the deadline, never served by the refused config; the
    workers exit and the gauges are 0."""
    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        release.wait(10)
        return Reply(200, b"old")

    be = http_backend(app)
    other = http_backend(name_app("new"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]), cpus=ONE)
    try:
        with Conn(port, timeout=10) as conn:
            conn.send(build_request("GET", "/slow"))
            wait_for(lambda: be.count == 1, 5, "request at the backend")
            start_drain(c, 5000)
            start_drain(c, 200)
            with pytest.raises(CoreError):
                c.apply(config([http_listener(port, rule("r", "n"))], [cluster("n", other.address)], generation=2))
            assert c.served_generation() == 1
            assert c.running_workers() == 1
            release.set()
            r = conn.read_response()
            assert (r.status, r.body) == (200, b"old")
            assert [v.lower() for v in r.header_all("connection")] == ["close"], r.headers
    finally:
        release.set()
    wait_for(lambda: c.running_workers() == 0, 6, "workers to exit")
    assert other.count == 0
    assert all_zero_after_exit(c) == (0, 0, 0)
    assert not port_open(port)


def test_drain_right_after_a_reload_storm_keeps_inflight_on_their_config(core, http_backend) -> None:
    """Requests in flight on gen 1..20 (each connection starts one request per generation, the
    backend holds them), then drain: every held request is answered by its backend with
    `Connection: close`; the workers exit; all configs are released (gauges 0)."""
    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        release.wait(10)
        return Reply(200, req.target.encode())

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r1", "b"))], [cluster("b", be.address)]), cpus=ONE)
    conns = []
    try:
        for g in range(1, 21):
            if g > 1:
                apply_and_wait(c, config([http_listener(port, rule(f"r{g}", "b"))], [cluster("b", be.address)],
                                         generation=g))
            k = Conn(port, timeout=10)
            k.send(build_request("GET", f"/g{g}"))
            conns.append(k)
            wait_for(lambda: be.count == g, 5, f"request {g} at the backend")
        start_drain(c, 8000)
        release.set()
        for g, k in enumerate(conns, 1):
            r = k.read_response()
            assert (r.status, r.body) == (200, f"/g{g}".encode()), r
            assert [v.lower() for v in r.header_all("connection")] == ["close"], r.headers
        wait_for(lambda: c.running_workers() == 0, 5, "workers to exit")
        st = c.rule_stats()
        for g in range(1, 21):
            assert st.get(("web", f"r{g}"), {"codes": {"2xx": 1}})["codes"]["2xx"] == 1, (g, st.get(("web", f"r{g}")))
    finally:
        release.set()
        for k in conns:
            k.close()
    assert all_zero_after_exit(c) == (0, 0, 0)
