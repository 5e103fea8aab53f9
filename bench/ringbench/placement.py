"""Where each process runs: the CPU placements, pinned explicitly with taskset / CPU lists."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    name: str
    description: str
    loadgen_cpus: tuple[int, ...]
    backend_cpus: tuple[int, ...]   # the backend's single nginx worker
    proxy_cpus: tuple[int, ...]     # one proxy worker per CPU listed
    loadgen_threads: int

    @property
    def workers(self) -> int:
        return len(self.proxy_cpus)

    def loadgen_key(self) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """Placements with equal keys give the same "direct" (no proxy) numbers."""
        return self.loadgen_cpus, self.backend_cpus, self.loadgen_threads


PLACEMENTS: dict[str, Placement] = {
    p.name: p
    for p in (
        Placement("split", "load generator + backend on CPU0, proxy on CPU1", (0,), (0,), (1,), 1),
        Placement("colocated", "load generator, backend and proxy all on CPU0", (0,), (0,), (0,), 1),
        Placement("two-workers", "proxy with 2 workers on CPUs 0,1; load generator (2 threads) on CPUs 0,1; "
                  "backend on CPU0", (0, 1), (0,), (0, 1), 2),
    )
}


def cpu_list(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def taskset(cpus: tuple[int, ...], argv: list[str]) -> list[str]:
    """argv pinned to cpus; taskset execs the program, so the pid stays the program's."""
    return ["taskset", "-c", cpu_list(cpus), *argv]


def nginx_affinity(cpus: tuple[int, ...]) -> str:
    """worker_cpu_affinity value: one bit mask per worker, CPU0 the rightmost bit."""
    width = max(cpus) + 1
    return " ".join(format(1 << c, f"0{width}b") for c in cpus)


def missing_cpus(placement: Placement) -> list[int]:
    """CPUs the placement uses that this process may not run on (empty when it fits)."""
    allowed = os.sched_getaffinity(0)
    used = set(placement.loadgen_cpus) | set(placement.backend_cpus) | set(placement.proxy_cpus)
    return sorted(used - allowed)
