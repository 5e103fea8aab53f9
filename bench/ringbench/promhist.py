"""Prometheus text exposition -> histograms and counters; quantiles from bucket deltas (pure).

Used by bench/operator_scale.py on the kube-apiserver's /metrics, scraped before and after a
measured step: the difference of two scrapes is the histogram of that step alone.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _unescape(value: str) -> str:
    return value.replace(r"\\", "\x00").replace(r"\"", '"').replace(r"\n", "\n").replace("\x00", "\\")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of exactly this metric name (comments skipped)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None or m.group(1) != name:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(m.group(2) or "")}
        out.append((labels, float(m.group(3))))
    return out


def _matches(labels: Mapping[str, str], want: Mapping[str, str]) -> bool:
    return all(labels.get(k, "") == v for k, v in want.items())  # an absent label reads as ""


def counter(text: str, name: str, /, **want: str) -> float:
    """Sum of the samples of a counter (or gauge) whose labels include `want` (a label may be `name`)."""
    return sum(v for labels, v in samples(text, name) if _matches(labels, want))


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (math.inf for +Inf), summed over matching series."""

    buckets: Mapping[float, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0

    def __sub__(self, before: Histogram) -> Histogram:
        bounds = set(self.buckets) | set(before.buckets)
        return Histogram({le: self.buckets.get(le, 0.0) - before.buckets.get(le, 0.0) for le in bounds},
                         self.sum - before.sum, self.count - before.count)

    def __add__(self, other: Histogram) -> Histogram:
        bounds = set(self.buckets) | set(other.buckets)
        return Histogram({le: self.buckets.get(le, 0.0) + other.buckets.get(le, 0.0) for le in bounds},
                         self.sum + other.sum, self.count + other.count)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def non_cumulative(self) -> list[tuple[float, float]]:
        """(upper bound, observations in that bucket alone), by bound."""
        out, prev = [], 0.0
        for le in sorted(self.buckets):
            out.append((le, self.buckets[le] - prev))
            prev = self.buckets[le]
        return out

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets)


def histogram(text: str, name: str, /, **want: str) -> Histogram:
    """The histogram `name` (its _bucket/_sum/_count series) summed over series matching `want`."""
    buckets: dict[float, float] = {}
    for labels, value in samples(text, f"{name}_bucket"):
        if "le" not in labels or not _matches(labels, want):
            continue
        le = math.inf if labels["le"] in ("+Inf", "Inf") else float(labels["le"])
        buckets[le] = buckets.get(le, 0.0) + value
    return Histogram(buckets, counter(text, f"{name}_sum", **want), counter(text, f"{name}_count", **want))


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile on cumulative buckets: linear interpolation inside the
    bucket that holds rank q*total (from 0 for the first bucket); a rank in the +Inf bucket
    gives the highest finite bound. None without observations."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    bounds = sorted(buckets)
    if not bounds or bounds[-1] != math.inf:
        raise ValueError("a histogram needs a +Inf bucket")
    total = buckets[math.inf]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank and count > below:
            if le == math.inf:
                return lower
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def percentile(values: Iterable[float], q: float) -> float | None:
    """Exact percentile of samples, linear between the closest ranks (numpy's default)."""
    data: Sequence[float] = sorted(values)
    if not data:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    pos = q * (len(data) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)
