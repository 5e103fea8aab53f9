"""Plots of a benchmark JSON (bench/results/*.json): latency vs offered load per proxy, and
CPU per request per proxy. Run by bench/run.py with the bench venv's python (matplotlib).

usage: plot.py RESULTS.json OUT_PREFIX   -> OUT_PREFIXlatency-vs-load.png, OUT_PREFIXcpu-per-request.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"ringlane-io_uring": "#d62728", "ringlane-epoll": "#ff7f0e", "nginx": "#2ca02c",
          "haproxy": "#1f77b4", "direct": "#7f7f7f"}


def latency_vs_load(data: dict[str, Any], out: Path) -> None:
    """p99 (solid, min–max bars over the repeats) and p50 (dashed) per peer, medians per offered rate."""
    ol = data.get("openloop") or {}
    medians = ol.get("medians") or []
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for peer in dict.fromkeys(m["peer"] for m in medians):
        pts = sorted((m for m in medians if m["peer"] == peer), key=lambda m: m["rate"])
        rates = [m["rate"] for m in pts]
        p99 = [m["p99"]["median"] for m in pts]
        err = [[m["p99"]["median"] - m["p99"]["lo"] for m in pts], [m["p99"]["hi"] - m["p99"]["median"] for m in pts]]
        color = COLORS.get(peer)
        ax.errorbar(rates, p99, yerr=err, fmt="o-", color=color, capsize=3, label=f"{peer} p99")
        ax.plot(rates, [m["p50"] for m in pts], "o--", color=color, alpha=0.45, label=f"{peer} p50")
        sat = [m for m in pts if m["saturated"]]
        if sat:
            ax.plot([m["rate"] for m in sat], [m["p99"]["median"] for m in sat], "kx", markersize=10)
    ax.set_yscale("log")
    ax.set_xlabel(f"offered load, req/s (fractions of {ol.get('base_peer', '?')}'s max "
                  f"{ol.get('base_rps', 0):.0f} req/s)")
    ax.set_ylabel("latency from intended send time, µs (log)")
    ax.set_title(f"Open-loop latency vs offered load: {ol.get('placement', '?')}/{ol.get('workload', '?')} "
                 f"({data['meta']['mode']} run)")
    ax.grid(True, which="both", alpha=0.3)
    if medians:
        ax.legend(fontsize=8, ncol=2)
    else:
        ax.text(0.5, 0.5, "no open-loop data", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _cpu_bars(ax: Any, cells: list[dict[str, Any]], peers: list[str]) -> None:
    width = 0.8 / max(len(peers), 1)
    for j, peer in enumerate(peers):
        xs, ys, lo, hi = [], [], [], []
        for i, c in enumerate(cells):
            st = (c["peers"].get(peer) or {}).get("summary", {}).get("cpu_us_per_req")
            if st:
                xs.append(i + (j - (len(peers) - 1) / 2) * width)
                ys.append(st["median"])
                lo.append(st["median"] - st["lo"])
                hi.append(st["hi"] - st["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=COLORS[peer], label=peer)
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels([f"{c['placement']}\n{c['workload']}" for c in cells], fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def cpu_per_request(data: dict[str, Any], out: Path) -> None:
    """Proxy CPU µs per request per cell; the 1 MiB cells get their own panel (another scale)."""
    cells = [c for c in data["cells"]
             if any((pc["summary"].get("cpu_us_per_req") or None) for pc in c["peers"].values())]
    small, bulk = [c for c in cells if not c["bulk"]], [c for c in cells if c["bulk"]]
    peers = [p for p in COLORS if p != "direct" and any(p in c["peers"] for c in cells)]
    panels = [group for group in (small, bulk) if group]
    if not panels:
        panels = [[]]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(8.0, 1.2 * len(cells) + 3), 5.5), squeeze=False,
                             gridspec_kw={"width_ratios": [max(len(g), 1) for g in panels]})
    for ax, group in zip(axes[0], panels, strict=True):
        _cpu_bars(ax, group, peers)
    axes[0][0].set_ylabel("proxy CPU per request, µs (median, min–max)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"CPU per request per proxy ({data['meta']['mode']} run)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    data = json.loads(Path(argv[1]).read_text())
    prefix = argv[2]
    latency_vs_load(data, Path(f"{prefix}latency-vs-load.png"))
    cpu_per_request(data, Path(f"{prefix}cpu-per-request.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
