"""The open-loop load generator (bench/loadgen/loadgen.c): its command line and its JSON."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ringbench.net import HOST
from ringbench.placement import taskset


@dataclass
class OpenLoopResult:
    target_rate: float
    achieved_rate: float
    scheduled: int
    completed_ok: int
    unsent: int          # due but never sent: the peer fell behind the schedule
    unfinished: int      # sent but unanswered at the end
    timeouts: int
    errors: dict[str, int]
    latency_us: dict[str, float]   # from the INTENDED send time (corrected for coordinated omission)
    service_us: dict[str, float]   # from the actual send time

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + self.timeouts

    def problems(self) -> list[str]:
        out: list[str] = []
        bad = {k: v for k, v in self.errors.items() if v}
        if bad:
            out.append("errors: " + ", ".join(f"{k}={v}" for k, v in bad.items()))
        if self.timeouts:
            out.append(f"timeouts={self.timeouts}")
        if self.completed_ok == 0:
            out.append("zero requests completed")
        return out

    def saturated(self) -> bool:
        """The peer could not keep up: requests were left unsent or unanswered (>0.1%)."""
        return (self.unsent + self.unfinished) > 0.001 * max(self.scheduled, 1)


def argv(binary: Path, cpus: tuple[int, ...], port: int, path: str, connections: int, rate: float,
         duration_s: float, warmup_s: float, timeout_ms: int = 2000) -> list[str]:
    return taskset(cpus, [str(binary), "--host", HOST, "--port", str(port), "--path", path,
                          "--connections", str(connections), "--rate", f"{rate:.1f}",
                          "--duration", f"{duration_s:g}", "--warmup", f"{warmup_s:g}",
                          "--timeout-ms", str(timeout_ms)])


def parse(stdout: str) -> OpenLoopResult:
    data = json.loads(stdout.strip().splitlines()[-1])
    return OpenLoopResult(
        target_rate=float(data["target_rate"]), achieved_rate=float(data["achieved_rate"]),
        scheduled=int(data["scheduled"]), completed_ok=int(data["completed_ok"]), unsent=int(data["unsent"]),
        unfinished=int(data["unfinished"]), timeouts=int(data["timeouts"]),
        errors={k: int(v) for k, v in data["errors"].items()},
        latency_us={k: float(v) for k, v in data["latency_us"].items()},
        service_us={k: float(v) for k, v in data["service_us"].items()},
    )
