#!/usr/bin/env python3
"""CPU profiles of proxies under the 12 B / 50-connection keep-alive load, and where their CPU
goes.

  bench/profile.py [--peers ringlane-io_uring ringlane-epoll nginx] [--seconds 8] [--placement split]

For each peer in turn: starts the backend and the peer pinned as in the placement (split or
colocated), drives it with wrk, and records `perf record -e cpu-clock -g` of the peer's processes (no PMU
is needed), one sample per 100 us of CPU. Prints each peer's top symbols, then one table: CPU
microseconds per request in each bucket (TCP/IP work, the I/O interface, user space; see
ringbench/cpubuckets.py). perf slows the peers, so the absolute numbers run higher than in
run.py; compare the peers with each other. perf.data files stay in bench/build/profile-<stamp>/.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ringbench import cpubuckets, wrk  # noqa: E402
from ringbench.configs import PATH_12  # noqa: E402
from ringbench.peers import PROXIES, Running, Tools, find_tools, start_backend, start_peer  # noqa: E402
from ringbench.placement import PLACEMENTS, Placement, taskset  # noqa: E402
from ringbench.procs import StartError, Supervisor, install_signal_handlers  # noqa: E402
from ringbench.runner import stamp  # noqa: E402

BENCH = Path(__file__).resolve().parent


def perf_report(data: Path, sort: str, limit: int) -> list[tuple[float, str]]:
    out = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio", "--sort", sort,
                          "-g", "none", "--percent-limit", "0.3"], capture_output=True, text=True, check=True).stdout
    rows: list[tuple[float, str]] = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2)))
    return rows[:limit]


PERIOD_US = 100  # perf's fixed sampling period, in microseconds of CPU


def record(sup: Supervisor, tools: Tools, out_dir: Path, backend: Running, peer_name: str, seconds: float,
           placement: Placement) -> tuple[Path, float]:
    """perf.data of the peer under load, and the requests completed while perf recorded."""
    data = out_dir / f"{peer_name}.perf.data"
    peer = start_peer(sup, tools, out_dir, placement, peer_name, backend.http_port)
    try:
        pids = ",".join(str(pid) for pid in peer.pids())
        loadgen = sup.spawn(f"wrk-{peer_name}", wrk.argv(placement.loadgen_cpus, peer.http_port, PATH_12, 50, 1,
                                                          seconds + 2))
        # perf's own duration: the `sleep` bounds the recording, it synchronises nothing
        perf = sup.run(taskset(placement.loadgen_cpus, ["perf", "record", "-e", "cpu-clock", "-c", str(PERIOD_US * 1000), "-g", "-p", pids,
                                                        "-o", str(data), "--", "sleep", f"{seconds:g}"]),
                       timeout_s=seconds + 30)
        if perf.returncode != 0:
            raise StartError(f"perf record failed for {peer_name}: {perf.stderr.strip()[-300:]}")
        loadgen.popen.wait(timeout=30)
        res = wrk.parse(Path(loadgen.log).read_text() if loadgen.log else "")
        print(f"\n== {peer_name}, {placement.name}, keep-alive GET 12 B, 50 connections: {res.rps:.0f} req/s under perf "
              f"(wrk errors: {res.error_count})")
    finally:
        sup.stop(peer.child)
    for pct, sym in perf_report(data, "sym", 12):
        print(f"  {pct:5.1f}%  {sym}")
    return data, res.rps * seconds  # wrk runs steadily around perf's window


def buckets_table(found: dict[str, tuple[cpubuckets.Buckets, float]]) -> None:
    names = list(found)
    us = {n: cpubuckets.per_request_us(b, PERIOD_US, reqs) for n, (b, reqs) in found.items()}
    rows = sorted({k for u in us.values() for k in u if k != "total"}, key=lambda k: -max(u.get(k, 0.0) for u in us.values()))
    print("\nwhere the CPU goes, microseconds per request (under perf):\n")
    print(f"  {'bucket':44s}" + "".join(f"{n:>20s}" for n in names))
    for k in rows + ["total"]:
        print(f"  {k:44s}" + "".join(f"{us[n].get(k, 0.0):20.2f}" for n in names))
    ref = next((n for n in names if not n.startswith("ringlane")), None)
    if ref and us[ref].get("total"):
        print(f"\n  total x {ref}: " + ", ".join(f"{n} {us[n].get('total', 0.0) / us[ref]['total']:.2f}x" for n in names))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", nargs="+", choices=PROXIES, default=["ringlane-io_uring", "ringlane-epoll", "nginx"])
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--placement", choices=("split", "colocated"), default="split")
    args = p.parse_args(argv)
    install_signal_handlers()
    out_dir = BENCH / "build" / f"profile-{stamp()}"
    out_dir.mkdir(parents=True)
    sup = Supervisor(out_dir / "logs")
    found: dict[str, tuple[cpubuckets.Buckets, float]] = {}
    try:
        tools = find_tools(BENCH.parent)
        placement = PLACEMENTS[args.placement]
        backend = start_backend(sup, out_dir, placement)
        for name in args.peers:
            data, requests = record(sup, tools, out_dir, backend, name, args.seconds, placement)
            script = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip,sym"], capture_output=True,
                                    text=True, check=True).stdout
            found[name] = (cpubuckets.parse(script), requests)
    except StartError as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    finally:
        sup.stop_all()
    buckets_table(found)
    print(f"\nperf.data files in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
