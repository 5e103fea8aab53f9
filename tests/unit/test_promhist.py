"""bench/ringbench/promhist.py: Prometheus text -> histograms, bucket deltas, quantiles."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from ringbench.promhist import counter, histogram, histogram_quantile, percentile, samples  # noqa: E402

H = "apiserver_admission_webhook_admission_duration_seconds"


def scrape(ok: list[int], rejected: list[int], other: list[int], total: float) -> str:
    """A /metrics excerpt: cumulative counts for le=0.005,0.025,0.1,+Inf, three series."""
    lines = [f"# HELP {H} Admission webhook latency", f"# TYPE {H} histogram"]
    for labels, counts in ((('name="inject.ringlane.io",rejected="false"'), ok),
                           (('name="inject.ringlane.io",rejected="true"'), rejected),
                           (('name="other.example.com",rejected="false"'), other)):
        for le, c in zip(("0.005", "0.025", "0.1", "+Inf"), counts):
            lines.append(f'{H}_bucket{{{labels},type="admit",le="{le}"}} {c}')
        lines.append(f"{H}_sum{{{labels},type=\"admit\"}} {total}")
        lines.append(f"{H}_count{{{labels},type=\"admit\"}} {counts[-1]}")
    lines.append('apiserver_request_total{verb="POST",resource="pods",subresource=""} 7')
    lines.append('apiserver_request_total{verb="POST",resource="pods",subresource="binding"} 3')
    lines.append('apiserver_request_total{verb="GET",resource="pods"} 11')
    return "\n".join(lines) + "\n"


def test_histogram_sums_matching_series_and_subtracts() -> None:
    before = histogram(scrape([1, 2, 2, 2], [0, 0, 0, 0], [5, 5, 5, 5], 0.01), H, name="inject.ringlane.io")
    after = histogram(scrape([3, 10, 11, 12], [0, 1, 1, 1], [9, 9, 9, 9], 0.31), H, name="inject.ringlane.io")
    assert before.buckets == {0.005: 1, 0.025: 2, 0.1: 2, math.inf: 2}
    d = after - before
    assert d.buckets == {0.005: 2, 0.025: 9, 0.1: 10, math.inf: 11}  # the other webhook is left out
    assert d.count == 11 and d.sum == pytest.approx(2 * 0.30)  # both inject series' _sum moved by 0.30
    assert d.non_cumulative() == [(0.005, 2), (0.025, 7), (0.1, 1), (math.inf, 1)]


def test_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    cum = {0.005: 2.0, 0.025: 9.0, 0.1: 10.0, math.inf: 10.0}
    # rank 5 of 10 lies in (0.005, 0.025], 3 of its 7 observations in: 0.005 + 0.02 * 3/7
    assert histogram_quantile(0.5, cum) == pytest.approx(0.005 + 0.02 * 3 / 7)
    assert histogram_quantile(0.1, cum) == pytest.approx(0.0025)  # first bucket starts at 0
    assert histogram_quantile(0.99, cum) == pytest.approx(0.025 + 0.075 * 0.9)
    assert histogram_quantile(1.0, cum) == pytest.approx(0.1)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, {0.1: 1.0, 1.0: 2.0, math.inf: 10.0}) == 1.0


def test_quantile_skips_empty_leading_buckets_and_handles_no_data() -> None:
    assert histogram_quantile(0.0, {0.005: 0.0, 0.025: 4.0, math.inf: 4.0}) == pytest.approx(0.005)
    assert histogram_quantile(0.5, {0.005: 0.0, math.inf: 0.0}) is None
    with pytest.raises(ValueError):
        histogram_quantile(0.5, {0.005: 1.0})
    with pytest.raises(ValueError):
        histogram_quantile(1.5, {math.inf: 1.0})


def test_counters_match_labels_and_absent_labels_read_empty() -> None:
    text = scrape([0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], 0)
    assert counter(text, "apiserver_request_total", verb="POST", resource="pods", subresource="") == 7
    assert counter(text, "apiserver_request_total", verb="GET", subresource="") == 11
    assert counter(text, "apiserver_request_total") == 21
    assert samples('m{a="x\\"y\\\\z"} 1.5e+00\n', "m") == [({"a": 'x"y\\z'}, 1.5)]
    assert samples("m_total 3\nm 4 1700000000000\n", "m") == [({}, 4.0)]  # exact name; timestamp ignored


def test_percentile_is_linear_between_closest_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    data = list(range(1, 101))  # 1..100
    assert percentile(data, 0.99) == pytest.approx(99.01)
    assert percentile(data, 0.0) == 1 and percentile(data, 1.0) == 100
