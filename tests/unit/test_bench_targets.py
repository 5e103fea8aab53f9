"""bench/ringbench/targets.py: the p99-at-equal-load verdict over a noisy sweep."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from ringbench.results import Stat  # noqa: E402
from ringbench.targets import p99_verdict  # noqa: E402


def test_one_noisy_rate_does_not_fail_a_peer_that_overlaps_nginx() -> None:
    # 50%: the medians differ 3x, but one nginx run was as slow: not distinguishable.
    pairs = [(0.1, Stat(800, 700, 900), Stat(820, 650, 1000)),
             (0.5, Stat(3000, 2000, 9000), Stat(1000, 900, 2500)),
             (0.9, Stat(5000, 4000, 6000), Stat(6000, 5000, 7000))]
    typical, passed, detail = p99_verdict(pairs)
    assert typical == pytest.approx(800 / 820)
    assert passed, detail
    assert "none" in detail and "3.00x at 50%" in detail


def test_a_rate_where_every_run_is_slower_fails() -> None:
    pairs = [(0.1, Stat(800, 700, 900), Stat(820, 650, 1000)),
             (0.3, Stat(2000, 1900, 2100), Stat(1000, 900, 1200)),
             (0.9, Stat(500, 400, 600), Stat(6000, 5000, 7000))]
    typical, passed, detail = p99_verdict(pairs)
    assert not passed
    assert "30%" in detail


def test_a_peer_typically_slower_fails_even_without_a_clear_rate() -> None:
    pairs = [(f / 10, Stat(1200, 800, 1500), Stat(1000, 850, 1300)) for f in range(1, 4)]
    typical, passed, _ = p99_verdict(pairs)
    assert typical == pytest.approx(1.2)
    assert not passed
