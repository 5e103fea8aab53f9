"""CPU and memory accounting from /proc: per-process-tree CPU time, VmRSS, load average."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(text: str) -> list[str]:
    """Fields of a /proc stat line after the command name (which may hold spaces and parens)."""
    return text[text.rindex(")") + 2:].split()


def parent_of(pid: int) -> int | None:
    try:
        return int(_stat_fields((PROC / str(pid) / "stat").read_text())[1])
    except (OSError, ValueError, IndexError):
        return None


def process_tree(root: int) -> list[int]:
    """root and all its living descendants (e.g. an nginx master and its workers)."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            ppid = parent_of(int(entry.name))
            if ppid is not None:
                parents[int(entry.name)] = ppid
    if root not in parents:
        return []
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree.extend(frontier)
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime summed over every thread (/proc/<pid>/task/*/stat) of every pid."""
    ticks = 0
    for pid in pids:
        try:
            tasks = list((PROC / str(pid) / "task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                fields = _stat_fields((task / "stat").read_text())
            except OSError:
                continue  # the thread exited between listing and reading
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / CLK_TCK


def rss_kib(pids: list[int]) -> int:
    """VmRSS summed over pids, in KiB (shared pages count once per process)."""
    total = 0
    for pid in pids:
        try:
            for line in (PROC / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def loadavg() -> float:
    """The 1-minute load average."""
    return float((PROC / "loadavg").read_text().split()[0])


def busy_seconds() -> float:
    """CPU time all CPUs spent running tasks (user, nice, system), from /proc/stat."""
    fields = (PROC / "stat").read_text().splitlines()[0].split()
    user, nice, system = (int(v) for v in fields[1:4])
    return (user + nice + system) / CLK_TCK


@dataclass
class CpuSnapshot:
    """CPU seconds of named process groups, and of the whole machine, at one instant."""

    groups: dict[str, float]
    machine: float

    @staticmethod
    def take(groups: dict[str, list[int]]) -> CpuSnapshot:
        return CpuSnapshot({name: cpu_seconds(pids) for name, pids in groups.items()}, busy_seconds())

    def since(self, before: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot({k: v - before.groups.get(k, 0.0) for k, v in self.groups.items()},
                           self.machine - before.machine)
