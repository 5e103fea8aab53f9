"""Counters after a known amount of traffic: exact request counts per route and code class,
histogram totals, cluster counters, and byte counts on both protocols."""
from __future__ import annotations

import os
import socket

import pytest

from .backends import echo_handler
from .helpers import Conn, wait_codes, build_request, cluster, config, free_port, http_listener, rule, tcp_listener, wait_for

pytestmark = pytest.mark.timeout(30)


def test_request_counts_per_route_and_class(core, nginx) -> None:
    port, dead = free_port(), free_port()
    c = core(config([http_listener(port,
                                   rule("ok", "a", prefix="/ok"),
                                   rule("errs", "a", prefix="/status"),
                                   rule("dead", "d", prefix="/dead"))],
                    [cluster("a", nginx.a), cluster("d", f"127.0.0.1:{dead}")]))
    with Conn(port) as conn:
        for i in range(7):
            assert conn.request("GET", f"/ok/{i}").status == 200
        for _ in range(3):
            assert conn.request("GET", "/status/503").status == 503
        for _ in range(2):
            assert conn.request("GET", "/status/404").status == 404
        for _ in range(4):
            assert conn.request("GET", "/nowhere").status == 404
    for _ in range(5):
        with Conn(port) as conn:
            assert conn.request("GET", "/dead").status == 503
    wait_codes(c, "web", "ok", s2xx=7)
    wait_codes(c, "web", "errs", s4xx=2, s5xx=3)
    wait_codes(c, "web", "dead", s5xx=5)
    wait_codes(c, "web", "", s4xx=4)
    rs = c.rule_stats()
    for key, total in ((("web", "ok"), 7), (("web", "errs"), 5), (("web", "dead"), 5), (("web", ""), 4)):
        assert sum(rs[key]["buckets"]) == total, key
        assert rs[key]["sum_ns"] > 0
    cs = c.cluster_stats()
    assert cs["a"]["requests"] == 12
    assert cs["a"]["connect_errors"] == 0
    assert cs["d"]["requests"] == 5
    assert cs["d"]["connect_errors"] == 5
    assert cs["d"]["connections_opened"] == 5
    ls = wait_for(lambda: (lambda x: x if x["conns_closed"] == 6 else None)(c.listener_stats()["web"]), 5,
                  "6 client connections closed")
    assert ls["conns_opened"] == 6


def test_latency_histogram_buckets(core, http_backend) -> None:
    """A 1.2 s response lands in the 1-2.5 s bucket (index 11 of the 15 bounds; 1.3 s of room for
    a loaded machine)."""
    import threading

    from .backends import Reply

    gate = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/slow":
            gate.wait(1.2)  # the backend's latency under test
        return Reply(200, b"x")

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        assert conn.request("GET", "/slow").status == 200
    b = wait_codes(c, "web", "r", s2xx=1)["buckets"]
    assert sum(b) == 1
    assert b.index(1) == 11, b
    assert 1.2e9 <= c.rule_stats()[("web", "r")]["sum_ns"] < 2.5e9


def test_http_byte_counts(core, nginx) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]))
    sent = received = 0
    for k in range(3):
        with Conn(port) as conn:
            for i in range(5):
                r = conn.request("GET", f"/bytes/{k}/{i}", [("x-pad", "p" * (i * 100))])
                assert r.status == 200
            r = conn.request("GET", "/big.bin")
            assert len(r.body) == 1 << 20
            r = conn.request("POST", "/post", body=os.urandom(50_000))
            assert r.status == 200
            sent += conn.sent
            received += conn.received
    ls = wait_for(lambda: (lambda x: x if x["tx_bytes"] == received and x["conns_closed"] == 3 else None)(
        c.listener_stats()["web"]), 5, f"tx_bytes == {received}")
    assert ls["rx_bytes"] == sent
    assert ls["conns_opened"] == 3


def test_tcp_byte_counts(core, tcp_server) -> None:
    srv = tcp_server(echo_handler)
    port = free_port()
    c = core(config([tcp_listener(port, "e")], [cluster("e", srv.address)]))
    total = 0
    for n in (1, 1000, 300_000):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            data = os.urandom(n)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                b = s.recv(1 << 16)
                if not b:
                    break
                got += b
            assert got == data
            total += n
    ls = wait_for(lambda: (lambda x: x if x["conns_closed"] == 3 else None)(c.listener_stats()["tcp"]), 5,
                  "3 relays closed")
    assert ls == {"conns_opened": 3, "conns_closed": 3, "rx_bytes": total, "tx_bytes": total}
    cs = c.cluster_stats()["e"]
    assert cs == {"requests": 3, "connect_errors": 0, "connections_opened": 3, "active": 0}


def test_pipelined_requests_each_counted(core, nginx) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]))
    with Conn(port) as conn:
        conn.send(b"".join(build_request("GET", f"/p/{i}") for i in range(10)))
        for _ in range(10):
            assert conn.read_response().status == 200
    wait_codes(c, "web", "all", s2xx=10)
    assert c.cluster_stats()["a"]["requests"] == 10
