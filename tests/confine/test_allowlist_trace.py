"""The allowlist is derived from what the sidecar really does: trace the real process under
load with strace and fail when it makes a system call the profile lacks (the test that
catches an engine change before a cluster does)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from ringlane_sidecar.confine.syscalls import allowed

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
CALL = re.compile(r"^\d+ +([a-z0-9_]+)\(")
DENIED = re.compile(r"= -1 EPERM ")


def traffic(http_port: int, tcp_port: int, admin: int) -> None:
    for _ in range(4):  # keep-alive bursts on several connections
        with socket.create_connection(("127.0.0.1", http_port), timeout=5) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            got = b""
            while got.count(b"HTTP/1.1 200") < 20:
                chunk = s.recv(65536)
                assert chunk, "connection closed early"
                got += chunk
    with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as s:
        s.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    for path in ("/metrics", "/config", "/ready", "/healthz"):
        urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=5).read()


@pytest.mark.parametrize("engine", ["io_uring", "epoll"])
def test_traced_syscalls_are_all_allowed(tmp_path: Path, engine: str, backend: int) -> None:
    http_port, tcp_port, admin = free_port(), free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    text = (f"version: 1\ngeneration: {{g}}\nadmin: {{{{address: 127.0.0.1:{admin}}}}}\nlisteners:\n"
            f"  - {{{{name: web, address: '127.0.0.1:{http_port}', rules: [{{{{name: r, backends: [{{{{cluster: b}}}}]}}}}]}}}}\n"
            f"  - {{{{name: tcp, address: '127.0.0.1:{tcp_port}', protocol: tcp, rules: [{{{{name: t, backends: [{{{{cluster: b}}}}]}}}}]}}}}\n"
            f"clusters:\n  - {{{{name: b, endpoints: [{{{{address: '127.0.0.1:{backend}'}}}}]}}}}\n")
    cfg.write_text(text.format(g=1))
    trace = tmp_path / "trace"
    proc = subprocess.Popen(["strace", "-f", "-qq", "-o", str(trace), sys.executable, "-m", "ringlane_sidecar.cli",
                             "run", "--config", str(cfg), "--engine", engine],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "sidecar did not start under strace"
            time.sleep(0.05)  # polling readiness against a deadline
        traffic(http_port, tcp_port, admin)
        cfg.write_text(text.format(g=2))  # a reload
        while b"ringlane_config_generation 2.0" not in urllib.request.urlopen(
                f"http://127.0.0.1:{admin}/metrics", timeout=5).read():
            assert time.monotonic() < deadline, "reload not applied"
            time.sleep(0.05)
        traffic(http_port, tcp_port, admin)
        # SIGTERM to the sidecar itself (strace's only child), then the drain and exit.
        child = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        os.kill(child, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    # A call that already failed with EPERM was refused by the sidecar's own lock (libuv tries
    # io_uring_setup for epoll_ctl batching after it): the profile refusing it too changes nothing.
    seen = {m.group(1) for line in trace.read_text().splitlines()
            if (m := CALL.match(line)) and not DENIED.search(line)}
    allow = set(allowed(engine))  # --engine epoll makes no io_uring call at all, not even a probe
    missing = sorted(seen - allow)
    assert not missing, f"the {engine} sidecar made system calls its profile lacks: {missing}"
