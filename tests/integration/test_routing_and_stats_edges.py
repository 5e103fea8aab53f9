"""Edges of routing and of per-rule stats found in a review; each test failed before its fix.
Stats: a request refused before routing (400/408/431) counts on its own listener's no-route
series, not on the first listener's or the previous request's rule; an upgrade counts once (101);
the stats slots of departed names are reused once no connection counts on them.
Routing: header values lose trailing whitespace (RFC 9110 5.5), a Host's trailing dot is the
same name, an absolute-form target without a path is "/", dot segments are a 400."""
from __future__ import annotations

import socket
import threading

import pytest

from .helpers import (Conn, build_request, cluster, config, free_port, get, http_listener, nginx_echo, raw, rule,
                      wait_for)
from .test_http_routing import route_of

pytestmark = pytest.mark.timeout(60)


def where_4xx(c) -> dict:  # type: ignore[no-untyped-def]
    """Once exactly one 4xx has been counted anywhere: {(listener, route): 4xx count} of the nonzero ones."""
    def ready():  # type: ignore[no-untyped-def]
        got = {k: v["codes"]["4xx"] for k, v in c.rule_stats().items() if v["codes"]["4xx"]}
        return got if sum(got.values()) == 1 else None
    return wait_for(ready, 5, "one 4xx to be counted")


def test_malformed_request_on_second_listener_counted_on_its_own_listener(core, nginx) -> None:
    p1, p2 = free_port(), free_port()
    c = core(config([http_listener(p1, rule("r1", "a"), name="one"),
                     http_listener(p2, rule("r2", "a"), name="two")],
                    [cluster("a", nginx.a)]), cpus=[0])
    out = raw(p2, b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400"), out
    assert where_4xx(c) == {("two", ""): 1}


def test_malformed_keepalive_request_not_counted_on_previous_route(core, nginx) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("api", "a", prefix="/api"))], [cluster("a", nginx.a)]), cpus=[0])
    with Conn(port) as conn:
        assert conn.request("GET", "/api/x").status == 200
        conn.send(b"GET /api/y HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        assert conn.read_response().status == 400
    assert where_4xx(c) == {("web", ""): 1}


def test_header_timeout_on_keepalive_not_counted_on_previous_route(core, nginx) -> None:
    from ringlane_sidecar.config.model import Limits
    port = free_port()
    c = core(config([http_listener(port, rule("api", "a", prefix="/api"))], [cluster("a", nginx.a)],
                    limits=Limits(request_header_timeout="1s")), cpus=[0])
    with Conn(port) as conn:
        assert conn.request("GET", "/api/x").status == 200
        conn.send(b"GET /api/y HTTP/1.1\r\n")
        assert conn.read_response().status == 408
    assert where_4xx(c) == {("web", ""): 1}


def test_header_match_ignores_trailing_whitespace(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("default", "a", tag=True),
                               rule("canary", "a", headers=[("x-canary", "1")], tag=True))],
                [cluster("a", nginx.a)]), cpus=[0])
    assert route_of(port, "/", [("x-canary", "1 ")]) == "canary"


def test_absolute_form_without_path_matches_exact_root(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("default", "a", prefix="/other", tag=True),
                               rule("root", "a", exact="/", tag=True))],
                [cluster("a", nginx.a)]), cpus=[0])
    with Conn(port) as conn:
        conn.send(b"GET http://test.local HTTP/1.1\r\nHost: test.local\r\n\r\n")
        r = conn.read_response()
    assert r.status == 200
    assert nginx_echo(r)["route"] == "root"


def test_host_trailing_dot(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("any", "a", tag=True),
                               rule("shop", "a", hostnames=["shop.example.com"], tag=True))],
                [cluster("a", nginx.a)]), cpus=[0])
    assert route_of(port, "/", host="shop.example.com.") == "shop"


def test_host_header_trailing_whitespace_still_routes(core, nginx) -> None:
    port = free_port()
    core(config([http_listener(port, rule("shop", "a", hostnames=["shop.example.com"], tag=True))],
                [cluster("a", nginx.a)]), cpus=[0])
    with Conn(port) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: shop.example.com \r\n\r\n")
        r = conn.read_response()
    assert r.status == 200


def test_upgrade_request_is_counted(core, http_backend) -> None:
    from .backends import upgrade_echo
    be = http_backend(lambda req: upgrade_echo())
    port = free_port()
    c = core(config([http_listener(port, rule("ws", "w"))], [cluster("w", be.address)]), cpus=[0])
    with Conn(port) as conn:
        conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert conn.read_response().status == 101
        conn.send(b"ping")
        while len(conn.buf) < 4:
            conn._fill()
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "the tunnel to close")
    st = c.rule_stats()[("web", "ws")]
    assert sum(st["codes"].values()) == 1, st


def test_tcp_retry_on_connect_failure_is_honoured(core, tcp_server) -> None:
    """The schema accepts retry {on: [connect-failure]} on a tcp listener (the only condition it
    allows there), so a session whose first endpoint refuses goes to the other one; the relay
    ignored it (half the sessions were closed). Every relay is released afterwards."""
    from ringlane_sidecar.config.model import Backend, Listener, Retry, Rule

    from .backends import echo_handler
    echo = tcp_server(echo_handler)
    dead = free_port()
    port = free_port()
    lst = Listener(name="tcp", address=f"127.0.0.1:{port}", protocol="tcp",
                   rules=(Rule(name="tcp", backends=(Backend(cluster="c"),),
                               retry=Retry(attempts=2, on=("connect-failure",), backoff="0s")),))
    c = core(config([lst], [cluster("c", f"127.0.0.1:{dead}", echo.address)]), cpus=[0])
    ok = 0
    for i in range(4):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"hello%d" % i)
            try:
                ok += s.recv(100) == b"hello%d" % i
            except ConnectionResetError:
                pass
    assert ok == 4
    wait_for(lambda: sum(t.conns_active for t in c.totals()) == 0, 5, "every relay to be released")


def test_route_churn_does_not_exhaust_stat_slots(core, nginx) -> None:
    """Rule names were never given back while the process lived, so a long-lived sidecar whose
    ProxyRoutes come and go (preview environments, renamed routes) ended up refusing every new
    config (4096 names), although no single config is large."""
    from .conftest import apply_and_wait
    port = free_port()
    c = core(cpus=[0])
    for gen in range(1, 101):
        rules = [rule(f"preview-{gen}/app/{i}", "a", prefix=f"/p{i}") for i in range(50)]
        cfg = config([http_listener(port, *rules)], [cluster("a", nginx.a)], generation=gen)
        apply_and_wait(c, cfg)
    assert get(port, "/p1").status == 200


@pytest.mark.parametrize("path", ["/public/../admin/users", "/public/%2e%2E/admin", "/public/.%2e/admin",
                                  "/public/./x", "/public/..", "/public/%2E?q=1"])
def test_dot_segments_are_refused(core, nginx, path) -> None:
    """"/public/../admin" is "/admin" to the backend (RFC 3986 5.2.4) but was routed on the raw
    text, so it reached the /public rule's cluster and skipped the /admin rule's filters and
    timeouts. Clients normalise such paths before sending (browsers, curl); the proxy refuses
    them (400) rather than route on one path and forward another."""
    port = free_port()
    core(config([http_listener(port, rule("public", "a", prefix="/public", tag=True),
                               rule("admin", "a", prefix="/admin", tag=True))],
                [cluster("a", nginx.a)]), cpus=[0])
    assert route_of(port, path) == "400"


@pytest.mark.parametrize("path", ["/public/.well-known/x", "/public/a..b", "/public/...", "/public/x?y=/../z"])
def test_dots_that_are_not_dot_segments_route(core, nginx, path) -> None:
    port = free_port()
    core(config([http_listener(port, rule("public", "a", prefix="/public", tag=True))], [cluster("a", nginx.a)]),
         cpus=[0])
    assert route_of(port, path) == "public"


def test_a_departed_rules_slot_waits_for_its_last_connection_then_counts_from_zero(core, http_backend) -> None:
    """With the rule table full (3 slots here: the listener's no-route series, a, b), a new rule
    may take the slot of a rule that left only once no connection still serves a config that had
    it: until then the config is refused (its counters would mix). The departed rule is reported
    with its last values (the slow request included) until its slot is zeroed for the new one."""
    from ringlane_sidecar.compile import CompileError
    from ringlane_sidecar.slots import Slots

    from .backends import Reply
    from .conftest import apply_and_wait

    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/slow":
            release.wait(10)
        return Reply(200, b"ok")

    be = http_backend(app)
    port = free_port()
    c = core(cpus=[0])
    c.slots = Slots.new(3)
    gen = lambda n, name: config([http_listener(port, rule(name, "b"))], [cluster("b", be.address)], generation=n)  # noqa: E731
    apply_and_wait(c, gen(1, "a"))
    slow = Conn(port, timeout=10)
    try:
        slow.send(build_request("GET", "/slow"))
        wait_for(lambda: be.count == 1, 5, "the slow request to reach the backend")
        apply_and_wait(c, gen(2, "b"))
        with pytest.raises(CompileError, match="more than 3 names in use"):
            c.apply(gen(3, "c"))  # a: still served by the slow connection's config
        release.set()
        assert slow.read_response().status == 200
    finally:
        release.set()
        slow.close()
    wait_for(lambda: c.oldest_seq() == 2, 5, "the first config to be let go")
    assert c.rule_stats()[("web", "a")]["codes"]["2xx"] == 1
    apply_and_wait(c, gen(3, "c"))
    stats = c.rule_stats()
    assert ("web", "a") not in stats and sum(stats[("web", "c")]["codes"].values()) == 0  # a's slot, zeroed
    assert get(port, "/x").status == 200
    wait_for(lambda: c.rule_stats()[("web", "c")]["codes"]["2xx"] == 1, 5, "c's one request to count")


def test_response_cut_by_an_upstream_reset_is_counted_as_a_failure(core, tcp_server) -> None:
    """The upstream sends a head and part of the body, then resets: the client's connection is cut
    (a 502 can no longer be sent), and the exchange was counted nowhere, so a backend failing
    mid-response never showed in the request metrics. It counts as the 502 it would have had."""
    from .backends import recv_head, reset

    def handler(conn: socket.socket, index: int) -> None:
        if recv_head(conn) is None:
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial")
        reset(conn)

    srv = tcp_server(handler)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", srv.address)]), cpus=[0])
    with Conn(port, timeout=5) as conn:
        conn.send(build_request("GET", "/x"))
        with pytest.raises(Exception):  # cut: EOF or reset before the body's end
            conn.read_response()
    wait_for(lambda: c.rule_stats()[("web", "r")]["codes"]["5xx"] == 1, 5,
             lambda: f"the cut exchange to count as a 5xx: {c.rule_stats()[('web', 'r')]}")
    assert sum(c.rule_stats()[("web", "r")]["codes"].values()) == 1
