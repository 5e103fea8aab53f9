"""The results model (what the runner records, the report and the plots read) and its JSON form."""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

NOISY_LOAD = 0.5   # a run that starts with a 1-minute load average above this is marked noisy


@dataclass(frozen=True)
class Stat:
    median: float
    lo: float
    hi: float

    @staticmethod
    def of(values: list[float]) -> Stat | None:
        return Stat(statistics.median(values), min(values), max(values)) if values else None


@dataclass
class Sample:
    """One closed-loop run of one peer."""

    repeat: int
    load1: float               # /proc/loadavg before the run
    requests: int
    duration_s: float
    rps: float
    bytes_per_s: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    proxy_cpu_s: float         # all threads of all the peer's processes
    backend_cpu_s: float
    loadgen_cpu_s: float
    other_cpu_s: float         # machine CPU time not used by the benchmark's processes (noise)
    proxy_rss_kib: int
    problems: list[str] = field(default_factory=list)

    @property
    def noisy(self) -> bool:
        return self.load1 > NOISY_LOAD

    @property
    def cpu_us_per_req(self) -> float | None:
        return self.proxy_cpu_s / self.requests * 1e6 if self.requests and self.proxy_cpu_s > 0 else None

    @property
    def other_cpu_pct(self) -> float:
        """Foreign CPU use during the run, in % of one CPU."""
        return self.other_cpu_s / self.duration_s * 100 if self.duration_s > 0 else 0.0

    @property
    def backend_us_per_req(self) -> float | None:
        return self.backend_cpu_s / self.requests * 1e6 if self.requests else None


@dataclass
class PeerCell:
    peer: str
    samples: list[Sample] = field(default_factory=list)
    skipped: str = ""          # why there are no samples
    reused_from: str = ""      # "direct" measured once for placements with the same load generator CPUs
    note: str = ""

    def stat(self, metric: str) -> Stat | None:
        values: list[float] = []
        for s in self.samples:
            v = s.latency_us.get(metric[len("lat_"):]) if metric.startswith("lat_") else getattr(s, metric)
            if v is not None:
                values.append(float(v))
        return Stat.of(values)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for metric in ("rps", "bytes_per_s", "cpu_us_per_req", "backend_us_per_req", "lat_p50", "lat_p99",
                       "lat_p999", "proxy_rss_kib", "other_cpu_pct"):
            st = self.stat(metric)
            out[metric] = asdict(st) if st else None
        out["runs"] = len(self.samples)
        out["noisy_runs"] = sum(s.noisy for s in self.samples)
        out["errors"] = sum(sum(s.errors.values()) for s in self.samples)
        return out


@dataclass
class CellResult:
    placement: str
    workload: str
    title: str
    bulk: bool
    peers: dict[str, PeerCell] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.placement}/{self.workload}"


@dataclass
class OpenLoopPoint:
    peer: str
    fraction: float
    rate: float
    load1: float
    achieved_rate: float
    latency_us: dict[str, float]
    service_us: dict[str, float]
    errors: int
    unsent: int
    unfinished: int
    saturated: bool
    proxy_cpu_s: float
    problems: list[str] = field(default_factory=list)
    repeat: int = 0

    @property
    def noisy(self) -> bool:
        return self.load1 > NOISY_LOAD


@dataclass(frozen=True)
class OpenLoopMedian:
    """One peer at one offered rate: medians over the repeats."""

    peer: str
    fraction: float
    rate: float
    achieved_rate: float
    p50: float
    p99: Stat
    p999: float
    errors: int
    unsent: int
    saturated: bool
    runs: int
    noisy_runs: int


@dataclass
class OpenLoop:
    placement: str
    workload: str
    base_peer: str = ""        # the slowest proxy, whose max sets the rates
    base_rps: float = 0.0
    points: list[OpenLoopPoint] = field(default_factory=list)
    skipped: str = ""

    def medians(self) -> list[OpenLoopMedian]:
        groups: dict[tuple[float, str], list[OpenLoopPoint]] = {}
        for p in self.points:
            groups.setdefault((p.fraction, p.peer), []).append(p)
        out: list[OpenLoopMedian] = []
        for (fraction, peer), pts in sorted(groups.items()):
            p99 = Stat.of([p.latency_us["p99"] for p in pts])
            assert p99 is not None
            out.append(OpenLoopMedian(
                peer, fraction, pts[0].rate, statistics.median(p.achieved_rate for p in pts),
                statistics.median(p.latency_us["p50"] for p in pts), p99,
                statistics.median(p.latency_us["p999"] for p in pts), sum(p.errors for p in pts),
                sum(p.unsent for p in pts), any(p.saturated for p in pts), len(pts), sum(p.noisy for p in pts)))
        return out


@dataclass
class Idle:
    peer: str
    connections: int
    opened: int
    rss_before_kib: int
    rss_after_kib: int
    bytes_per_conn: float
    seconds_to_open: float
    problem: str = ""
    note: str = ""


@dataclass
class Target:
    name: str
    ratio: float | None        # measured / reference (or bytes for the memory target)
    limit: float
    passed: bool | None        # None: not measured in this run
    detail: str = ""


@dataclass
class Results:
    meta: dict[str, Any]
    cells: list[CellResult] = field(default_factory=list)
    openloop: OpenLoop | None = None
    idle: list[Idle] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def cell(self, placement: str, workload: str) -> CellResult | None:
        return next((c for c in self.cells if c.placement == placement and c.workload == workload), None)

    def to_json(self) -> dict[str, Any]:
        def sample(s: Sample) -> dict[str, Any]:
            d = asdict(s)
            d.update(noisy=s.noisy, cpu_us_per_req=s.cpu_us_per_req, backend_us_per_req=s.backend_us_per_req,
                     other_cpu_pct=s.other_cpu_pct)
            return d

        cells = [{
            "placement": c.placement, "workload": c.workload, "title": c.title, "bulk": c.bulk,
            "peers": {name: {"peer": pc.peer, "skipped": pc.skipped, "reused_from": pc.reused_from,
                             "note": pc.note, "summary": pc.summary(),
                             "samples": [sample(s) for s in pc.samples]}
                      for name, pc in c.peers.items()},
        } for c in self.cells]
        openloop = None
        if self.openloop is not None:
            openloop = asdict(self.openloop)
            for p, obj in zip(openloop["points"], self.openloop.points, strict=True):
                p["noisy"] = obj.noisy
            openloop["medians"] = [asdict(m) for m in self.openloop.medians()]
        return {"meta": self.meta, "cells": cells, "openloop": openloop,
                "idle": [asdict(i) for i in self.idle], "targets": [asdict(t) for t in self.targets],
                "failures": self.failures}
