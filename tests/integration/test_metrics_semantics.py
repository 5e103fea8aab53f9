"""What the metrics report: controlled workloads, then the exact values of the Prometheus text
the agent serves (its CoreCollector over a started Core), per engine: code classes and labels of
the proxy's own answers, retries, 1xx, pipelining, upgrades, clients that leave, the histogram,
connection and byte counters, reloads and recycled stats slots, label escaping."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from .backends import Flaky, Reply, echo_handler, reset, reset_action, stall_forever
from .helpers import (Conn, build_request, cluster, config, free_port, get, http_listener, raw, rule, tcp_listener,
                      total, wait_for)

pytestmark = pytest.mark.timeout(60)


# ---- the agent's /metrics text, parsed ----

def scrape(c, engine: str = "x") -> dict:  # type: ignore[no-untyped-def,type-arg]
    """{(sample name, frozenset(labels)): value} of the agent's exposition for core c."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from ringlane_sidecar.metrics import AgentState, CoreCollector

    reg = CollectorRegistry()
    reg.register(CoreCollector(lambda: c, AgentState(engine, "k", "r")))
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(m: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return m.get((name, frozenset(labels.items())), 0.0)


def codes(m: dict, listener: str, route: str) -> dict:  # type: ignore[type-arg]
    """{code: n} of ringlane_http_requests_total for one (listener, route)."""
    out = {}
    for (name, labels), v in m.items():
        d = dict(labels)
        if name == "ringlane_http_requests_total" and d["listener"] == listener and d["route"] == route:
            out[d["code"]] = v
    return out


def wait_metrics(c, cond, what: str, timeout: float = 5.0) -> dict:  # type: ignore[no-untyped-def,type-arg]
    last: list = [None]  # type: ignore[type-arg]

    def ready():  # type: ignore[no-untyped-def]
        last[0] = scrape(c)
        return last[0] if cond(last[0]) else None
    return wait_for(ready, timeout, lambda: f"{what}: {sorted((k[0], sorted(k[1]), v) for k, v in (last[0] or {}).items() if v)}")


def idle(c) -> bool:  # type: ignore[no-untyped-def]
    return total(c, "conns_active") == 0


# ---- tests ----

def test_proxy_generated_answers_labels_and_classes(core, http_backend) -> None:
    """Each proxy-made answer counts once, on the right series: before routing (400, 431, 408)
    and no rule (404) on the listener's route="" series; 413, 502, 504 on the matched route;
    503 (no endpoints) on its route. upstream_requests counts only what was sent upstream."""
    from ringlane_sidecar.config.model import Limits, Timeouts

    release = threading.Event()

    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/r/reset":
            return reset_action
        if req.target == "/r/stall":
            return stall_forever(release)
        return Reply(200, b"ok")

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", prefix="/r", timeouts=Timeouts(request="300ms")),
                                   rule("empty", "none", prefix="/empty"))],
                    [cluster("b", be.address), cluster("none")],
                    limits=Limits(request_header_timeout="1s", max_request_body_bytes=100)))
    try:
        assert get(port, "/r/ok").status == 200
        assert get(port, "/nowhere").status == 404
        assert raw(port, b"GET /r HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").startswith(b"HTTP/1.1 400")
        assert raw(port, b"GET /r HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n").startswith(
            b"HTTP/1.1 431")
        assert raw(port, b"GET /r HTTP/1.1\r\nHost: x\r\n").startswith(b"HTTP/1.1 408")
        assert get(port, "/r/post", method="POST", body=b"x" * 1000).status == 413
        assert get(port, "/r/reset").status == 502
        assert get(port, "/r/stall").status == 504
        assert get(port, "/empty/x").status == 503
    finally:
        release.set()
    want_none = {"4xx": 4.0}
    want_r = {"2xx": 1.0, "4xx": 1.0, "5xx": 2.0}
    m = wait_metrics(c, lambda m: codes(m, "web", "") == want_none and codes(m, "web", "r") == want_r
                     and codes(m, "web", "empty") == {"5xx": 1.0}, "codes per series")
    # ok, stall, and reset (once, or twice when it went out on a pooled connection: the
    # keep-alive race sends it once more on a fresh one): every attempt the backend read
    assert val(m, "ringlane_upstream_requests_total", cluster="b") == be.count
    assert be.count in (3, 4)
    assert val(m, "ringlane_upstream_requests_total", cluster="none") == 0


def test_retried_request_counted_once_attempts_each(core, http_backend) -> None:
    """A GET answered 503 twice then 200, with retry on 503: one 2xx in http_requests_total (no
    5xx), three attempts in upstream_requests_total, one histogram observation."""
    from ringlane_sidecar.config.model import Retry

    be = http_backend(Flaky(fail=2, code=503))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=3, on=("503",), backoff="0s")))],
                    [cluster("b", be.address)]))
    assert get(port, "/x").status == 200
    m = wait_metrics(c, lambda m: codes(m, "web", "r") == {"2xx": 1.0}, "one 2xx")
    assert be.count == 3
    assert val(m, "ringlane_upstream_requests_total", cluster="b") == 3
    assert val(m, "ringlane_http_request_duration_seconds_count", listener="web", route="r") == 1


def test_connect_retry_counts_each_attempt_and_error(core, http_backend) -> None:
    """A cluster of a refusing endpoint and a live one, retry on connect-failure: every request
    ends 2xx; upstream_requests counts every attempt, connect_errors every refusal."""
    from ringlane_sidecar.config.model import Retry

    be = http_backend(lambda req: Reply(200, b"ok"))
    dead = free_port()
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", retry=Retry(attempts=2, on=("connect-failure",),
                                                                      backoff="0s")))],
                    [cluster("b", f"127.0.0.1:{dead}", be.address)]), cpus=[0])
    for i in range(6):
        assert get(port, f"/{i}").status == 200
    m = wait_metrics(c, lambda m: codes(m, "web", "r") == {"2xx": 6.0}, "six 2xx")
    errs = val(m, "ringlane_upstream_connect_errors_total", cluster="b")
    assert errs >= 1
    assert val(m, "ringlane_upstream_requests_total", cluster="b") == 6 + errs


def test_interim_then_final_counted_as_final_only(core, http_backend) -> None:
    """103 Early Hints then 200, and a 100-continue exchange: each counts once as 2xx, never 1xx."""
    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/hints":
            def act(conn, r):  # type: ignore[no-untyped-def]
                # Connection: close: this handler closes the connection when it returns, and a
                # pooled one would race the POST below (a non-idempotent 502 on a stale connection).
                conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            return act
        return Reply(200, b"done")

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        assert conn.request("GET", "/hints").status == 200
    with Conn(port) as conn:
        conn.send(b"POST /c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        status, *_ = conn.read_head()
        assert status == 100
        conn.send(b"hello")
        assert conn.read_response().status == 200
    m = wait_metrics(c, lambda m: sum(codes(m, "web", "r").values()) >= 2, "two responses")
    assert codes(m, "web", "r") == {"2xx": 2.0}


def test_interim_then_reset_counted_once_as_5xx(core, http_backend) -> None:
    """A 103 is relayed, then the upstream resets: the exchange counts once, as a 5xx."""
    def app(req):  # type: ignore[no-untyped-def]
        def act(conn, r):  # type: ignore[no-untyped-def]
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
            time.sleep(0.05)  # the backend's behaviour under test: 103 first, reset later
            reset(conn)
        return act

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    raw(port, build_request("GET", "/x"))
    m = wait_metrics(c, lambda m: sum(codes(m, "web", "r").values()) >= 1 and idle(c), "the exchange counted")
    assert codes(m, "web", "r") == {"5xx": 1.0}


def test_head_and_pipelined_mixed_counts(core, http_backend) -> None:
    """Pipelined GET, HEAD, unrouted GET, GET on one connection: 3x 2xx on r, 1x 4xx on route=""."""
    be = http_backend(lambda req: Reply(200, b"body"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b", prefix="/r"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        conn.send(build_request("GET", "/r/1") + build_request("HEAD", "/r/2") + build_request("GET", "/x")
                  + build_request("GET", "/r/3"))
        assert conn.read_response().status == 200
        assert conn.read_response(head=True).status == 200
        assert conn.read_response().status == 404
        assert conn.read_response().status == 200
    m = wait_metrics(c, lambda m: codes(m, "web", "r") == {"2xx": 3.0} and codes(m, "web", "") == {"4xx": 1.0},
                     "3 + 1")
    assert val(m, "ringlane_upstream_requests_total", cluster="b") == 3


def test_websocket_upgrade_counted_once_as_1xx(core, http_backend) -> None:
    """An upgrade answered 101 then a tunnel: one 1xx, nothing else, histogram count 1."""
    from .backends import upgrade_echo
    be = http_backend(lambda req: upgrade_echo())
    port = free_port()
    c = core(config([http_listener(port, rule("ws", "w"))], [cluster("w", be.address)]))
    with Conn(port) as conn:
        conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert conn.read_response().status == 101
        conn.send(b"ping" * 100)
        while len(conn.buf) < 400:
            conn._fill()
    m = wait_metrics(c, lambda m: idle(c) and sum(codes(m, "web", "ws").values()) >= 1, "tunnel closed")
    assert codes(m, "web", "ws") == {"1xx": 1.0}
    assert val(m, "ringlane_http_request_duration_seconds_count", listener="web", route="ws") == 1


def test_client_gone_mid_response_still_counted(core, http_backend) -> None:
    """The client reads the head of a 4 MiB 200 and closes. The backend answered and the request
    went upstream (upstream_requests_total 1); the answer is counted in http_requests_total (as
    the 200, or as a failure) rather than nowhere."""
    big = os.urandom(4 << 20)
    be = http_backend(lambda req: Reply(200, big))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    conn = Conn(port, rcvbuf=4096, read_size=4096)
    conn.send(build_request("GET", "/big"))
    status, *_ = conn.read_head()
    assert status == 200
    reset(conn.sock)
    wait_for(lambda: idle(c), 5, "the client connection to be released")
    m = scrape(c)
    assert val(m, "ringlane_upstream_requests_total", cluster="b") == 1
    assert sum(codes(m, "web", "r").values()) == 1, codes(m, "web", "r")


def test_client_gone_before_the_response_counted_as_4xx(core, http_backend) -> None:
    """The client sends a request the backend sits on, then resets the connection (a FIN alone
    is a half-close the proxy answers anyway, as HAProxy does): counted once, as 4xx (nginx's
    499, client closed request), in the counter and the histogram."""
    release = threading.Event()
    be = http_backend(lambda req: stall_forever(release))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    conn = Conn(port)
    conn.send(build_request("GET", "/slow"))
    wait_for(lambda: be.count == 1, 5, "the request to reach the backend")
    reset(conn.sock)
    m = wait_metrics(c, lambda m: idle(c) and sum(codes(m, "web", "r").values()) >= 1, "the exchange counted")
    assert codes(m, "web", "r") == {"4xx": 1.0}
    assert val(m, "ringlane_http_request_duration_seconds_count", listener="web", route="r") == 1
    release.set()


def test_histogram_cumulative_count_and_sum(core, http_backend) -> None:
    """Buckets are cumulative and monotone, +Inf equals _count equals the route's
    http_requests_total sum; a 300 ms response is above le=0.25 and within le=0.5; _sum plausible."""
    def app(req):  # type: ignore[no-untyped-def]
        if req.target == "/slow":
            threading.Event().wait(0.3)  # the backend's latency under test
        return Reply(200 if req.target != "/e" else 500, b"x")

    be = http_backend(app)
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    with Conn(port) as conn:
        for _ in range(5):
            assert conn.request("GET", "/fast").status == 200
        assert conn.request("GET", "/e").status == 500
        assert conn.request("GET", "/slow").status == 200
    m = wait_metrics(c, lambda m: codes(m, "web", "r") == {"2xx": 6.0, "5xx": 1.0}, "7 requests")
    bounds = ("0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0",
              "2.5", "5.0", "10.0", "+Inf")
    b = [val(m, "ringlane_http_request_duration_seconds_bucket", listener="web", route="r", le=le) for le in bounds]
    assert b == sorted(b), b
    assert b[-1] == val(m, "ringlane_http_request_duration_seconds_count", listener="web", route="r") == 7
    assert b[bounds.index("0.25")] == 6 and b[bounds.index("0.5")] == 7, b
    s = val(m, "ringlane_http_request_duration_seconds_sum", listener="web", route="r")
    assert 0.3 <= s < 0.3 + 6 * 0.25, s


def test_listener_connection_and_byte_counters_http_and_tcp(core, http_backend, tcp_server) -> None:
    """After every client closed: opened == closed, active == 0 on both listeners; rx/tx equal
    the client-side byte counts exactly (HTTP and a TCP relay of known size)."""
    be = http_backend(lambda req: Reply(200, b"y" * 1000))
    echo = tcp_server(echo_handler)
    hp, tp = free_port(), free_port()
    c = core(config([http_listener(hp, rule("r", "b")), tcp_listener(tp, "e")],
                    [cluster("b", be.address), cluster("e", echo.address)]))
    sent = recv = 0
    for k in range(3):
        with Conn(hp) as conn:
            for i in range(k + 1):
                assert conn.request("GET", f"/{i}", body=b"z" * (100 * i)).status == 200
            sent += conn.sent
            recv += conn.received
    tsent = 0
    for n in (10, 70_000, 1 << 20):
        with socket.create_connection(("127.0.0.1", tp), timeout=5) as s:
            data = os.urandom(n)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
            assert got == data
            tsent += n
    m = wait_metrics(c, lambda m: val(m, "ringlane_tcp_connections_closed_total", listener="web") == 3
                     and val(m, "ringlane_tcp_connections_closed_total", listener="tcp") == 3, "all closed")
    for name, n in (("web", 3), ("tcp", 3)):
        assert val(m, "ringlane_tcp_connections_opened_total", listener=name) == n
        assert val(m, "ringlane_tcp_connections_active", listener=name) == 0
    assert val(m, "ringlane_tcp_rx_bytes_total", listener="web") == sent
    assert val(m, "ringlane_tcp_tx_bytes_total", listener="web") == recv
    assert val(m, "ringlane_tcp_rx_bytes_total", listener="tcp") == tsent
    assert val(m, "ringlane_tcp_tx_bytes_total", listener="tcp") == tsent
    assert val(m, "ringlane_upstream_requests_total", cluster="e") == 3


def test_counters_never_decrease_across_route_and_listener_reloads(core, http_backend) -> None:
    """Remove route b and listener two, then add them back (and a new route c): no series seen
    in two scrapes ever shows a lower value, and the new route c starts at zero."""
    from .conftest import apply_and_wait

    be = http_backend(lambda req: Reply(200, b"ok"))
    p1, p2 = free_port(), free_port()

    def cfg(gen: int, routes: list, two: bool):  # type: ignore[no-untyped-def,type-arg]
        ls = [http_listener(p1, *[rule(n, "b", prefix=f"/{n}") for n in routes])]
        if two:
            ls.append(http_listener(p2, rule("t", "b"), name="two"))
        return config(ls, [cluster("b", be.address)], generation=gen)

    c = core(cfg(1, ["a", "b"], True))
    seen: dict = {}  # type: ignore[type-arg]

    def check() -> dict:  # type: ignore[type-arg]
        m = scrape(c)
        for k, v in m.items():
            if k[0].endswith(("_total", "_bucket", "_count", "_sum")) and k in seen:
                assert v >= seen[k], (k, seen[k], v)
        seen.update(m)
        return m

    for path in ("/a", "/b", "/b", "/zz"):
        assert get(p1, path).status in (200, 404)
    assert get(p2, "/").status == 200
    wait_metrics(c, lambda m: codes(m, "web", "b") == {"2xx": 2.0} and codes(m, "two", "t") == {"2xx": 1.0}, "gen 1")
    check()
    apply_and_wait(c, cfg(2, ["a", "c"], False))
    assert get(p1, "/a").status == 200
    assert get(p1, "/c").status == 200
    wait_for(lambda: idle(c), 5, "clients gone")
    m = check()
    assert codes(m, "web", "c") == {"2xx": 1.0}
    apply_and_wait(c, cfg(3, ["a", "b", "c"], True))
    assert get(p1, "/b").status == 200
    assert get(p2, "/").status == 200
    m = wait_metrics(c, lambda m: codes(m, "two", "t").get("2xx", 0) >= 1 and codes(m, "web", "b").get("2xx", 0) >= 1,
                     "gen 3 counts")
    check()


def test_new_route_on_recycled_slot_does_not_inherit_counts(core, http_backend) -> None:
    """Rule table of 4 slots (route="" of web, a, b, then room for one): b leaves, c arrives on a
    recycled slot; c's series and histogram start at zero, and a's are untouched."""
    from ringlane_sidecar.slots import Slots

    from .conftest import apply_and_wait

    be = http_backend(lambda req: Reply(200, b"ok"))
    port = free_port()
    c = core(cpus=[0])
    c.slots = Slots.new(3)

    def cfg(gen: int, names: list):  # type: ignore[no-untyped-def,type-arg]
        return config([http_listener(port, *[rule(n, "b", prefix=f"/{n}") for n in names])],
                      [cluster("b", be.address)], generation=gen)

    apply_and_wait(c, cfg(1, ["a"]))
    for _ in range(3):
        assert get(port, "/a").status == 200
    wait_metrics(c, lambda m: codes(m, "web", "a") == {"2xx": 3.0}, "a counted")
    apply_and_wait(c, cfg(2, ["x"]))
    wait_for(lambda: c.oldest_seq() >= 2 and idle(c), 5, "gen 1 let go")
    apply_and_wait(c, cfg(3, ["y"]))  # takes a's slot
    m = scrape(c)
    assert codes(m, "web", "y") == {}
    assert val(m, "ringlane_http_request_duration_seconds_count", listener="web", route="y") == 0
    assert get(port, "/y").status == 200
    m = wait_metrics(c, lambda m: codes(m, "web", "y") == {"2xx": 1.0}, "y counted once")
    assert val(m, "ringlane_http_request_duration_seconds_count", listener="web", route="y") == 1


def test_odd_route_names_are_escaped_and_round_trip(core, http_backend) -> None:
    """Route names may hold any printable ASCII: quotes, backslashes, '{', '=' and ',' survive
    the exposition and parse back to the same label value."""
    be = http_backend(lambda req: Reply(200, b"ok"))
    port = free_port()
    odd = 'ns/a"b\\c{d}=e,f g'
    c = core(config([http_listener(port, rule(odd, "b"))], [cluster("b", be.address)]))
    assert get(port, "/").status == 200
    wait_metrics(c, lambda m: codes(m, "web", odd) == {"2xx": 1.0}, "odd route counted")


def test_a_scrape_reads_each_stats_table_in_one_call(core, http_backend) -> None:
    """A scrape made one C call per slot and worker (16,000 for 4,000 rules and clusters on two
    workers); each gives up the GIL, and next to a thread validating a big config each took
    up to a switch interval to get it back: scrapes of seconds, and /healthz waiting behind them
    on the admin loop. Now one call per table, whatever the number of names."""
    be = http_backend(lambda req: Reply(200, b"ok"))
    port = free_port()
    n = 300
    c = core(config([http_listener(port, *[rule(f"r{i}", f"c{i}", prefix=f"/p{i}") for i in range(n)])],
                    [cluster(f"c{i}", be.address) for i in range(n)]))
    assert get(port, "/p7").status == 200
    wait_for(lambda: c.rule_stats()[("web", "r7")]["codes"]["2xx"] == 1, 5, "r7 counted")

    class Counting:
        def __init__(self, lib: object) -> None:
            self.lib, self.calls = lib, 0

        def __getattr__(self, name: str) -> object:
            v = getattr(self.lib, name)
            if not callable(v):
                return v

            def call(*args: object) -> object:
                self.calls += 1
                return v(*args)
            return call

    counting = Counting(c._lib)
    c._lib = counting
    try:
        rules, clusters, listeners = c.rule_stats(), c.cluster_stats(), c.listener_stats()
    finally:
        c._lib = counting.lib
    assert counting.calls <= 3, f"{counting.calls} C calls for one read of the three tables"
    assert len(rules) == n + 1 and len(clusters) == n and set(listeners) == {"web"}
    assert rules[("web", "r7")]["codes"]["2xx"] == 1 and clusters["c7"]["requests"] == 1
    assert listeners["web"]["conns_opened"] >= 1


def test_io_uring_counters_present_for_both_engines(core, engine, http_backend) -> None:
    """The io_uring_* counters are exposed for both engines; submits/enters stay 0 under epoll
    and grow under io_uring."""
    be = http_backend(lambda req: Reply(200, b"ok"))
    port = free_port()
    c = core(config([http_listener(port, rule("r", "b"))], [cluster("b", be.address)]))
    assert get(port, "/").status == 200
    m = scrape(c)
    for name in ("ringlane_io_uring_submits_total", "ringlane_io_uring_enters_total",
                 "ringlane_io_uring_buffer_exhausted_total"):
        assert (name, frozenset()) in m, name
    sub = val(m, "ringlane_io_uring_submits_total")
    if engine == "epoll":
        assert sub == 0 and val(m, "ringlane_io_uring_enters_total") == 0
    else:
        assert sub > 0
