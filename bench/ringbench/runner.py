"""Runs a plan: per placement, start the backend and every peer pinned, then run each cell's
warm-up and interleaved repeats (peer order rotates per repeat), the open-loop latency sweep
and the idle-connection memory test, accounting CPU and memory around every run."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ringbench import idle, openloop, wrk
from ringbench.accounting import CpuSnapshot, loadavg, rss_kib
from ringbench.configs import HAPROXY_MAXCONN, PATH_12
from ringbench.peers import PROXIES, Running, Tools, start_backend, start_peer
from ringbench.placement import PLACEMENTS, Placement, missing_cpus
from ringbench.procs import StartError, Supervisor
from ringbench.results import CellResult, Idle, OpenLoop, OpenLoopPoint, PeerCell, Results, Sample
from ringbench.workloads import KEY_WORKLOAD, WORKLOADS, Cell, Plan, Workload


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Runner:
    plan: Plan
    sup: Supervisor
    tools: Tools
    run_dir: Path
    loadgen: Path
    results: Results
    direct_cache: dict[tuple[object, ...], tuple[str, PeerCell]] = field(default_factory=dict)

    # ---- the plan ----
    def run(self) -> None:
        order: list[str] = []
        for cell in self.plan.cells:
            if cell.placement.name not in order:
                order.append(cell.placement.name)
        for name in order:
            placement = PLACEMENTS[name]
            missing = missing_cpus(placement)
            if missing:
                self.fail(f"{name}: CPUs {missing} are not available to this process; placement skipped")
                continue
            self.run_placement(placement, [c for c in self.plan.cells if c.placement.name == name])

    def run_placement(self, placement: Placement, cells: list[Cell]) -> None:
        log(f"== placement {placement.name}: {placement.description}")
        started: list[Running] = []
        try:
            backend = start_backend(self.sup, self.run_dir, placement)
            started.append(backend)
            peers: dict[str, Running] = {}
            for name in self.plan.peers:
                try:
                    peers[name] = start_peer(self.sup, self.tools, self.run_dir, placement, name, backend.http_port)
                    started.append(peers[name])
                    if peers[name].build:
                        builds = self.results.meta.setdefault("ringlane_core_builds", {})
                        assert isinstance(builds, dict)
                        builds[f"{placement.name}/{name}"] = peers[name].build
                except StartError as exc:
                    self.fail(f"{placement.name}: {name} did not start: {exc}")
            for cell in cells:
                self.run_cell(cell, backend, peers)
            if placement.name == self.plan.openloop_placement:
                self.run_openloop(placement, backend, peers)
            if placement.name == self.plan.idle_placement and self.plan.idle_connections:
                self.run_idle(peers)
        except StartError as exc:
            self.fail(f"{placement.name}: {exc}")
        finally:
            for running in reversed(started):
                if running.child is not None:
                    self.sup.stop(running.child)

    # ---- closed loop (wrk) ----
    def run_cell(self, cell: Cell, backend: Running, peers: dict[str, Running]) -> None:
        w, placement = cell.workload, cell.placement
        result = CellResult(placement.name, w.key, w.title, w.bulk)
        self.results.cells.append(result)
        active: list[tuple[Running, int]] = []
        for name in self.plan.peers:
            pc = PeerCell(name)
            result.peers[name] = pc
            peer = peers.get(name)
            if peer is None:
                pc.skipped = "did not start"
                continue
            pc.note = peer.note
            if name == "direct":
                cached = self.direct_cache.get((placement.loadgen_key(), w.direct_key()))
                if cached is not None:
                    origin, prev = cached
                    result.peers[name] = replace(prev, reused_from=origin)
                    continue
            port = peer.tcp_port if w.l4 else peer.http_port
            if port is None:
                pc.skipped = peer.note or "no L4 listener"
                continue
            active.append((peer, port))
        log(f"-- {cell.key}: {w.title}; peers {', '.join(p.name for p, _ in active)}")
        for _peer, port in active:   # warm-up: not recorded
            self.sup.run(wrk.argv(placement.loadgen_cpus, port, w.path, w.connections, placement.loadgen_threads,
                                  self.plan.warmup_s, w.close), timeout_s=self.plan.warmup_s + 30)
        for r in range(self.plan.repeats):
            shift = r % max(len(active), 1)
            for peer, port in active[shift:] + active[:shift]:
                pc = result.peers[peer.name]
                if not peer.alive():
                    if not pc.skipped:
                        pc.skipped = "exited during the run"
                        self.fail(f"{cell.key}: {peer.name} exited:\n{peer.child.log_tail() if peer.child else ''}")
                    continue
                sample = self.one_run(placement, w, peer, port, backend, r)
                pc.samples.append(sample)
                for problem in sample.problems:
                    self.fail(f"{cell.key}: {peer.name} run {r + 1}: {problem}")
                cpu = f"{sample.cpu_us_per_req:.2f} us/req" if sample.cpu_us_per_req else "-"
                log(f"   {peer.name:18} run {r + 1}/{self.plan.repeats}: {sample.rps:10.0f} req/s "
                    f"{sample.bytes_per_s / 1e9:6.2f} GB/s  cpu {cpu:14} p99 {sample.latency_us.get('p99', 0):8.0f} us"
                    f"  load {sample.load1:.2f}{'  ' + '; '.join(sample.problems) if sample.problems else ''}")
        if "direct" in result.peers and not result.peers["direct"].reused_from:
            self.direct_cache[(placement.loadgen_key(), w.direct_key())] = (cell.key, result.peers["direct"])

    def one_run(self, placement: Placement, w: Workload, peer: Running, port: int, backend: Running,
                repeat: int) -> Sample:
        groups = {"proxy": peer.pids(), "backend": backend.pids()}
        load1 = loadavg()
        before = CpuSnapshot.take(groups)
        fin = self.sup.run(wrk.argv(placement.loadgen_cpus, port, w.path, w.connections, placement.loadgen_threads,
                                    self.plan.duration_s, w.close), timeout_s=self.plan.duration_s + 30)
        delta = CpuSnapshot.take(groups).since(before)
        rss = rss_kib(groups["proxy"])
        problems: list[str] = []
        try:
            res = wrk.parse(fin.stdout)
            problems += res.problems
        except ValueError as exc:
            res = wrk.WrkResult(0, self.plan.duration_s, 0, {}, {})
            problems.append(f"wrk failed (exit {fin.returncode}{', timed out' if fin.timed_out else ''}): "
                            f"{str(exc)[:300]} {fin.stderr[-300:]}")
        ours = delta.groups["proxy"] + delta.groups["backend"] + fin.children_cpu_s
        return Sample(repeat=repeat, load1=load1, requests=res.requests, duration_s=res.duration_s, rps=res.rps,
                      bytes_per_s=res.bytes_per_s, errors=res.errors, latency_us=res.latency_us,
                      proxy_cpu_s=delta.groups["proxy"], backend_cpu_s=delta.groups["backend"],
                      loadgen_cpu_s=fin.children_cpu_s, other_cpu_s=max(delta.machine - ours, 0.0),
                      proxy_rss_kib=rss, problems=problems)

    # ---- open loop (bench/loadgen) ----
    def run_openloop(self, placement: Placement, backend: Running, peers: dict[str, Running]) -> None:
        ol = OpenLoop(placement.name, KEY_WORKLOAD)
        self.results.openloop = ol
        cell = self.results.cell(placement.name, KEY_WORKLOAD)
        maxima = {}
        if cell is not None:
            for name, pc in cell.peers.items():
                st = pc.stat("rps")
                if name in PROXIES and st is not None and st.median > 0:
                    maxima[name] = st.median
        if not maxima:
            ol.skipped = f"no {placement.name}/{KEY_WORKLOAD} throughput measured for any proxy"
            self.fail(f"open loop: {ol.skipped}")
            return
        ol.base_peer, ol.base_rps = min(maxima.items(), key=lambda kv: kv[1])
        active = [peers[n] for n in self.plan.peers if n in peers and peers[n].alive()]
        log(f"-- open loop {placement.name}/{KEY_WORKLOAD}: rates are fractions of {ol.base_peer}'s "
            f"{ol.base_rps:.0f} req/s (the slowest proxy)")
        step = 0
        for fraction in self.plan.openloop_fractions:
            rate = fraction * ol.base_rps
            for r in range(self.plan.openloop_repeats):   # interleaved; the peer order rotates
                shift = step % max(len(active), 1)
                step += 1
                for peer in active[shift:] + active[:shift]:
                    point = self.openloop_point(placement, peer, fraction, rate, r)
                    if point is None:
                        continue
                    ol.points.append(point)
                    for problem in point.problems:
                        self.fail(f"open loop {peer.name} at {rate:.0f}/s: {problem}")
                    lat = point.latency_us
                    log(f"   {peer.name:18} {fraction:4.0%} {rate:8.0f}/s run {r + 1}: p50 {lat['p50']:7.0f} "
                        f"p99 {lat['p99']:7.0f} p99.9 {lat['p999']:7.0f} us"
                        f"{'  SATURATED' if point.saturated else ''}  load {point.load1:.2f}")

    def openloop_point(self, placement: Placement, peer: Running, fraction: float, rate: float,
                       repeat: int) -> OpenLoopPoint | None:
        w = WORKLOADS[KEY_WORKLOAD]
        pids = peer.pids()
        load1 = loadavg()
        before = CpuSnapshot.take({"proxy": pids})
        fin = self.sup.run(openloop.argv(self.loadgen, placement.loadgen_cpus, peer.http_port, w.path,
                                         w.connections, rate, self.plan.openloop_duration_s,
                                         self.plan.openloop_warmup_s),
                           timeout_s=self.plan.openloop_duration_s + self.plan.openloop_warmup_s + 30)
        cpu = CpuSnapshot.take({"proxy": pids}).since(before).groups["proxy"]
        try:
            res = openloop.parse(fin.stdout)
        except (ValueError, IndexError, KeyError) as exc:
            self.fail(f"open loop {peer.name} at {rate:.0f}/s: loadgen failed (exit {fin.returncode}): "
                      f"{exc} {fin.stderr[-300:]}")
            return None
        return OpenLoopPoint(peer.name, fraction, rate, load1, res.achieved_rate, res.latency_us, res.service_us,
                             res.error_count, res.unsent, res.unfinished, res.saturated(), cpu, res.problems(),
                             repeat)

    # ---- idle connections ----
    def run_idle(self, peers: dict[str, Running]) -> None:
        n = self.plan.idle_connections
        log(f"-- idle connections: {n} keep-alive connections held open through each proxy")
        for name in self.plan.peers:
            peer = peers.get(name)
            if name == "direct" or peer is None or not peer.alive():
                continue
            count, note = n, ""
            if name == "haproxy" and n > HAPROXY_MAXCONN - 50:
                count = HAPROXY_MAXCONN - 50
                note = f"capped at {count}: HAProxy's maxconn {HAPROXY_MAXCONN} (2 fds per connection, hard NOFILE)"
            r = idle.measure(peer.http_port, PATH_12, count, peer.pids())
            note = "; ".join(x for x in (f"baseline after the first {r.warm}", note) if x)
            self.results.idle.append(Idle(name, count, r.warm + r.opened, r.rss_before_kib, r.rss_after_kib,
                                          r.bytes_per_conn, r.seconds_to_open, r.problem, note))
            if r.problem:
                self.fail(f"idle {name}: {r.problem}")
            log(f"   {name:18} {r.warm + r.opened}/{count} open: RSS {r.rss_before_kib} -> {r.rss_after_kib} KiB, "
                f"{r.bytes_per_conn:.0f} B/conn{'  ' + r.problem if r.problem else ''}")

    def fail(self, msg: str) -> None:
        self.results.failures.append(msg)
        log(f"!! {msg}")


def stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
