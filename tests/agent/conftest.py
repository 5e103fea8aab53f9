"""Fixtures for the agent tests: the real `ringlane-sidecar run` process, nginx backends,
a slow Python backend, and a seccomp launcher compiled for the session.

Every wait is a condition with a deadline (util.wait_for); no sleep synchronises anything.
"""
from __future__ import annotations

import http.server
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from nginx_proc import nginx_conf, require_nginx, running_nginx

from .util import (
    TRACEBACK,
    dump_config,
    free_port,
    http_get,
    json_lines,
    parse_samples,
    sample,
    wait_for,
)

HERE = Path(__file__).parent


def sidecar_bin() -> str:
    """The console script of the venv running the tests (.venv/bin/ringlane-sidecar)."""
    exe = Path(sys.executable).parent / "ringlane-sidecar"
    if exe.exists():
        return str(exe)
    found = shutil.which("ringlane-sidecar")
    if not found:
        pytest.fail("ringlane-sidecar is not installed: run `make setup`")
    return found


# ---- nginx: backends A and B ----

@dataclass
class Nginx:
    port_a: int
    port_b: int
    proc: subprocess.Popen[bytes]

    @property
    def a(self) -> str:
        return f"127.0.0.1:{self.port_a}"

    @property
    def b(self) -> str:
        return f"127.0.0.1:{self.port_b}"


NGINX_SERVERS = """\
    keepalive_requests 100000;
    default_type text/plain;
    server {{ listen 127.0.0.1:{a}; location / {{ return 200 "backend-a $request_uri\\n"; }} }}
    server {{ listen 127.0.0.1:{b}; location / {{ return 200 "backend-b $request_uri\\n"; }} }}
"""


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    exe = require_nginx()
    d = tmp_path_factory.mktemp("nginx")
    a, b = free_port(), free_port()
    with running_nginx(exe, d, nginx_conf(d, NGINX_SERVERS.format(a=a, b=b)), [a, b]) as proc:
        yield Nginx(a, b, proc)


# ---- a slow Python backend (answers after a delay) ----

class SlowBackend:
    """GET /slow/<seconds>/... answers 200 after that many seconds; counts requests it has begun."""

    def __init__(self) -> None:
        backend = self
        self.started = 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                with backend.lock:
                    backend.started += 1
                parts = self.path.split("/")
                delay = float(parts[2]) if len(parts) > 2 and parts[1] == "slow" else 0.0
                time.sleep(delay)  # the backend's behaviour under test, not synchronisation
                body = f"slow {self.path}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_backend() -> Iterator[SlowBackend]:
    b = SlowBackend()
    yield b
    b.close()


# ---- the sidecar process ----

@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    admin_port: int
    listen_port: int | None
    argv: list[str]
    signalled_at: float | None = None

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def listener(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    # logs
    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def logs(self) -> list[dict[str, Any]]:
        return json_lines(self.stderr())

    def find_logs(self, msg: str, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.logs() if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items())]

    def wait_log(self, msg: str, timeout: float = 5.0, count: int = 1, **fields: Any) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            lines = self.find_logs(msg, **fields)
            return lines if len(lines) >= count else None

        return wait_for(found, timeout,
                        lambda: f"{count} log line(s) {msg!r} {fields or ''}\n--- stderr ---\n{self.stderr()}")

    # admin API
    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        return http_get(self.admin + path, timeout)

    def config(self) -> dict[str, Any]:
        status, body = self.get("/config")
        assert status == 200, body
        return json.loads(body)

    def metrics_text(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, body
        return body.decode()

    def metric(self, name: str, **labels: str) -> float | None:
        return sample(parse_samples(self.metrics_text()), name, **labels)

    # process
    def running(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.signalled_at = time.monotonic()
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"sidecar still running {timeout}s later\n--- stderr ---\n{self.stderr()}") from None

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll /ready until 200; fail at once (with stderr) if the process exits first."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"sidecar exited {self.proc.returncode} before it was ready\n--- stderr ---\n"
                            f"{self.stderr()}")
            try:
                last = self.get("/ready", 1.0)
                if last[0] == 200:
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.02)  # poll period of a condition with a deadline
        pytest.fail(f"/ready not 200 after {timeout}s (last: {last!r})\n--- stderr ---\n{self.stderr()}")


SidecarFactory = Callable[..., Sidecar]


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SidecarFactory]:
    """start(cfg, *, args=(), prefix=(), wait_ready=True, config_path=None, admin_port, listen_port)

    Writes cfg (dict or raw text) to config_path (default tmp/config.yaml) unless it is None,
    starts `ringlane-sidecar run --config ...`, waits for /ready, and returns a Sidecar.
    Teardown: SIGTERM, then SIGKILL if needed; fails the test if stderr had a Python traceback."""
    started: list[Sidecar] = []
    counter = itertools.count(1)

    def start(cfg: dict[str, Any] | str | None, *, args: tuple[str, ...] | list[str] = (),
              prefix: tuple[str, ...] | list[str] = (), wait_ready: bool = True, config_path: Path | None = None,
              admin_port: int | None = None, listen_port: int | None = None,
              env: dict[str, str] | None = None) -> Sidecar:
        n = next(counter)
        path = config_path or tmp_path / f"config-{n}.yaml"
        if cfg is not None:
            path.write_text(dump_config(cfg))
        log_path = tmp_path / f"sidecar-{n}.stderr"
        argv = [*prefix, sidecar_bin(), "run", "--config", str(path), *args]
        with open(log_path, "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
        sc = Sidecar(proc, path, log_path, admin_port or 0, listen_port, argv)
        started.append(sc)
        if wait_ready:
            if not sc.admin_port:
                pytest.fail("wait_ready needs admin_port")
            sc.wait_ready()
        return sc

    yield start

    problems = []
    for sc in started:
        if sc.proc.poll() is None:
            sc.proc.send_signal(signal.SIGTERM)
            try:
                sc.proc.wait(10)
            except subprocess.TimeoutExpired:
                sc.proc.kill()
                sc.proc.wait()
                problems.append(f"sidecar pid {sc.proc.pid} ignored SIGTERM for 10 s (SIGKILLed)")
        text = sc.stderr()
        if TRACEBACK in text:
            problems.append(f"Python traceback on the sidecar's stderr ({' '.join(sc.argv)}):\n{text}")
    if problems:
        pytest.fail("\n\n".join(problems))


# ---- seccomp launcher ----

@pytest.fixture(scope="session")
def seccomp_exec(tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/agent/helpers/seccomp_exec.c compiled against libseccomp for this session."""
    gcc = shutil.which("gcc")
    if not gcc or not Path("/usr/include/seccomp.h").exists():
        pytest.fail("gcc and libseccomp-dev are needed (`make setup`)")
    out = tmp_path_factory.mktemp("helpers") / "seccomp_exec"
    r = subprocess.run([gcc, "-O2", "-Wall", "-Werror", "-o", str(out), str(HERE / "helpers" / "seccomp_exec.c"),
                        "-lseccomp"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.fail(f"cannot build seccomp_exec: {r.stderr}")
    return str(out)


# ---- Prometheus (Debian's binary) ----

@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str) -> Any:
        status, body = http_get(self.url + path, 5.0)
        assert status == 200, (status, body)
        doc = json.loads(body)
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        import urllib.parse

        return self.api("/api/v1/query?" + urllib.parse.urlencode({"query": promql}))["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("/api/v1/targets")["activeTargets"]


PROM_CONF = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: ringlane-sidecar
    static_configs:
      - targets: ["{target}"]
"""


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], Prometheus]]:
    """start(target "host:port") -> a running Prometheus scraping that target every second."""
    procs: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        exe = shutil.which("prometheus")
        if not exe:
            pytest.fail("prometheus is not installed: scripts/ensure-apt.sh prometheus (Makefile APT_PACKAGES)")
        d = tmp_path / f"prometheus-{len(procs)}"
        d.mkdir()
        (d / "prometheus.yml").write_text(PROM_CONF.format(target=target))
        port = free_port()
        log = d / "prometheus.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([exe, f"--config.file={d / 'prometheus.yml'}", f"--storage.tsdb.path={d / 'data'}",
                                     f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                    stdin=subprocess.DEVNULL, stdout=f, stderr=f, start_new_session=True)
        p = Prometheus(proc, port, log)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.terminate()
            try:
                p.proc.wait(10)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
