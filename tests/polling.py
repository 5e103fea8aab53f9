"""Ports and condition waits shared by the agent and the integration tests (imported as
`polling`: pytest puts tests/ on sys.path for the packages under it)."""
from __future__ import annotations

import socket
import time
from typing import Callable, TypeVar

T = TypeVar("T")


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now, and not one this process was given
    before: the kernel may hand the same free port to two calls in a row, and `port, dead =
    free_port(), free_port()` then makes the "dead" endpoint the proxy's own listener."""
    if len(_handed_out) > 10000:  # a long session: the oldest are long closed
        _handed_out.clear()
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(pred: Callable[[], T], timeout: float = 5.0, what: str | Callable[[], str] = "condition",
             interval: float = 0.005) -> T:
    """Poll pred until it returns something truthy (returned) or the deadline passes (AssertionError).

    Exceptions from pred count as "not yet" (e.g. connection refused while a server starts).
    what may be a callable, evaluated at the deadline (e.g. to show a log as it is then)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            v = pred()
            if v:
                return v
            last = v
        except Exception as exc:  # noqa: BLE001 -- not ready yet; shown if the deadline passes
            last = exc
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for {desc} (last: {last!r})")
        time.sleep(interval)  # poll period of a condition with a deadline
