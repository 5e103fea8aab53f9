#!/usr/bin/env python3
"""A CPU profile of one proxy under the split 12 B / 50-connection keep-alive load.

  bench/profile.py [--peer ringlane-io_uring] [--seconds 10]

Starts the backend and the peer pinned as in the "split" placement, drives it with wrk, and
records `perf record -e cpu-clock -g` of the peer's processes for the run (no PMU is needed).
Prints the kernel/user split and the top symbols; perf.data and the full report stay in
bench/build/profile-<stamp>/.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ringbench import wrk  # noqa: E402
from ringbench.configs import PATH_12  # noqa: E402
from ringbench.peers import PROXIES, find_tools, start_backend, start_peer  # noqa: E402
from ringbench.placement import PLACEMENTS, taskset  # noqa: E402
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


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", choices=PROXIES, default="ringlane-io_uring")
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args(argv)
    install_signal_handlers()
    placement = PLACEMENTS["split"]
    out_dir = BENCH / "build" / f"profile-{stamp()}"
    out_dir.mkdir(parents=True)
    sup = Supervisor(out_dir / "logs")
    data = out_dir / "perf.data"
    try:
        tools = find_tools(BENCH.parent)
        backend = start_backend(sup, out_dir, placement)
        peer = start_peer(sup, tools, out_dir, placement, args.peer, backend.http_port)
        pids = ",".join(str(pid) for pid in peer.pids())
        load = wrk.argv(placement.loadgen_cpus, peer.http_port, PATH_12, 50, 1, args.seconds + 2)
        loadgen = sup.spawn("wrk", load)
        # perf's own duration: the `sleep` bounds the recording, it synchronises nothing
        perf = sup.run(taskset(placement.loadgen_cpus, ["perf", "record", "-e", "cpu-clock", "-g", "-p", pids,
                                                        "-o", str(data), "--", "sleep", f"{args.seconds:g}"]),
                       timeout_s=args.seconds + 30)
        if perf.returncode != 0:
            print(perf.stderr, file=sys.stderr)
            return 1
        loadgen.popen.wait(timeout=30)
        res = wrk.parse(Path(loadgen.log).read_text() if loadgen.log else "")
        print(f"{args.peer}, split placement, keep-alive GET 12 B, 50 connections: {res.rps:.0f} req/s "
              f"(wrk errors: {res.error_count})")
    except StartError as exc:
        print(f"profile: {exc}", file=sys.stderr)
        return 1
    finally:
        sup.stop_all()
    modes = perf_report(data, "dso", 20)
    kernel = sum(pct for pct, dso in modes if "kernel" in dso or dso.startswith("[k"))
    print(f"\nkernel {kernel:.1f}% / user {100 - kernel:.1f}% of the peer's cpu-clock samples\n\nby DSO:")
    for pct, dso in modes[:8]:
        print(f"  {pct:5.1f}%  {dso}")
    print("\ntop symbols ([k] kernel, [.] user):")
    for pct, sym in perf_report(data, "sym", 25):
        print(f"  {pct:5.1f}%  {sym}")
    full = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio", "--sort", "dso,sym"],
                          capture_output=True, text=True).stdout
    (out_dir / "report.txt").write_text(full)
    print(f"\nperf.data and report.txt in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
