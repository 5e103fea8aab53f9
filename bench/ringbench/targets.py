"""The issue's targets, judged on the medians: PASS/MISS with the measured ratio (never an exit code)."""
from __future__ import annotations

import statistics

from ringbench.results import Results, Stat, Target
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


def p99_verdict(pairs: list[tuple[float, Stat, Stat]]) -> tuple[float, bool, str]:
    """(median ratio over the rates, passed, detail) from (fraction, peer p99, nginx p99) per rate.

    On these shared VMs one 3 s run's p99 moves by 2-10x between runs of the SAME proxy (a stall
    of the host), so the worst of nine ratios of medians fails for any peer, nginx against itself
    included. A rate counts against the peer only when it is distinguishably worse: every run of
    the peer above nginx's worst run. Passed: no such rate, and the median ratio <= 1."""
    ratios = [(peer.median / ng.median, frac) for frac, peer, ng in pairs]
    worse = [frac for frac, peer, ng in pairs if peer.lo > ng.hi]
    typical = statistics.median(r for r, _ in ratios)
    worst, at = max(ratios)
    detail = (f"median of the {len(ratios)} rates' p99 ratios; rates where every run was above nginx's worst: "
              f"{', '.join(f'{f:.0%}' for f in worse) or 'none'}; worst ratio of medians {worst:.2f}x at {at:.0%}")
    return typical, not worse and typical <= 1.0, detail


def _p99_targets(results: Results) -> list[Target]:
    """p99 at equal offered load no worse than nginx's over the sweep (see p99_verdict)."""
    ol = results.openloop
    out: list[Target] = []
    medians = ol.medians() if ol is not None else []
    for engine in ("io_uring", "epoll"):
        peer = f"ringlane-{engine}"
        name = f"p99 {peer} <= nginx at equal offered load"
        if ol is None or not medians:
            out.append(Target(name, None, 1.0, None, "no open-loop sweep"))
            continue
        nginx = {m.fraction: m.p99 for m in medians if m.peer == "nginx"}
        pairs = [(m.fraction, m.p99, nginx[m.fraction]) for m in medians
                 if m.peer == peer and m.fraction in nginx and nginx[m.fraction].median]
        if not pairs:
            out.append(Target(name, None, 1.0, None, "no paired points"))
            continue
        typical, passed, detail = p99_verdict(pairs)
        out.append(Target(name, typical, 1.0, passed, f"{detail}; rates relative to {ol.base_peer}'s max"))
    return out
