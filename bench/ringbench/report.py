"""The Markdown report: targets, one closed-loop table per placement, the open-loop sweep, idle memory."""
from __future__ import annotations

from ringbench.placement import PLACEMENTS
from ringbench.results import NOISY_LOAD, CellResult, PeerCell, Results, Stat


def _num(v: float) -> str:
    if v >= 100_000:
        return f"{v / 1000:.0f}k"
    if v >= 10_000:
        return f"{v / 1000:.1f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _stat(st: Stat | None, scale: float = 1.0, unit: str = "") -> str:
    if st is None:
        return "–"
    med, lo, hi = st.median * scale, st.lo * scale, st.hi * scale
    if lo == hi:
        return f"{_num(med)}{unit}"
    return f"{_num(med)}{unit} ({_num(lo)}–{_num(hi)})"


def _ratio(a: Stat | None, b: Stat | None) -> str:
    if a is None or b is None or b.median <= 0:
        return "–"
    return f"{a.median / b.median:.2f}x"


def _throughput(pc: PeerCell, bulk: bool) -> str:
    if bulk:
        return _stat(pc.stat("bytes_per_s"), 1e-9, " GB/s")
    return _stat(pc.stat("rps"), 1.0, "/s")


def _cell_rows(cell: CellResult) -> list[str]:
    rows: list[str] = []
    nginx, direct = cell.peers.get("nginx"), cell.peers.get("direct")
    metric = "bytes_per_s" if cell.bulk else "rps"
    for name, pc in cell.peers.items():
        if not pc.samples:
            rows.append(f"| {cell.title} | {name} | skipped: {pc.skipped or 'no runs'} |" + " |" * 11)
            continue
        s = pc.summary()
        thr = pc.stat(metric)
        cpu, p99 = pc.stat("cpu_us_per_req"), pc.stat("lat_p99")
        peer = name + (f" (as {pc.reused_from.split('/')[0]})" if pc.reused_from else "")
        rows.append("| " + " | ".join([
            cell.title, peer, _throughput(pc, cell.bulk),
            _ratio(thr, nginx.stat(metric) if nginx else None) if name != "nginx" else "1.00x",
            _ratio(thr, direct.stat(metric) if direct else None) if name != "direct" else "1.00x",
            _stat(cpu) if cpu else "–",
            _ratio(cpu, nginx.stat("cpu_us_per_req") if nginx else None) if cpu and name != "nginx" else
            ("1.00x" if name == "nginx" else "–"),
            _stat(pc.stat("backend_us_per_req")),
            _stat(pc.stat("lat_p50")), _stat(p99),
            _ratio(p99, nginx.stat("lat_p99") if nginx else None) if name != "nginx" else "1.00x",
            str(s["errors"]),
            f"{s['noisy_runs']}/{s['runs']}",
            _stat(pc.stat("other_cpu_pct"), 1.0, "%"),
        ]) + " |")
    return rows


CELL_HEADER = ("| workload | peer | throughput median (min–max) | ×nginx | ×direct | proxy CPU µs/req | CPU ×nginx "
               "| backend µs/req | p50 µs | p99 µs | p99 ×nginx | errors | noisy | other CPU |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _builds(builds: dict[str, str]) -> list[str]:
    """The C core each Ringlane loaded; several lines only when it was rebuilt during the run."""
    if len(set(builds.values())) <= 1:
        return [f"- Ringlane C core: {next(iter(builds.values()))}"] if builds else []
    return ["- Ringlane C core REBUILT during the run: "
            + "; ".join(f"{k}: {v}" for k, v in builds.items())]


def render(results: Results, plot_prefix: str) -> str:
    m = results.meta
    out = [f"# Ringlane benchmarks: {m['mode']} run, {m['started']}", ""]
    out += [
        f"- command: `{m['command']}`",
        f"- wall time: {m.get('wall_seconds', 0):.0f} s; host: {m['host']}",
        f"- versions: {m['versions']}",
        *_builds(m.get("ringlane_core_builds") or {}),
        f"- closed loop: wrk, {m['repeats']} run(s) of {m['duration_s']:g} s per peer after a {m['warmup_s']:g} s "
        "warm-up, peers interleaved (order rotates each repeat); medians with (min–max)",
        "- CPU per request: utime+stime of every thread of the proxy's processes (nginx: master + workers) "
        "from /proc, divided by the requests wrk completed; \"backend µs/req\" is the origin nginx's",
        f"- noisy: runs that started with a 1-minute load average > {NOISY_LOAD} (the benchmark's own earlier "
        "runs raise it too); \"other CPU\": CPU time that processes outside the benchmark used during the runs "
        "(/proc/stat busy time minus the proxy's, the backend's and the load generator's), in % of one CPU: "
        "the better noise indicator",
        "",
    ]
    if results.failures:
        out += ["## Failures", ""] + [f"- {f}".replace("\n", " / ") for f in results.failures] + [""]
    out += ["## Targets", "", "| target | measured | limit | result | detail |", "|---|---|---|---|---|"]
    for t in results.targets:
        verdict = "n/a" if t.passed is None else ("PASS" if t.passed else "MISS")
        measured = "–" if t.ratio is None else (f"{t.ratio:.0f} B" if "idle" in t.name else f"{t.ratio:.2f}x")
        limit = f"{t.limit:.0f} B" if "idle" in t.name else f"{t.limit:.2f}x"
        out.append(f"| {t.name} | {measured} | {limit} | **{verdict}** | {t.detail} |")
    out.append("")
    for placement in dict.fromkeys(c.placement for c in results.cells):
        out += [f"## Closed loop (wrk), {placement}: {PLACEMENTS[placement].description}", "", CELL_HEADER]
        for cell in results.cells:
            if cell.placement == placement:
                out += _cell_rows(cell)
        out.append("")
    out += _openloop(results)
    out += _idle(results)
    out += ["## Plots", "", f"![latency vs offered load]({plot_prefix}latency-vs-load.png)", "",
            f"![CPU per request]({plot_prefix}cpu-per-request.png)", ""]
    return "\n".join(out)


def _openloop(results: Results) -> list[str]:
    ol = results.openloop
    if ol is None:
        return []
    out = [f"## Open loop (bench/loadgen), {ol.placement}/{ol.workload}", ""]
    if ol.skipped:
        return out + [f"skipped: {ol.skipped}", ""]
    m = results.meta.get("openloop") or {}
    out += [f"Offered load as a fraction of the slowest proxy's max ({ol.base_peer}, {ol.base_rps:.0f} req/s), "
            f"{m.get('repeats', 1)} run(s) of {m.get('duration_s', 0):g} s per rate and peer (interleaved); "
            "medians over the runs; latency in µs from the intended send time (coordinated omission "
            "corrected).", "",
            "| offered | rate/s | peer | achieved/s | p50 | p99 (min–max) | p99.9 | p99 ×nginx | errors | unsent "
            "| noisy |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    medians = ol.medians()
    nginx = {x.fraction: x.p99.median for x in medians if x.peer == "nginx"}
    for x in medians:
        ref = nginx.get(x.fraction)
        ratio = f"{x.p99.median / ref:.2f}x" if ref and x.peer != "nginx" else ("1.00x" if ref else "–")
        out.append(f"| {x.fraction:.0%} | {x.rate:.0f} | {x.peer} | {x.achieved_rate:.0f} | {x.p50:.0f} | "
                   f"{_stat(x.p99)} | {x.p999:.0f} | {ratio} | {x.errors} | "
                   f"{x.unsent}{' (saturated)' if x.saturated else ''} | {x.noisy_runs}/{x.runs} |")
    return out + [""]


def _idle(results: Results) -> list[str]:
    if not results.idle:
        return []
    out = ["## Idle keep-alive connections (memory)", "",
           "| peer | connections | VmRSS before KiB | after KiB | bytes per connection | seconds to open | note |",
           "|---|---|---|---|---|---|---|"]
    for i in results.idle:
        note = "; ".join(x for x in (i.problem, i.note) if x)
        out.append(f"| {i.peer} | {i.opened}/{i.connections} | {i.rss_before_kib} | {i.rss_after_kib} | "
                   f"{i.bytes_per_conn:.0f} | {i.seconds_to_open:.1f} | {note} |")
    return out + [""]
