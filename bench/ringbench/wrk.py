"""The closed-loop load generator: wrk (Debian), its command line, and its output parsed."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ringbench.net import HOST
from ringbench.placement import taskset

REPORT_LUA = Path(__file__).resolve().parent.parent / "wrk" / "report.lua"
MARK = "RINGBENCH-WRK "


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    rps_text: float | None = None        # wrk's own "Requests/sec:" line, as a cross-check
    problems: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def argv(cpus: tuple[int, ...], port: int, path: str, connections: int, threads: int, duration_s: float,
         close: bool = False, timeout_s: int = 5) -> list[str]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", f"--timeout={timeout_s}s",
           "-s", str(REPORT_LUA)]
    if close:
        cmd += ["-H", "Connection: close"]
    return taskset(cpus, [*cmd, f"http://{HOST}:{port}{path}"])


def parse(stdout: str) -> WrkResult:
    """wrk's output -> WrkResult. Raises ValueError when the report line is missing."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARK)), None)
    if line is None:
        raise ValueError(f"wrk printed no {MARK.strip()} line:\n{stdout[-2000:]}")
    data = json.loads(line[len(MARK):])
    result = WrkResult(
        requests=int(data["requests"]),
        duration_s=float(data["duration_us"]) / 1e6,
        bytes=int(data["bytes"]),
        errors={k: int(v) for k, v in data["errors"].items()},
        latency_us={k: float(v) for k, v in data["latency_us"].items()},
    )
    m = re.search(r"^Requests/sec:\s+([\d.]+)", stdout, re.M)
    if m:
        result.rps_text = float(m.group(1))
        if result.rps > 0 and abs(result.rps_text - result.rps) / result.rps > 0.01:
            result.problems.append(f"wrk's Requests/sec {result.rps_text} disagrees with {result.rps:.1f}")
    if result.requests == 0:
        result.problems.append("zero requests completed")
    bad = {k: v for k, v in result.errors.items() if v}
    if bad:
        result.problems.append("wrk errors: " + ", ".join(f"{k}={v}" for k, v in bad.items()))
    return result
