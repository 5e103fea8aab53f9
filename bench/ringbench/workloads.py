"""What to measure: workloads, cells (placement x workload), and the quick and full plans."""
from __future__ import annotations

from dataclasses import dataclass, field

from ringbench.configs import PATH_1K, PATH_1M, PATH_12
from ringbench.peers import PEERS
from ringbench.placement import PLACEMENTS, Placement


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    path: str
    connections: int
    close: bool = False    # wrk -H "Connection: close": one request per connection
    l4: bool = False       # through the proxy's TCP listener instead of its HTTP one
    bulk: bool = False     # report GB/s

    def direct_key(self) -> tuple[str, int, bool]:
        """Workloads with equal keys are the same thing when there is no proxy (L4 == HTTP)."""
        return self.path, self.connections, self.close


WORKLOADS: dict[str, Workload] = {
    w.key: w
    for w in (
        *(Workload(f"ka-12B-c{c}", f"keep-alive GET 12 B, {c} conns", PATH_12, c) for c in (10, 50, 200)),
        *(Workload(f"ka-1KiB-c{c}", f"keep-alive GET 1 KiB, {c} conns", PATH_1K, c) for c in (10, 50, 200)),
        Workload("close-12B-c50", "Connection: close GET 12 B, 50 conns", PATH_12, 50, close=True),
        Workload("bulk-1MiB-c4", "GET 1 MiB file, 4 conns", PATH_1M, 4, bulk=True),
        Workload("l4-12B-c50", "L4 TCP relay, keep-alive GET 12 B, 50 conns", PATH_12, 50, l4=True),
    )
}

# The cell every target is judged on, and where the open-loop latency sweep runs.
KEY_WORKLOAD = "ka-12B-c50"


@dataclass(frozen=True)
class Cell:
    placement: Placement
    workload: Workload

    @property
    def key(self) -> str:
        return f"{self.placement.name}/{self.workload.key}"


@dataclass
class Plan:
    mode: str
    cells: list[Cell]
    peers: list[str]
    duration_s: float
    warmup_s: float
    repeats: int
    openloop_placement: str | None       # None: no open-loop sweep
    openloop_fractions: list[float]      # of the slowest proxy's max throughput
    openloop_duration_s: float
    openloop_warmup_s: float
    openloop_repeats: int                # per rate and peer; the report takes medians
    idle_connections: int                # 0: no idle-memory test
    idle_placement: str = "split"
    notes: list[str] = field(default_factory=list)


def cells(spec: dict[str, list[str]]) -> list[Cell]:
    return [Cell(PLACEMENTS[p], WORKLOADS[w]) for p, ws in spec.items() for w in ws]


def quick_plan() -> Plan:
    """About a minute: a smoke test that the harness works and Ringlane is functional under load."""
    return Plan(
        mode="quick",
        cells=cells({"split": [KEY_WORKLOAD], "colocated": [KEY_WORKLOAD]}),
        peers=list(PEERS),
        duration_s=3, warmup_s=1, repeats=1,
        openloop_placement="split", openloop_fractions=[0.5], openloop_duration_s=3, openloop_warmup_s=0.5,
        openloop_repeats=1, idle_connections=1000,
    )


def full_plan() -> Plan:
    return Plan(
        mode="full",
        cells=cells({
            "split": [*(f"ka-12B-c{c}" for c in (10, 50, 200)), *(f"ka-1KiB-c{c}" for c in (10, 50, 200)),
                      "close-12B-c50", "bulk-1MiB-c4", "l4-12B-c50"],
            "colocated": [KEY_WORKLOAD],
            "two-workers": [KEY_WORKLOAD],
        }),
        peers=list(PEERS),
        duration_s=10, warmup_s=2, repeats=3,
        openloop_placement="split", openloop_fractions=[f / 10 for f in range(1, 10)],
        openloop_duration_s=3, openloop_warmup_s=0.5, openloop_repeats=3,
        idle_connections=10000,
    )
