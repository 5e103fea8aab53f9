"""Fixtures for the data-plane integration tests: the C core driven in-process through cffi
(ringlane_sidecar.core.Core), real sockets, a real nginx and small Python backends.

Every behaviour test asks for the `core` factory, which depends on the `engine` fixture, so
each one runs once on io_uring and once on epoll. Every wait is a condition with a deadline
(helpers.wait_for); nothing sleeps to synchronise.
"""
from __future__ import annotations

import os as _os  # noqa: E402 (must run before the imports below spawn anything)

# `make asan` preloads the sanitizer runtimes into this Python so the instrumented core can
# load; the peers the tests start (curl, nginx) must not inherit that. A test that runs the
# core in a child Python hands it back (SANITIZER_PRELOAD).
SANITIZER_PRELOAD = _os.environ.pop("LD_PRELOAD", None)

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest

from ringlane_sidecar.config.model import Config
from ringlane_sidecar.core import Core

from nginx_proc import nginx_conf, require_nginx, running_nginx

from .backends import HttpBackend, TcpServer
from .helpers import free_port, wait_for

ENGINES = ("io_uring", "epoll")


def worker_cpus() -> list[int]:
    """Two workers pinned to CPUs 0 and 1 (the brief's layout), or what the cpuset allows."""
    allowed = sorted(os.sched_getaffinity(0))
    return [0, 1] if {0, 1} <= set(allowed) else allowed[:2]


def run_python(script: str, timeout: float) -> tuple[int, str]:
    """Runs script in a child Python (the core there, so a crash or a spinning worker fails one
    test instead of the session): its exit code (-9 when killed at the deadline) and output."""
    env = dict(os.environ, LD_PRELOAD=SANITIZER_PRELOAD) if SANITIZER_PRELOAD else None
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return -9, out.decode(errors="replace")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def apply_and_wait(core: Core, cfg: Config, timeout: float = 5.0) -> None:
    """Publish cfg and wait until every worker serves its generation."""
    core.apply(cfg)
    wait_for(lambda: core.served_generation() == cfg.generation, timeout,
             f"workers to serve generation {cfg.generation} (serving {core.served_generation()})")


CoreFactory = Callable[..., Core]


@pytest.fixture
def core(engine: str) -> Iterator[CoreFactory]:
    """make(cfg, cpus=None) -> a started Core(engine, [0, 1]) serving cfg; closed at teardown."""
    made: list[Core] = []

    def make(cfg: Config | None = None, cpus: list[int | None] | None = None, **opts: int) -> Core:
        c = Core(engine, list(cpus) if cpus is not None else worker_cpus(), **opts)
        made.append(c)
        if cfg is not None:
            apply_and_wait(c, cfg)
        return c

    yield make
    for c in made:
        c.close()


# ---- nginx (Debian nginx-light) ----

NGINX_SERVERS = """\
    keepalive_requests 100000;
    keepalive_timeout 60s;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{a};
        root {d}/www;
        location / {{
            return 200 "$request_uri|$http_x_env|$http_x_forwarded_for|$http_x_debug|$http_x_route|$host|$request_method\\n";
        }}
        location = /big.bin {{ }}
        location = /status/503 {{ return 503 "unavailable\\n"; }}
        location = /status/404 {{ return 404 "missing\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{b};
        location / {{ return 200 "B $request_uri\\n"; }}
    }}
"""

BIG_SIZE = 1 << 20


@dataclass
class Nginx:
    port_a: int
    port_b: int
    big_sha256: str
    proc: subprocess.Popen[bytes]

    @property
    def a(self) -> str:
        return f"127.0.0.1:{self.port_a}"

    @property
    def b(self) -> str:
        return f"127.0.0.1:{self.port_b}"


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """Backend A (echoes request facts, serves /big.bin = 1 MiB, /status/503) and backend B."""
    exe = require_nginx()
    d = tmp_path_factory.mktemp("nginx")
    (d / "www").mkdir()
    big = os.urandom(BIG_SIZE)
    (d / "www" / "big.bin").write_bytes(big)
    a, b = free_port(), free_port()
    with running_nginx(exe, d, nginx_conf(d, NGINX_SERVERS.format(d=d, a=a, b=b)), [a, b]) as proc:
        yield Nginx(a, b, hashlib.sha256(big).hexdigest(), proc)


# ---- Python backends ----

@pytest.fixture
def tcp_server() -> Iterator[Callable[..., TcpServer]]:
    """start(handler) -> a TcpServer running handler(conn, index) per connection; closed at teardown."""
    servers: list[TcpServer] = []

    def start(handler: Callable[..., None]) -> TcpServer:
        s = TcpServer(handler)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def http_backend() -> Iterator[Callable[..., HttpBackend]]:
    """start(app) -> an HTTP/1.1 keep-alive backend calling app(req); closed at teardown."""
    servers: list[HttpBackend] = []

    def start(app: Callable[..., object]) -> HttpBackend:
        s = HttpBackend(app)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def blackhole() -> Iterator[str]:
    """An address whose SYNs are dropped (a listener with a full accept queue): connects hang."""
    import socket

    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.fail("the blackhole listener still completes connections")
    except (TimeoutError, socket.timeout):
        pass
    finally:
        probe.close()
    yield f"127.0.0.1:{port}"
    for s in fillers:
        s.close()
    lsock.close()
