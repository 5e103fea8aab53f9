"""File reloads: one at a time, and at most one waiting behind it (pure asyncio, no core)."""
from __future__ import annotations

import asyncio
import io

import pytest

from ringlane_sidecar import agent as agent_mod
from ringlane_sidecar.agent import Agent, RunOptions
from ringlane_sidecar.logs import JsonLog


def test_reloads_during_a_read_share_one_more_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each SIGHUP (or file change) queued a whole read and validation of the file, seconds for
    a big config: ten during one read cost ten more. Now they share one, which reads the newest
    file, and every change still ends applied."""
    reads: list[asyncio.Event] = []
    taken: list[object] = []

    async def run() -> None:
        def read(path: str) -> asyncio.Future[object]:
            gate = asyncio.Event()
            reads.append(gate)
            fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            gate_task = asyncio.ensure_future(gate.wait())
            gate_task.add_done_callback(lambda _: fut.set_result(f"read {len(reads)}"))
            return fut

        monkeypatch.setattr(agent_mod, "read_in_daemon_thread", read)
        a = Agent(RunOptions(config="/nonexistent"), JsonLog(stream=io.StringIO()))
        monkeypatch.setattr(a, "take", taken.append)
        first = asyncio.ensure_future(a.reload_file())
        while not reads:
            await asyncio.sleep(0)  # let the first reload start its read (no time passes)
        more = [asyncio.ensure_future(a.reload_file()) for _ in range(10)]
        for _ in range(20):
            await asyncio.sleep(0)
        reads[0].set()
        await first
        while not all(t.done() for t in more):  # let every read that starts finish
            for gate in reads:
                gate.set()
            await asyncio.sleep(0)

    asyncio.run(run())
    assert taken == ["read 1", "read 2"], taken
