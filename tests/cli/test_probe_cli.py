"""`ringlane-sidecar probe` as a subprocess: real io_uring on this kernel, and real blocking."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SYSCTL = Path("/proc/sys/kernel/io_uring_disabled")


def probe() -> dict[str, object]:
    r = subprocess.run([sys.executable, "-m", "ringlane_sidecar.cli", "probe"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_probe_reports_kernel_and_features() -> None:
    out = probe()
    assert out["kernel"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    uring = out["io_uring"]
    assert isinstance(uring, dict)
    for feature in ("multishot_accept", "multishot_recv", "provided_buffer_ring", "defer_taskrun",
                    "no_sqarray", "register_query", "ring_restrictions"):
        assert feature in uring["features"]
    if uring["usable"]:
        # This kernel (6.x) has all of these; each was tried for real by the probe.
        assert uring["features"]["multishot_accept"] and uring["features"]["provided_buffer_ring"]
        assert out["auto_engine"]["engine"] == "io_uring"
    else:
        assert out["auto_engine"]["engine"] == "epoll"


@pytest.mark.skipif(not SYSCTL.exists(), reason="kernel without kernel.io_uring_disabled")
def test_probe_names_the_sysctl_when_io_uring_is_disabled() -> None:
    before = SYSCTL.read_text().strip()
    try:
        try:
            SYSCTL.write_text("2\n")
        except OSError as exc:
            pytest.skip(f"cannot change kernel.io_uring_disabled here: {exc}")
        out = probe()
    finally:
        SYSCTL.write_text(before + "\n")
    uring = out["io_uring"]
    assert isinstance(uring, dict)
    assert uring["usable"] is False
    assert uring["disabled_sysctl"] == 2
    assert "kernel.io_uring_disabled=2" in uring["setup_error"]
    assert out["auto_engine"]["engine"] == "epoll"
    assert not any(uring["features"].values())
