"""What the harness builds or installs for itself, idempotently: the open-loop load generator
(gcc -O2) and a separate venv with matplotlib for the plots (the project venv stays lean)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
LOADGEN_SRC = BENCH / "loadgen" / "loadgen.c"
BUILD = BENCH / "build"
LOADGEN_BIN = BUILD / "loadgen"
PLOT_REQUIREMENTS = BENCH / "requirements-plot.txt"


def plot_venv_dir() -> Path:
    return Path(os.environ.get("RINGLANE_BENCH_VENV", Path.home() / ".cache" / "ringlane" / "bench-venv"))


def prune_runs(keep: int = 5) -> None:
    """Keeps the newest `keep` run directories (configs and logs) under bench/build."""
    runs = sorted(BUILD.glob("run-*"), key=lambda p: p.stat().st_mtime)
    for old in runs[:-keep] if keep else runs:
        shutil.rmtree(old, ignore_errors=True)


def build_loadgen() -> Path:
    """Compiles bench/loadgen/loadgen.c when the binary is missing or older than the source."""
    if LOADGEN_BIN.exists() and LOADGEN_BIN.stat().st_mtime >= LOADGEN_SRC.stat().st_mtime:
        return LOADGEN_BIN
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = LOADGEN_BIN.with_suffix(".tmp")
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(LOADGEN_SRC), "-lm"], check=True)
    tmp.replace(LOADGEN_BIN)
    return LOADGEN_BIN


def ensure_plot_python() -> Path:
    """The bench venv's python, with exactly the pinned requirements installed (once)."""
    venv = plot_venv_dir()
    python = venv / "bin" / "python"
    wanted = PLOT_REQUIREMENTS.read_text()
    stamp = venv / ".ringbench-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"==> bench: installing {' '.join(wanted.split())} into {venv}", file=sys.stderr, flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(PLOT_REQUIREMENTS)], check=True)
    subprocess.run([str(python), "-c", "import matplotlib"], check=True)
    stamp.write_text(wanted)
    return python
