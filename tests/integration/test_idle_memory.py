"""Memory an idle keep-alive connection holds after it has been used (the target is <= 1 KiB,
and no buffers): a connection that has carried a 1 MiB download to a slow reader and a 1 MiB
upload (over HTTP, replayed after a refused connection) must hold no more, once idle, than one
that carried a small request; so must a TCP relay session idle after the same bursts. The
queues that grew for those transfers give their arrays back.

The core runs in a child Python (idle_heap.py), alone in its heap."""
from __future__ import annotations

import os

import pytest

from .conftest import SANITIZER_PRELOAD, run_python

pytestmark = pytest.mark.timeout(120)

IDLE_HEAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle_heap.py")


@pytest.mark.skipif(bool(SANITIZER_PRELOAD), reason="under ASan the heap is the sanitizer's, not glibc's")
@pytest.mark.parametrize("protocol", ["http", "tcp"])
def test_used_connections_hold_no_more_once_idle(engine, nginx, protocol) -> None:
    script = f"import runpy, sys; sys.argv = ['idle_heap', {engine!r}, {protocol!r}, {nginx.a!r}]; " \
             f"runpy.run_path({IDLE_HEAP!r}, run_name='__main__')"
    rc, out = run_python(script, 100)
    measured = [line.split() for line in out.splitlines() if line.startswith("MEASURED ")]
    assert rc == 0 and measured, f"the measurement failed (exit {rc}):\n{out}"
    small, big = float(measured[0][1]), float(measured[0][2])
    assert small <= 1024, f"{small:.0f} bytes per idle connection"
    assert big <= small + 64, f"{big:.0f} bytes per idle connection after 1 MiB each way, {small:.0f} after a small request"
