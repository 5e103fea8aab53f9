"""Fixtures for the confinement tests: profiles, a loopback HTTP backend, free ports."""
from __future__ import annotations

import http.server
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parent.parent))  # tests/, for polling (this folder is not a package)

from polling import free_port  # noqa: E402,F401 -- never the same port twice; re-exported for the tests
from ringlane_sidecar.confine import uring_ops  # noqa: E402
from ringlane_sidecar.confine.profile import seccomp_profile  # noqa: E402


@pytest.fixture(scope="session")
def uring_allowlist() -> uring_ops.UringAllowlist:
    return uring_ops.from_core()


@pytest.fixture(scope="session")
def io_uring_profile(uring_allowlist: uring_ops.UringAllowlist) -> dict[str, Any]:
    return seccomp_profile("io_uring", uring_allowlist)


@pytest.fixture(scope="session")
def epoll_profile() -> dict[str, Any]:
    return seccomp_profile("epoll", None)


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b"backend " + self.path.encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def backend() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield int(srv.server_address[1])
    srv.shutdown()
