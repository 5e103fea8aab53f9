"""Every gauge returns to its baseline and every counter counts once, on every way a connection
can end (HTTP, Upgrade tunnels, TCP relays), on both engines. From a review pass; failed when
written: a relay's upstream socket was missing from upstream_conns_active (it counts against
maxConnections), and an HTTP request refused at maxConnections counted in the cluster's
requests ("sent upstream"; asserted in test_pools_balance_retry.py). The others pin behaviour
that held.

Gauges: worker totals conns_active / upstream_conns_active / upstream_conns_idle, the cluster's
rq_active ("active"), and the listener's conns_opened - conns_closed (the exposed
ringlane_tcp_connections_active). Counters: codes per route, cluster requests /
connect_errors / connections_opened, listener rx/tx bytes."""
from __future__ import annotations

import socket
import threading

import pytest

from ringlane_sidecar.config.model import Limits, Retry, Timeouts

from .backends import Reader, Reply, echo_handler, recv_head, reset, upgrade_echo
from .conftest import apply_and_wait
from .helpers import (Conn, build_request, cluster, config, free_port, get, http_listener, recv_until_close, rule,
                      tcp_listener, total, wait_codes, wait_for)
from .test_upgrade import UPGRADE, recv_exact

pytestmark = pytest.mark.timeout(60)

ONE = [0]


def gauges(c, listener: str, cluster_name: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    ls = c.listener_stats()[listener]
    return {"conns_active": total(c, "conns_active"),
            "upstream_conns_active": total(c, "upstream_conns_active"),
            "upstream_conns_idle": total(c, "upstream_conns_idle"),
            "cluster_active": c.cluster_stats()[cluster_name]["active"],
            "open_minus_closed": ls["conns_opened"] - ls["conns_closed"]}


ZERO = {"conns_active": 0, "upstream_conns_active": 0, "upstream_conns_idle": 0, "cluster_active": 0,
        "open_minus_closed": 0}


def wait_gauges(c, listener: str, cluster_name: str, want: dict | None = None,  # type: ignore[no-untyped-def,type-arg]
                timeout: float = 5.0, what: str = "") -> None:
    want = dict(ZERO, **(want or {}))
    last: list = [None]  # type: ignore[type-arg]

    def ok() -> bool:
        last[0] = gauges(c, listener, cluster_name)
        return last[0] == want

    try:
        wait_for(ok, timeout, "gauges")
    except AssertionError:
        raise AssertionError(f"{what}: gauges {last[0]}, expected {want}") from None


# ---- TCP relay ----

def test_relay_upstream_socket_counted_in_upstream_conns_active(core, tcp_server) -> None:
    """An open relay session holds one upstream connection (it counts against the cluster's
    maxConnections like an HTTP one): upstream_conns_active shows it, as for HTTP upstreams."""
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(config([tcp_listener(port, "up")], [cluster("up", srv.address)]), cpus=ONE)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"hi")
        assert s.recv(2) == b"hi"
        assert srv.accepted == 1
        g = gauges(c, "tcp", "up")
        assert g["conns_active"] == 1 and g["cluster_active"] == 1, g
        assert g["upstream_conns_active"] == 1, f"a live relay's upstream socket is not counted: {g}"
    wait_gauges(c, "tcp", "up", what="after the session")


def test_relay_client_reset_while_connecting(core, blackhole) -> None:
    """The client resets while the upstream connect hangs (connectTimeout 5s): the session ends
    at once, nothing counts as a connect error, every gauge is back to zero."""
    port = free_port()
    c = core(config([tcp_listener(port, "up")], [cluster("up", blackhole, connect_timeout="5s")]), cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    wait_for(lambda: c.cluster_stats()["up"]["active"] == 1, 3, "the connect to start")
    reset(s)
    wait_gauges(c, "tcp", "up", timeout=3, what="after the client reset mid-connect")
    cs = c.cluster_stats()["up"]
    ls = c.listener_stats()["tcp"]
    assert (cs["connect_errors"], cs["requests"], cs["connections_opened"]) == (0, 1, 1), cs
    assert (ls["conns_opened"], ls["conns_closed"]) == (1, 1), ls


def test_relay_connect_timeouts_with_retries_counted_once_each(core, blackhole) -> None:
    """Three attempts (retry 2 on connect-failure) each time out: 3 connect errors, 3 requests,
    3 connections opened, one client connection opened and closed, gauges at zero."""
    port = free_port()
    cfg = config([tcp_listener(port, "up", retry=Retry(attempts=2, on=("connect-failure",), backoff="1ms"))],
                 [cluster("up", blackhole, connect_timeout="200ms")])
    c = core(cfg, cpus=ONE)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data, how = recv_until_close(s, 5)
        assert data == b"" and how in ("eof", "reset"), how
    wait_gauges(c, "tcp", "up", what="after three timed-out attempts")
    cs = c.cluster_stats()["up"]
    assert (cs["connect_errors"], cs["requests"], cs["connections_opened"]) == (3, 3, 3), cs
    ls = c.listener_stats()["tcp"]
    assert (ls["conns_opened"], ls["conns_closed"], ls["rx_bytes"], ls["tx_bytes"]) == (1, 1, 0, 0), ls


@pytest.mark.parametrize("ending", ["client_reset", "upstream_reset", "idle_timeout", "fin_both"])
def test_relay_endings_exact_counters(core, tcp_server, ending) -> None:
    """A relay session that moved 5 bytes each way, ended four ways: the listener counts 1 opened,
    1 closed, rx == tx == 5, the cluster 1 request, 0 connect errors; gauges at zero."""
    gate = threading.Event()

    def handler(conn: socket.socket, index: int) -> None:
        b = conn.recv(5)
        conn.sendall(b)
        gate.wait(10)
        if ending == "upstream_reset":
            reset(conn)
        elif ending == "fin_both":
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(100):
                pass
        else:
            recv_until_close(conn)  # until the proxy closes (or resets) its side

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([tcp_listener(port, "up")], [cluster("up", srv.address)],
                    limits=Limits(request_header_timeout="2s", tunnel_idle_timeout="300ms")), cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"hello")
    got = b""
    while len(got) < 5:
        got += s.recv(5)
    assert got == b"hello"
    if ending == "client_reset":
        reset(s)
        gate.set()
    elif ending == "upstream_reset":
        gate.set()
        recv_until_close(s, 5)
        s.close()
    elif ending == "idle_timeout":
        assert recv_until_close(s, 5)[1] in ("eof", "reset")
        gate.set()
        s.close()
    else:
        s.shutdown(socket.SHUT_WR)
        gate.set()
        assert recv_until_close(s, 5) == (b"", "eof")
        s.close()
    wait_gauges(c, "tcp", "up", what=ending)
    ls = c.listener_stats()["tcp"]
    cs = c.cluster_stats()["up"]
    assert (ls["conns_opened"], ls["conns_closed"], ls["rx_bytes"], ls["tx_bytes"]) == (1, 1, 5, 5), ls
    assert (cs["requests"], cs["connect_errors"], cs["connections_opened"]) == (1, 0, 1), cs


# ---- HTTP ----

def test_http_client_reset_while_upstream_connecting(core, blackhole) -> None:
    """A GET whose upstream connect hangs; the client resets: counted once as 4xx (499), no
    connect error, the connecting socket released, every gauge at zero."""
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", blackhole, connect_timeout="5s")]),
             cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(build_request("GET", "/x"))
    wait_for(lambda: total(c, "upstream_conns_active") == 1, 3, "the connect to start")
    reset(s)
    wait_gauges(c, "web", "b", timeout=3, what="after the client reset mid-connect")
    wait_codes(c, "web", "r", s4xx=1)
    cs = c.cluster_stats()["b"]
    assert (cs["connect_errors"], cs["requests"], cs["connections_opened"]) == (0, 1, 1), cs


@pytest.mark.parametrize("ending", ["client_fin", "client_reset", "upstream_fin", "upstream_reset", "idle_timeout"])
def test_tunnel_endings_gauges_and_counts(core, http_backend, ending) -> None:
    """An Upgrade tunnel echoes 4 bytes, then ends five ways: one 1xx on the route and nothing
    else, one upstream request and connection, the listener 1 opened and 1 closed, and every
    gauge (client, upstream, idle, in-flight) back to zero."""
    gate = threading.Event()

    def act(conn: socket.socket, r: Reader) -> None:
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        b = r.take()
        while len(b) < 4:
            b += conn.recv(4 - len(b))
        conn.sendall(b)
        gate.wait(10)
        if ending == "upstream_reset":
            return reset(conn)
        if ending == "upstream_fin":
            conn.shutdown(socket.SHUT_WR)
        recv_until_close(conn)  # until the proxy closes (or resets) its side
        if ending == "client_fin":
            conn.shutdown(socket.SHUT_WR)

    be = http_backend(lambda req: act)
    port = free_port()
    c = core(config([http_listener(port, rule("ws", "w"))], [cluster("w", be.address)],
                    limits=Limits(request_header_timeout="2s", tunnel_idle_timeout="300ms")), cpus=ONE)
    conn = Conn(port)
    conn.send(UPGRADE)
    assert conn.read_head()[0] == 101
    conn.send(b"ping")
    assert recv_exact(conn, 4) == b"ping"
    got = conn.received
    wait_gauges(c, "web", "w", {"conns_active": 1, "upstream_conns_active": 1, "cluster_active": 1,
                                "open_minus_closed": 1}, what="tunnel open")
    if ending == "client_fin":
        conn.sock.shutdown(socket.SHUT_WR)
        gate.set()
        assert conn.read_to_close() == b""
        conn.close()
    elif ending == "client_reset":
        reset(conn.sock)
        gate.set()
    elif ending == "idle_timeout":
        assert recv_until_close(conn.sock, 5)[1] in ("eof", "reset")
        gate.set()
        conn.close()
    else:
        gate.set()
        recv_until_close(conn.sock, 5)
        conn.close()
    wait_gauges(c, "web", "w", what=ending)
    wait_codes(c, "web", "ws", s1xx=1)
    cs = c.cluster_stats()["w"]
    ls = c.listener_stats()["web"]
    assert (cs["requests"], cs["connect_errors"], cs["connections_opened"]) == (1, 0, 1), cs
    assert (ls["conns_opened"], ls["conns_closed"]) == (1, 1), ls
    # bytes: everything the client sent was read; the 101 head and the echo were what it got
    assert (ls["rx_bytes"], ls["tx_bytes"]) == (len(UPGRADE) + 4, got), (ls, len(UPGRADE) + 4, got)


def test_pool_eviction_by_max_connections_and_idle_timeout(core, http_backend) -> None:
    """maxConnections 1 over two endpoints: a request to A pools A's connection; one to B evicts
    it (LRU) and pools B's: 1 active, 1 idle at each step, connections_opened 2; the cluster's
    idleTimeout then closes B's: 0 and 0."""
    a = http_backend(lambda req: Reply(200, b"a"))
    b = http_backend(lambda req: Reply(200, b"b"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))],
                    [cluster("b", a.address, b.address, max_connections=1, idle_timeout="1s")]), cpus=ONE)
    with Conn(port) as conn:
        assert conn.request("GET", "/1").status == 200
        wait_gauges(c, "web", "b", {"upstream_conns_active": 1, "upstream_conns_idle": 1, "conns_active": 1,
                                    "open_minus_closed": 1}, what="first pooled")
        assert conn.request("GET", "/2").status == 200
        wait_gauges(c, "web", "b", {"upstream_conns_active": 1, "upstream_conns_idle": 1, "conns_active": 1,
                                    "open_minus_closed": 1}, what="second pooled, first evicted")
        assert (a.accepted, b.accepted) == (1, 1)
        wait_gauges(c, "web", "b", {"conns_active": 1, "open_minus_closed": 1}, timeout=5,
                    what="idle timeout closed the pooled one")
    wait_gauges(c, "web", "b", what="all closed")
    assert c.cluster_stats()["b"]["connections_opened"] == 2
    wait_codes(c, "web", "r", s2xx=2)


# ---- drain and reload ----

def test_drain_deadline_with_connections_in_every_state(core, http_backend, tcp_server) -> None:
    """A drain (1.5 s) over: an idle keep-alive client with a pooled upstream, a half-sent head,
    a half-sent body, a request waiting on a stalled backend, an open tunnel and a relay. When
    the workers have exited every gauge is zero, each listener closed what it opened, and each
    request counts once: 2xx (the warm-up), 5xx for the cut body and the cut wait (504), 1xx
    for the tunnel, nothing for the half head."""
    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/stall":
            release.wait(20)
            return Reply(200, b"late")
        if req.target == "/ws":
            return upgrade_echo()
        return Reply(200, b"ok")

    be = http_backend(app)
    srv = tcp_server(echo_handler)
    hport, tport = free_port(), free_port()
    cfg = config([http_listener(hport, rule("r", "b")), tcp_listener(tport, "t")],
                 [cluster("b", be.address), cluster("t", srv.address)],
                 limits=Limits(request_header_timeout="30s"))
    c = core(cfg, cpus=ONE)
    conns: list = []  # type: ignore[type-arg]
    try:
        idle = Conn(port=hport)
        conns.append(idle)
        assert idle.request("GET", "/warm").status == 200
        half_head = Conn(hport)
        conns.append(half_head)
        half_head.send(b"GET /x HTTP/1.1\r\nHost: a\r\n")
        half_body = Conn(hport)
        conns.append(half_body)
        half_body.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        waiting = Conn(hport)
        conns.append(waiting)
        waiting.send(build_request("GET", "/stall"))
        tun = Conn(hport)
        conns.append(tun)
        tun.send(UPGRADE)
        assert tun.read_head()[0] == 101
        tun.send(b"ping")
        assert recv_exact(tun, 4) == b"ping"
        rel = socket.create_connection(("127.0.0.1", tport), timeout=5)
        conns.append(rel)
        rel.sendall(b"hi")
        assert rel.recv(2) == b"hi"
        wait_for(lambda: be.count == 3 and c.cluster_stats()["b"]["active"] == 3, 5,
                 lambda: f"3 requests at the backend, 3 in flight: {be.count} {c.cluster_stats()}")
        c.drain(1500)
        wait_for(lambda: c.running_workers() == 0, 10, "the workers to exit at the deadline")
        g = {"http": gauges(c, "web", "b"), "tcp": gauges(c, "tcp", "t")}
        assert g == {"http": ZERO, "tcp": ZERO}, g
        assert c.cluster_stats()["b"]["active"] == 0
        st = c.rule_stats()[("web", "r")]["codes"]
        assert st == {"1xx": 1, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 2}, st
        nr = c.rule_stats().get(("web", ""), {"codes": {}})["codes"]
        assert sum(nr.values()) == 0, nr
        ls = c.listener_stats()
        assert (ls["web"]["conns_opened"], ls["web"]["conns_closed"]) == (5, 5), ls["web"]
        assert (ls["tcp"]["conns_opened"], ls["tcp"]["conns_closed"]) == (1, 1), ls["tcp"]
        http_conns = [x for x in conns if isinstance(x, Conn)]
        assert ls["web"]["rx_bytes"] == sum(x.sent for x in http_conns), (ls["web"], [x.sent for x in http_conns])
        assert ls["web"]["tx_bytes"] == idle.received + tun.received, (ls["web"], idle.received, tun.received)
        assert (ls["tcp"]["rx_bytes"], ls["tcp"]["tx_bytes"]) == (2, 2), ls["tcp"]
    finally:
        release.set()
        for x in conns:
            x.close()


def test_reload_removing_listeners_and_clusters_with_live_connections(core, http_backend, tcp_server) -> None:
    """A relay session, a tunnel and a pooled keep-alive client are live when a reload removes
    their listeners and clusters: they keep working on their config; when they end, every
    gauge is back to zero and each listener's opened == closed."""
    be = http_backend(lambda req: upgrade_echo() if req.target == "/ws" else Reply(200, b"ok"))
    srv = tcp_server(echo_handler)
    hport, tport, other = free_port(), free_port(), free_port()
    cfg1 = config([http_listener(hport, rule("r", "b")), tcp_listener(tport, "t")],
                  [cluster("b", be.address), cluster("t", srv.address)], generation=1)
    c = core(cfg1, cpus=ONE)
    ka = Conn(hport)
    assert ka.request("GET", "/1").status == 200
    tun = Conn(hport)
    tun.send(UPGRADE)
    assert tun.read_head()[0] == 101
    rel = socket.create_connection(("127.0.0.1", tport), timeout=5)
    rel.sendall(b"a")
    assert rel.recv(1) == b"a"
    keep = cluster("keep", srv.address)
    apply_and_wait(c, config([tcp_listener(other, "keep", name="other")], [keep], generation=2))
    tun.send(b"ping")
    assert recv_exact(tun, 4) == b"ping"
    rel.sendall(b"b")
    assert rel.recv(1) == b"b"
    # the keep-alive client's listener is gone: its next request is served on its old config,
    # and the response ends the connection
    r = ka.request("GET", "/2")
    assert (r.status, (r.header("connection") or "").lower()) == (200, "close"), (r.status, r.headers)
    assert ka.at_eof(3)
    ka.close()
    tun.sock.shutdown(socket.SHUT_WR)
    assert tun.read_to_close() == b""
    tun.close()
    rel.shutdown(socket.SHUT_WR)
    assert recv_until_close(rel, 5) == (b"", "eof")
    rel.close()
    last: list = [None]  # type: ignore[type-arg]

    def settled() -> bool:
        ls = c.listener_stats()
        cs = c.cluster_stats()
        last[0] = (total(c, "conns_active"), total(c, "upstream_conns_active"), total(c, "upstream_conns_idle"),
                   cs["b"]["active"], cs["t"]["active"],
                   ls["web"]["conns_opened"] - ls["web"]["conns_closed"],
                   ls["tcp"]["conns_opened"] - ls["tcp"]["conns_closed"])
        return last[0] == (0,) * 7
    try:
        wait_for(settled, 5, "gauges")
    except AssertionError:
        raise AssertionError(f"(conns, up active, up idle, b active, t active, web open-closed, tcp open-closed) "
                             f"= {last[0]}") from None


def test_http_timeouts_and_retries_gauges_and_counts(core, http_backend) -> None:
    """A request timeout (504) on a stalled backend, a header timeout (408), a retry on 503 then
    200, a refused connect with retries to a dead port (503), and 503 with no endpoints: each
    counted once on its series, the cluster counters exact, every gauge back to zero."""
    release = threading.Event()
    flaky = {"n": 0}

    def app(req):  # type: ignore[no-untyped-def]
        if req.target.startswith("/stall"):
            release.wait(20)
            return Reply(200, b"late")
        if req.target.startswith("/flaky"):
            flaky["n"] += 1
            return Reply(503 if flaky["n"] == 1 else 200, b"f")
        return Reply(200, b"ok")

    be = http_backend(app)
    dead = free_port()
    port = free_port()
    cfg = config([http_listener(port,
                                rule("slow", "b", prefix="/stall", timeouts=Timeouts(request="300ms")),
                                rule("flaky", "b", prefix="/flaky", retry=Retry(attempts=1, on=("503",), backoff="1ms")),
                                rule("dead", "d", prefix="/dead",
                                     retry=Retry(attempts=2, on=("connect-failure",), backoff="1ms")),
                                rule("none", "e", prefix="/none"))],
                 [cluster("b", be.address), cluster("d", f"127.0.0.1:{dead}"), cluster("e")],
                 limits=Limits(request_header_timeout="300ms"))
    c = core(cfg, cpus=ONE)
    try:
        assert get(port, "/stall/1").status == 504
        with Conn(port) as conn:
            conn.send(b"GET / HTTP/1.1\r\n")
            assert conn.read_response().status == 408
        assert get(port, "/flaky/1").status == 200
        assert get(port, "/dead/1").status == 503
        assert get(port, "/none/1").status == 503
        wait_codes(c, "web", "slow", s5xx=1)
        wait_codes(c, "web", "flaky", s2xx=1)
        wait_codes(c, "web", "dead", s5xx=1)
        wait_codes(c, "web", "none", s5xx=1)
        wait_codes(c, "web", "", s4xx=1)
        # the 200 after the retry left its connection pooled; the 504's and the 503's were closed
        wait_gauges(c, "web", "b", {"upstream_conns_active": 1, "upstream_conns_idle": 1}, what="after all")
        cs = c.cluster_stats()
        assert (cs["b"]["requests"], cs["b"]["connect_errors"]) == (3, 0), cs["b"]
        assert (cs["d"]["requests"], cs["d"]["connect_errors"], cs["d"]["connections_opened"]) == (3, 3, 3), cs["d"]
        assert (cs["e"]["requests"], cs["e"]["connect_errors"], cs["e"]["active"], cs["d"]["active"]) == (0, 0, 0, 0), cs
        ls = c.listener_stats()["web"]
        assert ls["conns_opened"] == ls["conns_closed"] == 5, ls
    finally:
        release.set()


def test_http_client_ends_mid_body_counted_once(core, tcp_server) -> None:
    """Two uploads cut mid-body, one by FIN, one by a reset: each counted once as 4xx, the
    upstream connections holding a partial body closed, gauges back to zero."""
    seen = threading.Semaphore(0)

    def handler(conn: socket.socket, index: int) -> None:
        recv_head(conn)
        seen.release()
        recv_until_close(conn)  # until the proxy closes (or resets) its side

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=ONE)
    for how in ("fin", "reset"):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        assert seen.acquire(timeout=5)
        if how == "fin":
            s.shutdown(socket.SHUT_WR)
            recv_until_close(s, 5)
            s.close()
        else:
            reset(s)
        wait_gauges(c, "web", "b", what=how)
    wait_codes(c, "web", "r", s4xx=2)
    cs = c.cluster_stats()["b"]
    assert (cs["requests"], cs["connections_opened"], cs["connect_errors"]) == (2, 2, 0), cs
    ls = c.listener_stats()["web"]
    assert (ls["conns_opened"], ls["conns_closed"]) == (2, 2), ls


def test_relay_client_reset_during_retry_backoff(core) -> None:
    """A relay whose first connect is refused waits a 3 s backoff before the retry; the client
    resets meanwhile: the session ends at once (not after the backoff), one connect error, one
    request, every gauge at zero, no second attempt."""
    dead = free_port()
    port = free_port()
    cfg = config([tcp_listener(port, "up", retry=Retry(attempts=1, on=("connect-failure",), backoff="3s"))],
                 [cluster("up", f"127.0.0.1:{dead}")])
    c = core(cfg, cpus=ONE)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    wait_for(lambda: c.cluster_stats()["up"]["connect_errors"] == 1, 3, "the first refusal")
    reset(s)
    wait_gauges(c, "tcp", "up", timeout=1.5, what="after the client reset during the backoff")
    cs = c.cluster_stats()["up"]
    assert (cs["connect_errors"], cs["requests"], cs["connections_opened"]) == (1, 1, 1), cs


def test_drain_deadline_cuts_connecting_relay_and_http(core, blackhole) -> None:
    """At the drain deadline a relay and an HTTP request both still connecting (blackhole): after
    the workers exit every gauge is zero, each listener closed what it opened, the HTTP request
    counts once (5xx), and nothing counts as a connect error."""
    hport, tport = free_port(), free_port()
    cfg = config([http_listener(hport, rule("r", "b")), tcp_listener(tport, "t")],
                 [cluster("b", blackhole, connect_timeout="10s"), cluster("t", blackhole, connect_timeout="10s")])
    c = core(cfg, cpus=ONE)
    h = Conn(hport)
    h.send(build_request("GET", "/x"))
    r = socket.create_connection(("127.0.0.1", tport), timeout=5)
    try:
        wait_for(lambda: c.cluster_stats()["b"]["active"] == 1 and c.cluster_stats()["t"]["active"] == 1, 3,
                 "both connects to start")
        c.drain(500)
        wait_for(lambda: c.running_workers() == 0, 5, "the workers to exit")
        g = {"http": gauges(c, "web", "b"), "tcp": gauges(c, "tcp", "t")}
        assert g == {"http": ZERO, "tcp": ZERO}, g
        assert c.rule_stats()[("web", "r")]["codes"]["5xx"] == 1, c.rule_stats()
        cs = c.cluster_stats()
        assert cs["b"]["connect_errors"] == cs["t"]["connect_errors"] == 0, cs
    finally:
        h.close()
        r.close()


def test_relay_and_http_share_max_connections_gauges(core, tcp_server) -> None:
    """One cluster, maxConnections 1, used by an HTTP listener and a TCP listener: the HTTP
    request leaves a pooled connection; a relay session then evicts it to open its own. While
    the session runs the worker holds exactly one upstream connection, none idle; at the end
    every gauge is zero."""
    def handler(conn: socket.socket, index: int) -> None:
        if index == 0:
            got = recv_head(conn)
            assert got is not None
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            recv_until_close(conn)  # until the proxy closes (or resets) its side
        else:
            echo_handler(conn, index)

    srv = tcp_server(handler)
    hport, tport = free_port(), free_port()
    c = core(config([http_listener(hport, rule("r", "u")), tcp_listener(tport, "u")],
                    [cluster("u", srv.address, max_connections=1)]), cpus=ONE)
    assert get(hport, "/").status == 200
    wait_for(lambda: total(c, "upstream_conns_idle") == 1, 3, "the pooled connection")
    with socket.create_connection(("127.0.0.1", tport), timeout=5) as s:
        s.sendall(b"hi")
        assert s.recv(2) == b"hi"
        wait_for(lambda: total(c, "upstream_conns_idle") == 0, 3, "the pooled one evicted")
        g = (total(c, "upstream_conns_active"), total(c, "upstream_conns_idle"), c.cluster_stats()["u"]["active"])
        assert g == (1, 0, 1), f"(upstream active, idle, cluster active) = {g} with one relay session"
    wait_for(lambda: (total(c, "conns_active"), total(c, "upstream_conns_active"), c.cluster_stats()["u"]["active"])
             == (0, 0, 0), 5, "all gauges at zero")


def test_mixed_endings_concurrently_each_request_counted_once(core, http_backend) -> None:
    """Two workers, 8 threads, 240 exchanges of nine kinds (plain, client reset mid-response,
    client reset or FIN mid-body, request timeout, upgrade ended by FIN or reset, retry on 503,
    backend reset, refused connect with retries, header timeout). Afterwards: every gauge is
    zero, opened == closed, and each route counted exactly the exchanges sent to it."""
    import random

    def app(req):  # type: ignore[no-untyped-def]
        t = req.target
        if t.startswith("/stall"):
            return stall_action
        if t.startswith("/ws"):
            return upgrade_echo()
        if t.startswith("/flaky"):
            return Reply(503 if req.header("x-try") is None and random.random() < 0.5 else 200, b"f")
        if t.startswith("/reset"):
            return reset_action_
        if t.startswith("/big"):
            return Reply(200, b"x" * 300000)
        return Reply(200, b"ok")

    def stall_action(conn, r):  # type: ignore[no-untyped-def]
        conn.settimeout(5)
        try:
            conn.recv(10)
        except OSError:
            pass

    def reset_action_(conn, r):  # type: ignore[no-untyped-def]
        reset(conn)

    be = http_backend(app)
    dead = free_port()
    port = free_port()
    cfg = config([http_listener(port,
                                rule("stall", "b", prefix="/stall", timeouts=Timeouts(request="150ms")),
                                rule("flaky", "b", prefix="/flaky", retry=Retry(attempts=2, on=("503",), backoff="1ms")),
                                rule("dead", "d", prefix="/dead",
                                     retry=Retry(attempts=1, on=("connect-failure",), backoff="1ms")),
                                rule("r", "b"))],
                 [cluster("b", be.address), cluster("d", f"127.0.0.1:{dead}")],
                 limits=Limits(request_header_timeout="200ms"))
    c = core(cfg)
    kinds = ["plain", "reset_mid_resp", "reset_mid_body", "fin_mid_body", "stall", "ws_fin", "ws_reset", "flaky",
             "backend_reset", "dead", "head_timeout"]
    route_of = {"plain": "r", "reset_mid_resp": "r", "reset_mid_body": "r", "fin_mid_body": "r", "stall": "stall",
                "ws_fin": "r", "ws_reset": "r", "flaky": "flaky", "backend_reset": "r", "dead": "dead",
                "head_timeout": ""}
    plan = [kinds[i % len(kinds)] for i in range(242)]
    errors: list = []  # type: ignore[type-arg]

    def one(kind: str, i: int) -> None:
        conn = Conn(port, timeout=5)
        try:
            if kind == "plain":
                assert conn.request("GET", f"/p{i}").status == 200
            elif kind == "reset_mid_resp":
                conn.send(build_request("GET", f"/big{i}"))
                conn.read_head()
                reset(conn.sock)
                return
            elif kind in ("reset_mid_body", "fin_mid_body"):
                conn.send(b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"y" * 50)
                if kind == "reset_mid_body":
                    reset(conn.sock)
                    return
                conn.sock.shutdown(socket.SHUT_WR)
                recv_until_close(conn.sock, 5)
            elif kind == "stall":
                assert conn.request("GET", f"/stall/{i}").status == 504
            elif kind in ("ws_fin", "ws_reset"):
                conn.send(UPGRADE.replace(b"/ws", b"/ws%d" % i))
                assert conn.read_head()[0] == 101
                conn.send(b"abcd")
                assert recv_exact(conn, 4) == b"abcd"
                if kind == "ws_reset":
                    reset(conn.sock)
                    return
                conn.sock.shutdown(socket.SHUT_WR)
                assert conn.read_to_close() == b""
            elif kind == "flaky":
                assert conn.request("GET", f"/flaky/{i}").status in (200, 503)
            elif kind == "backend_reset":
                assert conn.request("GET", f"/reset{i}").status == 502
            elif kind == "dead":
                assert conn.request("GET", f"/dead/{i}").status == 503
            elif kind == "head_timeout":
                conn.send(b"GET / HTTP/1.1\r\n")
                assert conn.read_response().status == 408
        except BaseException as e:  # noqa: BLE001
            errors.append((kind, i, repr(e)))
        finally:
            conn.close()

    idx = iter(range(len(plan)))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(idx, None)
            if i is None:
                return
            one(plan[i], i)

    ts = [threading.Thread(target=worker) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:5]
    want: dict = {}  # type: ignore[type-arg]
    for k in plan:
        want[route_of[k]] = want.get(route_of[k], 0) + 1
    last: list = [None]  # type: ignore[type-arg]

    def settled() -> bool:
        rs = c.rule_stats()
        got = {route: sum(rs[("web", route)]["codes"].values()) for route in want if ("web", route) in rs}
        ls = c.listener_stats()["web"]
        cs = c.cluster_stats()
        last[0] = (got, total(c, "conns_active"), total(c, "upstream_conns_active") - total(c, "upstream_conns_idle"),
                   cs["b"]["active"], cs["d"]["active"], ls["conns_opened"] - ls["conns_closed"], ls["conns_opened"])
        return last[0] == (want, 0, 0, 0, 0, 0, len(plan))
    try:
        wait_for(settled, 10, "")
    except AssertionError:
        raise AssertionError(f"(codes per route, conns, busy upstreams, b active, d active, open-closed, opened) = "
                             f"{last[0]}, expected codes {want}") from None
    cs = c.cluster_stats()["d"]
    n_dead = plan.count("dead")
    assert (cs["requests"], cs["connect_errors"]) == (2 * n_dead, 2 * n_dead), cs
