"""The issue's targets, judged on the medians: PASS/MISS with the measured ratio (never an exit code)."""
from __future__ import annotations

import statistics

from ringbench.results import Results, Target
from ringbench.workloads import KEY_WORKLOAD

IDLE_LIMIT_BYTES = 1024.0


def _cpu(results: Results, placement: str, peer: str) -> float | None:
    cell = results.cell(placement, KEY_WORKLOAD)
    pc = cell.peers.get(peer) if cell else None
    st = pc.stat("cpu_us_per_req") if pc else None
    return st.median if st else None


def _ratio_target(name: str, num: float | None, den: float | None, limit: float, what: str) -> Target:
    if num is None or den is None or den <= 0:
        return Target(name, None, limit, None, f"not measured ({what})")
    ratio = num / den
    return Target(name, ratio, limit, ratio <= limit, f"{what}: {num:.2f} vs {den:.2f} us/req")


def evaluate(results: Results) -> list[Target]:
    out: list[Target] = []
    for engine in ("io_uring", "epoll"):
        peer = f"ringlane-{engine}"
        out.append(_ratio_target(f"CPU/req {peer} <= 0.80x nginx, split", _cpu(results, "split", peer),
                                 _cpu(results, "split", "nginx"), 0.80, f"split/{KEY_WORKLOAD}"))
        out.append(_ratio_target(f"CPU/req {peer} <= 0.60x nginx, colocated", _cpu(results, "colocated", peer),
                                 _cpu(results, "colocated", "nginx"), 0.60, f"colocated/{KEY_WORKLOAD}"))
    for placement in ("split", "colocated"):
        out.append(_ratio_target(f"CPU/req io_uring <= 0.80x epoll, {placement}",
                                 _cpu(results, placement, "ringlane-io_uring"),
                                 _cpu(results, placement, "ringlane-epoll"), 0.80, f"{placement}/{KEY_WORKLOAD}"))
    out += _p99_targets(results)
    for engine in ("io_uring", "epoll"):
        peer = f"ringlane-{engine}"
        idle = next((i for i in results.idle if i.peer == peer and not i.problem), None)
        name = f"idle memory {peer} <= 1 KiB/conn"
        if idle is None:
            out.append(Target(name, None, IDLE_LIMIT_BYTES, None, "not measured"))
        else:
            out.append(Target(name, idle.bytes_per_conn, IDLE_LIMIT_BYTES, idle.bytes_per_conn <= IDLE_LIMIT_BYTES,
                              f"{idle.bytes_per_conn:.0f} B per connection over {idle.opened} connections"))
    return out


def _p99_targets(results: Results) -> list[Target]:
    """p99 at equal offered load <= nginx's at every rate of the sweep (median over the repeats of
    each rate; the worst rate's ratio is shown, and the median over the rates in the detail)."""
    ol = results.openloop
    out: list[Target] = []
    medians = ol.medians() if ol is not None else []
    for engine in ("io_uring", "epoll"):
        peer = f"ringlane-{engine}"
        name = f"p99 {peer} <= nginx at equal offered load"
        if ol is None or not medians:
            out.append(Target(name, None, 1.0, None, "no open-loop sweep"))
            continue
        nginx = {m.fraction: m.p99.median for m in medians if m.peer == "nginx"}
        ratios = [(m.p99.median / nginx[m.fraction], m.fraction) for m in medians
                  if m.peer == peer and nginx.get(m.fraction)]
        if not ratios:
            out.append(Target(name, None, 1.0, None, "no paired points"))
            continue
        worst, at = max(ratios)
        typical = statistics.median(r for r, _ in ratios)
        out.append(Target(name, worst, 1.0, worst <= 1.0,
                          f"worst of {len(ratios)} rate(s) at {at:.0%} of {ol.base_peer}'s max; "
                          f"median over the rates {typical:.2f}x"))
    return out
