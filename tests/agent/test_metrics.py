"""/metrics of the real sidecar: exact counters against what a raw-socket client did, the
exposition format (TYPE and HELP), and a real Prometheus scraping and answering PromQL."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest

from .conftest import Nginx, Prometheus, Sidecar, SidecarFactory
from .util import RawClient, free_port, http_config, metadata, parse_samples, sample, sample_sum, wait_for

N, M, K = 7, 3, 2  # 2xx on route r1, 404 (no route), 503 (cluster without endpoints)

EXPECTED_TYPES = {
    "ringlane_http_requests_total": "counter",
    "ringlane_http_request_duration_seconds": "histogram",
    "ringlane_tcp_connections_opened_total": "counter",
    "ringlane_tcp_connections_closed_total": "counter",
    "ringlane_tcp_connections_active": "gauge",
    "ringlane_tcp_rx_bytes_total": "counter",
    "ringlane_tcp_tx_bytes_total": "counter",
    "ringlane_upstream_connect_errors_total": "counter",
    "ringlane_upstream_requests_total": "counter",
    "ringlane_upstream_requests_active": "gauge",
    "ringlane_config_generation": "gauge",
    "ringlane_config_reloads_total": "counter",
    "ringlane_engine_info": "gauge",
    "ringlane_io_uring_submits_total": "counter",
    "ringlane_io_uring_enters_total": "counter",
    "ringlane_io_uring_buffer_exhausted_total": "counter",
}


@dataclass
class Sent:
    bytes_sent: int
    bytes_received: int
    connections: int


def start(sidecar: SidecarFactory, nginx: Nginx, engine: str, admin: int | None = None) -> Sidecar:
    listen, admin = free_port(), admin or free_port()
    cfg = http_config(listen, admin, routes=[("r1", "/r1", "a"), ("r-empty", "/empty", "none")],
                      clusters={"a": [nginx.a], "none": []}, generation=3)
    return sidecar(cfg, args=["--engine", engine], admin_port=admin, listen_port=listen)


def send_known_traffic(sc: Sidecar) -> Sent:
    """N requests to r1 on one keep-alive connection, M unrouted on another, K to the empty
    cluster on one connection each (Connection: close). Every byte is counted client-side."""
    assert sc.listen_port
    clients = []
    ka = RawClient(sc.listen_port)
    clients.append(ka)
    for i in range(N):
        r = ka.request(f"/r1/item-{i}")
        assert (r.status, r.body) == (200, f"backend-a /r1/item-{i}\n".encode()), (r.status, r.body)
    nr = RawClient(sc.listen_port)
    clients.append(nr)
    for i in range(M):
        r = nr.request(f"/no-such-route/{i}")
        assert r.status == 404, (r.status, r.body)
    for i in range(K):
        c = RawClient(sc.listen_port)
        clients.append(c)
        r = c.request(f"/empty/{i}", close=True)
        assert r.status == 503, (r.status, r.body)
    for c in clients:
        c.close_and_drain()
    return Sent(sum(c.sent for c in clients), sum(c.received for c in clients), len(clients))


def check_exact(sc: Sidecar, sent: Sent) -> None:
    # Connections are closed on both sides once close_and_drain returned, but the proxy's
    # close bookkeeping may trail the socket by a loop turn: wait for it, then compare exactly.
    def settled() -> bool:
        s = parse_samples(sc.metrics_text())
        return sample(s, "ringlane_tcp_connections_closed_total", listener="web") == sent.connections

    wait_for(settled, 5, "every client connection to be counted as closed")
    s = parse_samples(sc.metrics_text())
    req = "ringlane_http_requests_total"
    assert sample(s, req, listener="web", route="r1", code="2xx") == N
    assert sample(s, req, listener="web", route="", code="4xx") == M
    assert sample(s, req, listener="web", route="r-empty", code="5xx") == K
    assert sample_sum(s, req) == N + M + K, {k: v for k, v in s.items() if k[0] == req}

    assert sample(s, "ringlane_tcp_rx_bytes_total", listener="web") == sent.bytes_sent
    assert sample(s, "ringlane_tcp_tx_bytes_total", listener="web") == sent.bytes_received
    assert sample(s, "ringlane_tcp_connections_opened_total", listener="web") == sent.connections
    assert sample(s, "ringlane_tcp_connections_active", listener="web") == 0

    assert sample(s, "ringlane_upstream_requests_total", cluster="a") == N
    assert sample(s, "ringlane_upstream_connect_errors_total", cluster="a") == 0
    assert sample(s, "ringlane_upstream_requests_total", cluster="none") == 0
    assert sample(s, "ringlane_upstream_requests_active", cluster="a") == 0  # nothing left in flight

    hist = "ringlane_http_request_duration_seconds"
    for route, n in (("r1", N), ("", M), ("r-empty", K)):
        assert sample(s, hist + "_count", listener="web", route=route) == n, route
        assert sample(s, hist + "_bucket", listener="web", route=route, le="+Inf") == n, route
        total = sample(s, hist + "_sum", listener="web", route=route)
        assert total is not None and 0 < total < 5 * n, (route, total)
        buckets = sorted(((float(dict(ls)["le"]), v) for (name, ls), v in s.items()
                          if name == hist + "_bucket" and dict(ls)["route"] == route), key=lambda x: x[0])
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and math.isinf(buckets[-1][0]), buckets  # cumulative

    assert sample(s, "ringlane_config_generation") == 3
    assert sample(s, "ringlane_config_reloads_total", result="success") == 1
    assert sample(s, "ringlane_config_reloads_total", result="error") == 0


def check_format(sc: Sidecar, engine: str) -> None:
    text = sc.metrics_text()
    types, helps = metadata(text)
    for name, typ in EXPECTED_TYPES.items():
        assert types.get(name) == typ, f"{name}: TYPE {types.get(name)!r}, want {typ!r}"
        assert name in helps, f"{name} has no HELP line"
    s = parse_samples(text)
    info = [dict(ls) for (name, ls), v in s.items() if name == "ringlane_engine_info" and v == 1]
    assert len(info) == 1 and info[0]["engine"] == engine, info
    assert info[0]["kernel"] and info[0]["reason"], info
    cfg = sc.config()
    assert (cfg["engine"], cfg["engine_reason"], cfg["kernel"]) == (engine, info[0]["reason"], info[0]["kernel"])
    submits = sample(s, "ringlane_io_uring_submits_total")
    enters = sample(s, "ringlane_io_uring_enters_total")
    if engine == "io_uring":
        assert submits and enters and submits > 0 and enters > 0, (submits, enters)
    else:
        assert submits == 0 and enters == 0, (submits, enters)


@pytest.mark.parametrize("engine", ["io_uring", "epoll"])
def test_counters_match_the_client_exactly(sidecar: SidecarFactory, nginx: Nginx, engine: str) -> None:
    sc = start(sidecar, nginx, engine)
    sent = send_known_traffic(sc)
    check_exact(sc, sent)
    check_format(sc, engine)
    # Scrapes do not change what they report (the admin port is not a data-plane listener).
    first = parse_samples(sc.metrics_text())
    again = parse_samples(sc.metrics_text())
    keep = ("ringlane_http_requests_total", "ringlane_tcp_rx_bytes_total", "ringlane_tcp_tx_bytes_total")
    assert {k: v for k, v in first.items() if k[0] in keep} == {k: v for k, v in again.items() if k[0] in keep}


def test_real_prometheus_scrapes_and_answers_promql(
        sidecar: SidecarFactory, nginx: Nginx, prometheus: Callable[[str], Prometheus]) -> None:
    admin = free_port()
    prom = prometheus(f"127.0.0.1:{admin}")  # starts now; it picks up targets after ~5 s
    sc = start(sidecar, nginx, "auto", admin=admin)
    sent = send_known_traffic(sc)
    check_exact(sc, sent)

    def target_up() -> dict[str, object] | None:
        ts = [t for t in prom.targets() if t["scrapeUrl"] == f"http://127.0.0.1:{admin}/metrics"]
        return ts[0] if ts and ts[0]["health"] == "up" else None

    target = wait_for(target_up, 20, lambda: f"Prometheus target up\n{prom.log_path.read_text()}", interval=0.2)
    assert target["lastError"] == "", target

    def value(promql: str) -> float | None:
        res = prom.query(promql)
        return float(res[0]["value"][1]) if len(res) == 1 else None

    wait_for(lambda: value('sum(ringlane_http_requests_total{route="r1"})') == N, 10,
             "PromQL r1 request count", interval=0.2)
    assert value('sum(ringlane_http_requests_total{route="r1"})') == N
    assert value('sum(ringlane_http_requests_total{code="4xx"})') == M
    assert value('sum(ringlane_http_requests_total{code="5xx"})') == K
    assert value('ringlane_tcp_rx_bytes_total{listener="web"}') == sent.bytes_sent
    assert value('histogram_quantile(0.5, sum by (le) (ringlane_http_request_duration_seconds_bucket'
                 '{route="r1"}))') is not None
    engines = prom.query("ringlane_engine_info")
    assert len(engines) == 1 and engines[0]["metric"]["engine"] == sc.config()["engine"], engines
