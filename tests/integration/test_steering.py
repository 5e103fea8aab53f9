"""CPU-steered accept: a connection made from a thread running on CPU k is accepted by the
worker pinned to CPU k (reuseport cBPF on SKF_AD_CPU; on loopback the SYN is processed on the
sender's CPU).

Per-worker acceptance is not in Core's summed stats, so this reads the per-worker listener
counters through the C API the stats are built on: rl_core_read_listener(core, worker, slot).
"""
from __future__ import annotations

import os
import threading

import pytest

from .helpers import Conn, cluster, config, free_port, http_listener, rule, wait_for

pytestmark = pytest.mark.timeout(30)

if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
    pytest.skip("needs CPUs 0 and 1", allow_module_level=True)


def per_worker_opened(core, listener: str) -> list[int]:  # type: ignore[no-untyped-def]
    ffi, lib = core._ffi, core._lib
    slot = core.slots.listeners.slots[listener]
    out = ffi.new("rl_listener_stats *")
    counts = []
    for w in core.workers():
        counts.append(int(out.conns_opened) if lib.rl_core_read_listener(core._core, w, slot, out) == 0 else 0)
    return counts


def connect_from_cpu(cpu: int, port: int, n: int) -> None:
    """n connections (one request each) made by a thread pinned to cpu."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            os.sched_setaffinity(threading.get_native_id(), {cpu})
            for i in range(n):
                with Conn(port) as c:
                    assert c.request("GET", f"/cpu{cpu}/{i}").status == 200
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not errors, errors


@pytest.mark.parametrize("cpus", [[0, 1], [1, 0]], ids=["w0-cpu0", "w0-cpu1"])
def test_connection_accepted_by_worker_on_client_cpu(core, nginx, cpus) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=cpus)
    n = 40
    for cpu in (0, 1):
        before = per_worker_opened(c, "web")
        connect_from_cpu(cpu, port, n)
        after = wait_for(lambda: (lambda x: x if sum(x) == sum(before) + n else None)(per_worker_opened(c, "web")),
                         5, "the accepts to be counted")
        delta = [a - b for a, b in zip(after, before)]
        worker = cpus.index(cpu)
        assert delta[worker] == n, f"from CPU {cpu}: per-worker accepts {delta}, expected all on worker {worker}"


def test_unpinned_workers_still_accept_everything(core, nginx) -> None:
    port = free_port()
    c = core(config([http_listener(port, rule("all", "a"))], [cluster("a", nginx.a)]), cpus=[None, None])
    connect_from_cpu(0, port, 20)
    connect_from_cpu(1, port, 20)
    wait_for(lambda: sum(per_worker_opened(c, "web")) == 40, 5, "40 accepts")
