"""A real nginx for the tests (the agent's and the integration tests' backends, the framing
tests' reverse proxy): one config preamble and one way to start and stop it. Imported like
`polling` (pytest puts tests/ on sys.path)."""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from polling import port_open, wait_for


def nginx_exe() -> str | None:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    return exe if os.path.exists(exe) else None


def require_nginx() -> str:
    """nginx's path; fails the test (a peer `make setup` installs) when it is missing."""
    exe = nginx_exe()
    if exe is None:
        pytest.fail("nginx is not installed (Debian nginx-light; `make setup`)")
    return exe


def nginx_conf(d: Path, http_body: str, connections: int = 4096) -> str:
    """A foreground, single-process nginx whose files all stay under d; http_body goes inside
    `http { }` (servers, keep-alive settings)."""
    return (f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n"
            f"error_log {d}/error.log warn;\nevents {{ worker_connections {connections}; }}\n"
            f"http {{\n    access_log off;\n    client_body_temp_path {d}/client_body;\n"
            f"    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n"
            f"    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;\n{http_body}}}\n")


@contextmanager
def running_nginx(exe: str, d: Path, conf: str, ports: list[int]) -> Iterator[subprocess.Popen[bytes]]:
    """nginx started with conf, once every port listens (the test fails if it exits first);
    stopped afterwards."""
    (d / "nginx.conf").write_text(conf)
    proc = subprocess.Popen([exe, "-c", str(d / "nginx.conf"), "-p", str(d)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is not None or all(port_open(p) for p in ports), 10, "nginx to listen")
        if proc.poll() is not None:
            pytest.fail(f"nginx exited {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
