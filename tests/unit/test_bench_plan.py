"""bench/run.py: which runs stand for their mode's whole plan (and so replace <mode>-latest)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from run import narrowed, parse_args  # noqa: E402


@pytest.mark.parametrize("argv", [["--full"], ["--quick"], ["--full", "--no-plots"],
                                  ["--quick", "--results", "/tmp/x"]])
def test_whole_plans(argv: list[str]) -> None:
    assert not narrowed(parse_args(argv))


@pytest.mark.parametrize("extra", [["--workloads", "ka-12B-c50"], ["--placements", "split"],
                                   ["--peers", "nginx", "ringlane-io_uring"], ["--no-openloop"],
                                   ["--duration", "5"], ["--repeats", "1"], ["--warmup", "0"], ["--idle", "0"]])
def test_narrowed_plans(extra: list[str]) -> None:
    assert narrowed(parse_args(["--full", *extra]))
