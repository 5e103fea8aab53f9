"""The C timing wheel, compiled with its checks (tests/unit/c/rl_timer_check.c) under ASan/UBSan."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "sidecar" / "core"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_timers_moved_by_a_callback_in_the_same_pass_stay_counted(tmp_path: Path) -> None:
    exe = tmp_path / "rl_timer_check"
    subprocess.run(["gcc", "-std=gnu11", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=undefined", f"-I{CORE}", str(ROOT / "tests/unit/c/rl_timer_check.c"),
                    str(CORE / "rl_timer.c"), "-o", str(exe)], check=True, capture_output=True, text=True)
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
