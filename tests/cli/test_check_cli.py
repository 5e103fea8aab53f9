"""`ringlane-sidecar check` as a subprocess: exit codes, one line per error, never a traceback."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.y*ml")) + sorted((ROOT / "examples").glob("*.json"))


def check(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ringlane_sidecar.cli", "check", "--config", path],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    r = check(str(example))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: generation ")
    assert r.stdout.count("\n") == 1 and r.stderr == ""


def test_invalid_file_prints_every_error_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\n"
        "listeners:\n"
        "  - name: web\n"
        "    address: 0.0.0.0:70000\n"
        "    colour: blue\n"
        "    rules:\n"
        "      - name: r\n"
        "        timeouts: {request: 5 sec}\n"
        "        backends: [{cluster: nope}]\n"
        "clusters: []\n"
    )
    r = check(str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert all(line.startswith(f"{bad}: ") for line in lines), lines
    paths = [line.split(": ")[1] for line in lines]
    assert "listeners[0].address" in paths
    assert "listeners[0].colour" in paths
    assert "listeners[0].rules[0].timeouts.request" in paths
    assert "listeners[0].rules[0].backends[0].cluster" in paths
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "cannot read"),
        ("version: 1\nlisteners: [\n", "line"),
        ("", "empty"),
        ("- 1\n- 2\n", "mapping"),
        ("version: '1'\nlisteners: []\nclusters: []\n", "version"),
    ],
    ids=["missing-file", "bad-yaml", "empty", "top-level-list", "wrong-type"],
)
def test_file_level_errors_are_one_clear_line(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    r = check(str(path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr.lower()


def test_directory_is_rejected_clearly(tmp_path: Path) -> None:
    r = check(str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(tmp_path) in r.stderr
