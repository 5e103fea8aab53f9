"""Real enforcement: the sidecar and a test program under the generated profiles, in runc."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from runc_bundle import RUNC, Container

HERE = Path(__file__).parent
PY = sys.executable

pytestmark = pytest.mark.skipif(not Path(RUNC).exists(), reason="runc is not installed")


def sidecar_config(tmp: Path, backend: int) -> tuple[Path, int, int]:
    listen, admin = free_port(), free_port()
    cfg = tmp / "cfg"
    cfg.mkdir()
    (cfg / "config.yaml").write_text(
        f"version: 1\ngeneration: 1\nadmin: {{address: 127.0.0.1:{admin}}}\n"
        f"listeners:\n  - name: web\n    address: 127.0.0.1:{listen}\n"
        f"    rules: [{{name: r, backends: [{{cluster: b}}]}}]\n"
        f"clusters:\n  - name: b\n    endpoints: [{{address: 127.0.0.1:{backend}}}]\n")
    return cfg, listen, admin


def wait_ready(admin: int, proc: subprocess.Popen[str], deadline_s: float = 30) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"sidecar exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
                if r.status == 200:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config", timeout=1) as c:
                        return dict(json.load(c))
        except OSError:
            pass
        time.sleep(0.05)  # polling readiness against a deadline
    raise AssertionError("sidecar not ready in time")


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read()


def run_sidecar(tmp_path: Path, profile: dict[str, Any], backend: int, *extra: str) -> Any:
    cfg, listen, admin = sidecar_config(tmp_path, backend)
    args = [PY, "-m", "ringlane_sidecar.cli", "run", "--config", str(cfg / "config.yaml"), *extra]
    return Container(tmp_path, args, profile, rw_dirs=[str(cfg)]), listen, admin


def test_sidecar_serves_with_io_uring_under_its_profile(tmp_path: Path, io_uring_profile: dict[str, Any],
                                                        backend: int) -> None:
    c, listen, admin = run_sidecar(tmp_path, io_uring_profile, backend, "--engine", "io_uring")
    with c:
        proc = c.start()
        cfg = wait_ready(admin, proc)
        assert cfg["engine"] == "io_uring"
        assert cfg["confinement"]["seccomp_profile"] == "filter"
        assert cfg["confinement"]["seccomp_lock"].startswith("on")
        for i in range(50):
            assert get(listen, f"/x{i}") == (200, f"backend /x{i}\n".encode())
        c.kill("TERM")
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""


def test_profile_refuses_what_is_not_listed(tmp_path: Path, io_uring_profile: dict[str, Any]) -> None:
    with Container(tmp_path, [PY, str(HERE / "probe_syscalls.py")], io_uring_profile, rw_dirs=[]) as c:
        r = c.run()
    assert r.returncode == 0, r.stderr
    calls = json.loads(r.stdout)
    assert calls["getpriority"] == -errno.EPERM             # not in the list at all
    assert calls["io_uring_setup"] >= 0                      # listed (the engine needs it at start-up)
    assert calls["register_buffers"] == -errno.EPERM         # io_uring_register, opcode not listed
    assert calls["register_pbuf_ring_junk"] == -errno.EPERM  # listed opcode + junk upper bits
    assert calls["register_pbuf_ring"] == -errno.EINVAL      # listed opcode reaches the kernel (bad args)


def test_epoll_profile_forces_the_fallback(tmp_path: Path, epoll_profile: dict[str, Any], backend: int) -> None:
    c, listen, admin = run_sidecar(tmp_path, epoll_profile, backend, "--engine", "auto")
    with c:
        proc = c.start()
        cfg = wait_ready(admin, proc)
        assert cfg["engine"] == "epoll"
        assert "EPERM" in cfg["engine_reason"]
        assert get(listen, "/fallback") == (200, b"backend /fallback\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as m:
            assert 'ringlane_engine_info{engine="epoll"' in m.read().decode()
        c.kill("TERM")
        assert proc.wait(timeout=30) == 0


def test_io_uring_engine_fails_loudly_under_the_epoll_profile(tmp_path: Path, epoll_profile: dict[str, Any],
                                                              backend: int) -> None:
    c, _, _ = run_sidecar(tmp_path, epoll_profile, backend, "--engine", "io_uring")
    with c:
        r = c.run()
    assert r.returncode == 1
    assert "io_uring unusable here" in r.stderr and "EPERM" in r.stderr
    assert "Traceback" not in r.stderr
