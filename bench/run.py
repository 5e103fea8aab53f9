#!/usr/bin/env python3
"""Ringlane side-by-side benchmarks: Ringlane io_uring, Ringlane epoll, nginx, HAProxy and
"direct" (no proxy), pinned to explicit CPUs, same load generators for all.

  bench/run.py --quick   about a minute; a smoke test that the harness works and Ringlane is
                         functional under load (exit 1 on any error or zero throughput; never a
                         speed threshold)
  bench/run.py --full    the whole matrix: 3 runs x 10 s per peer and cell, open-loop sweep at
                         10..90% of the slowest proxy's max, 10k idle connections

Writes bench/results/<stamp>-<mode>.{md,json,*.png}, and copies as latest.* (either mode) and,
when the mode's plan ran whole (no --workloads, --peers, --duration, ...), <mode>-latest.*
(full-latest.* is the one the README cites).
Exit codes: 0 ok, 1 something failed (listed in the report), 2 bad usage or missing tools, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ringbench import deps, report, targets  # noqa: E402
from ringbench.idle import raise_nofile  # noqa: E402
from ringbench.peers import PEERS, find_tools  # noqa: E402
from ringbench.placement import PLACEMENTS  # noqa: E402
from ringbench.procs import StartError, Supervisor, install_signal_handlers  # noqa: E402
from ringbench.results import Results  # noqa: E402
from ringbench.runner import Runner, log, stamp  # noqa: E402
from ringbench.workloads import WORKLOADS, Plan, full_plan, quick_plan  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="the ~1 minute smoke test (make bench-quick)")
    mode.add_argument("--full", action="store_true", help="the whole matrix (make bench)")
    p.add_argument("--placements", nargs="+", choices=sorted(PLACEMENTS), help="only these placements")
    p.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), help="only these workloads")
    p.add_argument("--peers", nargs="+", choices=PEERS, help="only these peers (targets need nginx and Ringlane)")
    p.add_argument("--duration", type=float, help="seconds per closed-loop run")
    p.add_argument("--repeats", type=int, help="closed-loop runs per peer and cell")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per peer and cell")
    p.add_argument("--idle", type=int, metavar="N", help="idle connections to hold (0: skip the test)")
    p.add_argument("--no-openloop", action="store_true", help="skip the open-loop latency sweep")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (and the matplotlib venv)")
    p.add_argument("--results", type=Path, default=BENCH / "results", help="output directory")
    return p.parse_args(argv)


def narrowed(args: argparse.Namespace) -> bool:
    """Whether the run leaves out or shortens part of its mode's plan (then it must not replace
    <mode>-latest, which stands for the whole matrix)."""
    return bool(args.placements or args.workloads or args.peers or args.no_openloop or
                args.duration is not None or args.repeats is not None or args.warmup is not None or
                args.idle is not None)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = quick_plan() if args.quick else full_plan()
    if args.placements:
        plan.cells = [c for c in plan.cells if c.placement.name in args.placements]
    if args.workloads:
        plan.cells = [c for c in plan.cells if c.workload.key in args.workloads]
    if args.peers:
        plan.peers = [p for p in PEERS if p in args.peers]
    plan.duration_s = args.duration or plan.duration_s
    plan.repeats = args.repeats or plan.repeats
    plan.warmup_s = args.warmup if args.warmup is not None else plan.warmup_s
    if args.idle is not None:
        plan.idle_connections = args.idle
    if args.no_openloop:
        plan.openloop_placement = None
    return plan


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def meta(plan: Plan, argv: list[str], ringlane: Path) -> dict[str, object]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")
    commit = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return {
        "mode": plan.mode,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": shlex.join(["bench/run.py", *argv]),
        "host": f"Linux {platform.release()}, {os.cpu_count()} CPUs ({cpu}), commit {commit}",
        "versions": "; ".join([_version([str(ringlane), "--version"]), _version(["nginx", "-v"]),
                               _version(["haproxy", "-v"]), _version(["wrk", "-v"])]),
        "duration_s": plan.duration_s, "warmup_s": plan.warmup_s, "repeats": plan.repeats,
        "peers": plan.peers, "cells": [c.key for c in plan.cells],
        "openloop": {"placement": plan.openloop_placement, "fractions": plan.openloop_fractions,
                     "duration_s": plan.openloop_duration_s, "warmup_s": plan.openloop_warmup_s,
                     "repeats": plan.openloop_repeats},
        "idle_connections": plan.idle_connections,
    }


def write_outputs(results: Results, out_dir: Path, plot_python: Path | None, whole_plan: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    base = f"{stamp()}-{results.meta['mode']}"
    json_path = out_dir / f"{base}.json"
    json_path.write_text(json.dumps(results.to_json(), indent=1) + "\n")
    (out_dir / f"{base}.md").write_text(report.render(results, f"{base}-"))
    # latest.*: the last run of either mode; <mode>-latest.*: the last whole run of this mode
    # (README cites full-latest), so a narrowed run (--workloads, --peers, ...) does not replace it
    copies = ("latest", f"{results.meta['mode']}-latest") if whole_plan else ("latest",)
    for copy in copies:
        (out_dir / f"{copy}.md").write_text(report.render(results, f"{copy}-"))
        shutil.copyfile(json_path, out_dir / f"{copy}.json")
    if plot_python is not None:
        subprocess.run([str(plot_python), str(BENCH / "plot.py"), str(json_path), str(out_dir / f"{base}-")],
                       check=True)
        for name in ("latency-vs-load.png", "cpu-per-request.png"):
            for copy in copies:
                shutil.copyfile(out_dir / f"{base}-{name}", out_dir / f"{copy}-{name}")
    return out_dir / f"{base}.md"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    if not plan.cells:
        print("bench: no cells left after the filters", file=sys.stderr)
        return 2
    install_signal_handlers()
    t0 = time.monotonic()
    try:
        tools = find_tools(REPO)
        loadgen = deps.build_loadgen()
        plot_python = None if args.no_plots else deps.ensure_plot_python()
    except (StartError, subprocess.CalledProcessError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    nofile = raise_nofile()
    if plan.idle_connections > nofile - 500:
        print(f"bench: --idle {plan.idle_connections} needs more descriptors than RLIMIT_NOFILE {nofile}",
              file=sys.stderr)
        return 2
    deps.prune_runs(keep=4)
    run_dir = deps.BUILD / f"run-{stamp()}-{plan.mode}"
    run_dir.mkdir(parents=True, exist_ok=True)
    results = Results(meta=meta(plan, argv, tools.ringlane))
    sup = Supervisor(run_dir / "logs")
    interrupted = False
    log(f"bench: {plan.mode} run, {len(plan.cells)} cells x {len(plan.peers)} peers; configs and logs in {run_dir}")
    try:
        Runner(plan, sup, tools, run_dir, loadgen, results).run()
    except KeyboardInterrupt:
        interrupted = True
        results.failures.append("interrupted")
    finally:
        sup.stop_all()
    results.meta["wall_seconds"] = round(time.monotonic() - t0, 1)
    results.targets = targets.evaluate(results)
    md = write_outputs(results, args.results, plot_python, whole_plan=not narrowed(args))
    print(md.read_text())
    log(f"bench: {plan.mode} run took {results.meta['wall_seconds']:.0f} s; report {md} (and latest.md/json)")
    if interrupted:
        return 130
    if results.failures:
        log(f"bench: FAILED ({len(results.failures)} problem(s), listed under Failures in the report)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
