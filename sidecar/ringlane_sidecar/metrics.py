"""Prometheus metrics: a custom collector that reads the C core's per-worker stats on scrape.

Nothing is counted in Python on the data path: every scrape sums the workers' counters.
"""
from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ringlane_sidecar.core import Core

# Upper bounds of the C histogram buckets (rl_stats.h RL_HIST_BOUNDS_NS), in seconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))


class AgentState:
    """What the agent knows that the core does not (reloads, engine choice)."""

    def __init__(self, engine: str, kernel: str, reason: str) -> None:
        self.engine, self.kernel, self.reason = engine, kernel, reason
        self.generation = 0
        self.reloads = {"success": 0, "error": 0}


def _bucket_pairs(counts: list[int]) -> list[tuple[str, float]]:
    out, acc = [], 0
    for bound, n in zip(BUCKETS, counts):
        acc += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), float(acc)))
    return out


class CoreCollector(Collector):
    def __init__(self, core: Callable[[], Core | None], state: AgentState) -> None:
        self._core = core
        self._state = state

    def collect(self) -> Iterator[Metric]:
        st = self._state
        info = InfoMetricFamily("ringlane_engine", "Engine serving traffic, and the kernel it runs on.",
                                labels=("engine", "kernel"))
        info.add_metric((st.engine, st.kernel), {"reason": st.reason})
        yield info
        gen = GaugeMetricFamily("ringlane_config_generation", "Generation of the config the workers serve.")
        gen.add_metric((), st.generation)
        yield gen
        reloads = CounterMetricFamily("ringlane_config_reloads", "Config reloads by result.", labels=("result",))
        for result, n in sorted(st.reloads.items()):
            reloads.add_metric((result,), n)
        yield reloads
        core = self._core()
        if core is None:
            return
        yield from self._http(core)
        yield from self._tcp(core)
        yield from self._upstream(core)
        yield from self._engine(core)

    def _http(self, core: Core) -> Iterator[Metric]:
        reqs = CounterMetricFamily("ringlane_http_requests",
                                   "HTTP requests by code class (a client gone mid-response counts as that "
                                   "response; before any, as 4xx: nginx's 499).",
                                   labels=("listener", "route", "code"))
        dur = HistogramMetricFamily("ringlane_http_request_duration_seconds",
                                    "Time from the first byte of a request to its response being queued.",
                                    labels=("listener", "route"))
        for (listener, route), s in sorted(core.rule_stats().items()):
            codes = s["codes"]
            assert isinstance(codes, dict)
            for code, n in codes.items():
                if n:
                    reqs.add_metric((listener, route, code), n)
            buckets = s["buckets"]
            assert isinstance(buckets, list)
            if sum(buckets):
                sum_ns = s["sum_ns"]
                assert isinstance(sum_ns, int)
                dur.add_metric((listener, route), _bucket_pairs(buckets), sum_ns / 1e9)
        yield reqs
        yield dur

    def _tcp(self, core: Core) -> Iterator[Metric]:
        opened = CounterMetricFamily("ringlane_tcp_connections_opened", "Client connections accepted.",
                                     labels=("listener",))
        closed = CounterMetricFamily("ringlane_tcp_connections_closed", "Client connections closed.",
                                     labels=("listener",))
        active = GaugeMetricFamily("ringlane_tcp_connections_active", "Client connections open now.",
                                   labels=("listener",))
        rx = CounterMetricFamily("ringlane_tcp_rx_bytes", "Bytes received from clients.", labels=("listener",))
        tx = CounterMetricFamily("ringlane_tcp_tx_bytes", "Bytes sent to clients.", labels=("listener",))
        for name, s in sorted(core.listener_stats().items()):
            opened.add_metric((name,), s["conns_opened"])
            closed.add_metric((name,), s["conns_closed"])
            active.add_metric((name,), s["conns_opened"] - s["conns_closed"])
            rx.add_metric((name,), s["rx_bytes"])
            tx.add_metric((name,), s["tx_bytes"])
        yield from (opened, closed, active, rx, tx)

    def _upstream(self, core: Core) -> Iterator[Metric]:
        errs = CounterMetricFamily("ringlane_upstream_connect_errors", "Failed upstream connects.",
                                   labels=("cluster",))
        reqs = CounterMetricFamily("ringlane_upstream_requests", "Requests (or TCP sessions) sent upstream.",
                                   labels=("cluster",))
        active = GaugeMetricFamily("ringlane_upstream_requests_active",
                                   "Requests (or TCP sessions) in flight to the cluster now.", labels=("cluster",))
        for name, s in sorted(core.cluster_stats().items()):
            errs.add_metric((name,), s["connect_errors"])
            reqs.add_metric((name,), s["requests"])
            active.add_metric((name,), s["active"])
        yield errs
        yield reqs
        yield active

    def _engine(self, core: Core) -> Iterator[Metric]:
        totals = list(core.totals())
        for name, attr, help_ in (
            ("ringlane_io_uring_submits", "uring_submits", "SQEs submitted to io_uring."),
            ("ringlane_io_uring_enters", "uring_enters", "io_uring_enter system calls."),
            ("ringlane_io_uring_buffer_exhausted", "uring_buf_exhausted",
             "Receives that found no free buffer (provided-buffer ring or epoll pool)."),
        ):
            m = CounterMetricFamily(name, help_)
            m.add_metric((), sum(getattr(t, attr) for t in totals))
            yield m
