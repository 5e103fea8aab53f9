"""The `ringlane-sidecar` command line as a user meets it: help, start-up failures, probe."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from .conftest import Nginx, SidecarFactory, sidecar_bin
from .util import TRACEBACK, free_port, http_config, http_get, port_open

REPO = Path(__file__).resolve().parents[2]
BAD = REPO / "examples" / "invalid" / "bad.yaml"


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sidecar_bin(), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("argv,flags", [
    ((), ["run", "check", "probe", "seccomp-profile", "--version"]),
    (("run",), ["--config", "--engine", "--workers", "--cpus", "--admin", "--log-level",
                "auto", "io_uring", "epoll", "SIGTERM"]),
    (("check",), ["--config"]),
    (("probe",), ["JSON", "io_uring"]),
])
def test_help_exits_0_and_names_the_flags(argv: tuple[str, ...], flags: list[str]) -> None:
    r = cli(*argv, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: ringlane-sidecar"), r.stdout
    for flag in flags:
        assert flag in r.stdout, f"{flag!r} missing from `{' '.join(argv)} --help`:\n{r.stdout}"
    assert r.stderr == ""


def test_invalid_initial_config_exits_2_with_one_log_line_per_error(sidecar: SidecarFactory) -> None:
    # `check` is the reference list of errors for this file (one "FILE: path: message" per line).
    chk = cli("check", "--config", str(BAD))
    assert chk.returncode == 2
    expected = [line.split(": ", 1)[1] for line in chk.stderr.splitlines()]
    assert len(expected) >= 4, chk.stderr  # the file documents four problems

    sc = sidecar(None, config_path=BAD, wait_ready=False)
    assert sc.wait_exit(15) == 2
    records = sc.logs()
    assert all("raw" not in r for r in records), f"non-JSON line on stderr:\n{sc.stderr()}"
    errors = [r for r in records if r.get("level") == "error"]
    assert sorted(r["error"] for r in errors) == sorted(expected), sc.stderr()
    assert all(r["file"] == str(BAD) for r in errors)
    for field in ("listeners[0].address", "backends[0].cluster", "timeouts.request", "clusters[0].colour"):
        assert sum(field in r["error"] for r in errors) == 1, (field, sc.stderr())
    assert TRACEBACK not in sc.stderr()
    assert not sc.find_logs("engine chosen"), "the engine must not start on an invalid config"


def test_missing_config_file_exits_2_with_a_clear_message(sidecar: SidecarFactory, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config.yaml"
    sc = sidecar(None, config_path=missing, wait_ready=False)
    assert sc.wait_exit(15) == 2
    text = sc.stderr()
    assert TRACEBACK not in text
    errors = [r for r in sc.logs() if r.get("level") == "error"]
    assert len(errors) == 1, text
    msg = json.dumps(errors[0])
    assert str(missing) in msg, text
    assert any(w in msg.lower() for w in ("no such file", "not found", "does not exist", "missing")), text


def test_listener_port_in_use_exits_1_with_a_clear_message(sidecar: SidecarFactory, nginx: Nginx) -> None:
    with socket.socket() as taken:  # no SO_REUSEPORT: the sidecar's reuseport bind must fail
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        admin = free_port()
        cfg = http_config(port, admin, routes=[("r1", "/", "a")], clusters={"a": [nginx.a]})
        sc = sidecar(cfg, wait_ready=False, admin_port=admin)
        code = sc.wait_exit(15)
    text = sc.stderr()
    assert code == 1, text
    assert TRACEBACK not in text
    errors = [r for r in sc.logs() if r.get("level") == "error"]
    assert errors, text
    msg = json.dumps(errors[-1]).lower()
    assert f"127.0.0.1:{port}" in msg and ("in use" in msg or "eaddrinuse" in msg), text
    # Nothing was ever served: a start-up failure must not claim to keep serving a previous config.
    assert not sc.find_logs("config rejected, still serving the previous one"), text


def test_admin_port_in_use_exits_1_with_a_clear_message(sidecar: SidecarFactory, nginx: Nginx) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        admin = taken.getsockname()[1]
        cfg = http_config(free_port(), admin, routes=[("r1", "/", "a")], clusters={"a": [nginx.a]})
        sc = sidecar(cfg, wait_ready=False, admin_port=admin)
        code = sc.wait_exit(15)
    text = sc.stderr()
    assert code == 1, text
    assert TRACEBACK not in text
    msg = json.dumps([r for r in sc.logs() if r.get("level") == "error"]).lower()
    assert f"127.0.0.1:{admin}" in msg and ("in use" in msg or "eaddrinuse" in msg), text


def test_probe_prints_json_with_kernel_usable_and_features() -> None:
    r = cli("probe")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["kernel"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    uring = out["io_uring"]
    assert isinstance(uring["usable"], bool)
    assert {"multishot_accept", "multishot_recv", "provided_buffer_ring"} <= set(uring["features"])
    assert all(isinstance(v, bool) for v in uring["features"].values())
    assert out["auto_engine"]["engine"] in ("io_uring", "epoll") and out["auto_engine"]["reason"]
    if uring["usable"]:
        assert uring["setup_error"] is None
    else:
        assert uring["setup_error"] and out["auto_engine"]["engine"] == "epoll"


def test_probe_under_seccomp_reports_the_block(seccomp_exec: str) -> None:
    r = subprocess.run([seccomp_exec, "EPERM", sidecar_bin(), "probe"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["io_uring"]["usable"] is False
    assert out["io_uring"]["setup_error"].startswith("EPERM"), out
    assert not any(out["io_uring"]["features"].values())
    assert out["auto_engine"]["engine"] == "epoll"


def test_run_flags_override_the_config(sidecar: SidecarFactory, nginx: Nginx) -> None:
    """--admin, --workers, --cpus and --engine win over the config; /config shows what runs."""
    listen, cfg_admin, admin = free_port(), free_port(), free_port()
    cfg = http_config(listen, cfg_admin, routes=[("r1", "/", "a")], clusters={"a": [nginx.a]}, generation=9)
    cfg["engine"] = {"kind": "io_uring", "workers": 2}
    cpu = max(os.sched_getaffinity(0))
    sc = sidecar(cfg, args=["--admin", f"127.0.0.1:{admin}", "--workers", "1", "--cpus", str(cpu),
                            "--engine", "epoll"], admin_port=admin, listen_port=listen)
    view = sc.config()
    for key in ("generation", "served_generation", "hash", "engine", "engine_reason", "kernel", "workers", "cpus",
                "listeners", "draining"):
        assert key in view, (key, view)
    assert (view["generation"], view["served_generation"], view["draining"]) == (9, 9, False)
    assert (view["engine"], view["engine_reason"]) == ("epoll", "requested"), view
    assert (view["workers"], view["cpus"], view["listeners"]) == (1, [cpu], ["web"]), view
    assert len(view["hash"]) == 64 and int(view["hash"], 16) >= 0
    assert not port_open(cfg_admin), "the config's admin address must not be served when --admin is given"
    status, body = http_get(sc.listener + "/flags")
    assert (status, body) == (200, b"backend-a /flags\n")


@pytest.mark.parametrize("argv,words", [
    (["--workers", "0"], ["--workers", "at least 1"]),
    (["--cpus", "x-y"], ["--cpus", "invalid CPU list"]),
    (["--engine", "dpdk"], ["--engine", "invalid choice"]),
])
def test_bad_run_flags_exit_2_with_usage(argv: list[str], words: list[str], tmp_path: Path) -> None:
    r = cli("run", "--config", str(tmp_path / "unused.yaml"), *argv)
    assert r.returncode == 2, r
    for w in words:
        assert w in r.stderr, r.stderr
    assert TRACEBACK not in r.stderr
