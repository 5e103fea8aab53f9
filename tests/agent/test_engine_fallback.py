"""io_uring blocked for real -- by a seccomp filter (libseccomp launcher, EPERM as Docker and
containerd do, ENOSYS as CRI-O and Podman do) and by the kernel.io_uring_disabled sysctl:
`--engine auto` falls back to epoll, says why, and proxies; `--engine io_uring` exits 1."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import Nginx, Sidecar, SidecarFactory, sidecar_bin
from .util import TRACEBACK, RawClient, free_port, http_config, parse_samples, sample, wait_for

SYSCTL = Path("/proc/sys/kernel/io_uring_disabled")

REASON_WORDS = {"EPERM": ["EPERM", "seccomp"], "ENOSYS": ["ENOSYS"], "sysctl": ["io_uring_disabled=2"]}


def config(nginx: Nginx, kind: str = "auto") -> tuple[dict[str, object], int, int]:
    listen, admin = free_port(), free_port()
    cfg = http_config(listen, admin, routes=[("r1", "/", "a")], clusters={"a": [nginx.a]})
    cfg["engine"] = {"kind": kind}
    return cfg, listen, admin


def assert_epoll_fallback(sc: Sidecar, why: str) -> None:
    chosen = sc.find_logs("engine chosen")
    assert len(chosen) == 1, sc.stderr()
    assert chosen[0]["engine"] == "epoll", chosen
    reason = chosen[0]["reason"]
    for w in REASON_WORDS[why]:
        assert w in reason, f"{w!r} not in the logged reason {reason!r}"
    assert "io_uring" in reason

    s = parse_samples(sc.metrics_text())
    info = [dict(ls) for (name, ls), v in s.items() if name == "ringlane_engine_info" and v == 1]
    assert len(info) == 1, info
    assert info[0]["engine"] == "epoll" and info[0]["reason"] == reason, info
    cfg = sc.config()
    assert (cfg["engine"], cfg["engine_reason"]) == ("epoll", reason), cfg

    # It proxies, on one keep-alive connection and on fresh ones.
    assert sc.listen_port
    c = RawClient(sc.listen_port)
    for i in range(20):
        r = c.request(f"/fallback/{i}")
        assert (r.status, r.body) == (200, f"backend-a /fallback/{i}\n".encode())
    c.close_and_drain()
    for i in range(5):
        r = RawClient(sc.listen_port).request(f"/fresh/{i}", close=True)
        assert (r.status, r.body) == (200, f"backend-a /fresh/{i}\n".encode())
    wait_for(lambda: sc.metric("ringlane_http_requests_total", listener="web", route="r1", code="2xx") == 25, 5,
             "25 requests counted")
    s = parse_samples(sc.metrics_text())
    assert sample(s, "ringlane_io_uring_submits_total") == 0
    assert sample(s, "ringlane_io_uring_enters_total") == 0


def assert_refuses_io_uring(sc: Sidecar, why: str) -> None:
    code = sc.wait_exit(15)
    text = sc.stderr()
    assert code == 1, text
    assert TRACEBACK not in text
    errors = [r for r in sc.logs() if r.get("level") == "error"]
    assert len(errors) == 1, text
    msg = json.dumps(errors[0])
    assert "io_uring" in msg and any(w in msg for w in REASON_WORDS[why]), msg
    assert not sc.find_logs("started"), "must not serve anything"
    assert not sc.find_logs("engine chosen", engine="epoll"), "io_uring was asked for: no silent fallback"


@pytest.mark.parametrize("errno_name", ["EPERM", "ENOSYS"])
def test_auto_falls_back_to_epoll_under_seccomp(sidecar: SidecarFactory, nginx: Nginx, seccomp_exec: str,
                                                errno_name: str) -> None:
    cfg, listen, admin = config(nginx)
    sc = sidecar(cfg, prefix=[seccomp_exec, errno_name], args=["--engine", "auto"], admin_port=admin,
                 listen_port=listen)
    assert_epoll_fallback(sc, errno_name)
    # The filter is real and visible to the sidecar itself.
    assert sc.config()["confinement"]["seccomp_profile"] == "filter"


@pytest.mark.parametrize("errno_name", ["EPERM", "ENOSYS"])
@pytest.mark.parametrize("how", ["flag", "config"])
def test_io_uring_requested_exits_1_under_seccomp(sidecar: SidecarFactory, nginx: Nginx, seccomp_exec: str,
                                                  errno_name: str, how: str) -> None:
    cfg, listen, admin = config(nginx, kind="io_uring" if how == "config" else "auto")
    args = ["--engine", "io_uring"] if how == "flag" else []
    sc = sidecar(cfg, prefix=[seccomp_exec, errno_name], args=args, wait_ready=False, admin_port=admin,
                 listen_port=listen)
    assert_refuses_io_uring(sc, errno_name)


def test_unblocked_auto_picks_io_uring(sidecar: SidecarFactory, nginx: Nginx) -> None:
    """The control: without the filter, the same config runs io_uring here (so the fallback
    above is caused by the block, not by this machine)."""
    probe = json.loads(subprocess.run([sidecar_bin(), "probe"], capture_output=True, text=True, timeout=30).stdout)
    if not probe["io_uring"]["usable"]:
        pytest.skip(f"io_uring unusable on this machine: {probe['io_uring']['setup_error']}")
    cfg, listen, admin = config(nginx)
    sc = sidecar(cfg, args=["--engine", "auto"], admin_port=admin, listen_port=listen)
    chosen = sc.find_logs("engine chosen")
    assert chosen and chosen[0]["engine"] == "io_uring", sc.stderr()


@pytest.mark.skipif(not SYSCTL.exists(), reason="kernel without kernel.io_uring_disabled")
def test_io_uring_disabled_sysctl(sidecar: SidecarFactory, nginx: Nginx) -> None:
    """kernel.io_uring_disabled=2 is machine-wide: it is set only while the two sidecars probe,
    and always restored (other processes on this machine may want io_uring)."""
    cfg_auto, listen, admin = config(nginx)
    cfg_uring, listen2, admin2 = config(nginx)
    before = SYSCTL.read_text().strip()
    try:
        try:
            SYSCTL.write_text("2\n")
        except OSError as exc:
            pytest.skip(f"cannot change kernel.io_uring_disabled here: {exc}")
        auto = sidecar(cfg_auto, args=["--engine", "auto"], wait_ready=False, admin_port=admin, listen_port=listen)
        uring = sidecar(cfg_uring, args=["--engine", "io_uring"], wait_ready=False, admin_port=admin2,
                        listen_port=listen2)
        auto.wait_log("engine chosen", timeout=15)
        code = uring.wait_exit(15)
    finally:
        SYSCTL.write_text(before + "\n")
    assert SYSCTL.read_text().strip() == before
    assert code == 1
    assert_refuses_io_uring(uring, "sysctl")
    auto.wait_ready()
    assert_epoll_fallback(auto, "sysctl")
