"""The per-namespace debouncer: bursts collapse, streams still render in bounded time, failures retry."""
from __future__ import annotations

import asyncio

import pytest

from ringlane_operator.debounce import Debouncer


class Recorder:
    def __init__(self, fail: int = 0, duration: float = 0.0) -> None:
        self.runs: list[tuple[str, float]] = []
        self.fail = fail
        self.duration = duration

    async def __call__(self, key: str) -> None:
        self.runs.append((key, asyncio.get_running_loop().time()))
        if self.duration:
            await asyncio.sleep(self.duration)  # simulated work of a run
        if self.fail:
            self.fail -= 1
            raise RuntimeError("API down")


def test_a_burst_is_one_run_after_the_quiet_time() -> None:
    async def main() -> None:
        rec = Recorder()
        d = Debouncer(rec, quiet=0.05, max_wait=0.5)
        start = asyncio.get_running_loop().time()
        futures = [d.request("ns") for _ in range(10)]
        await asyncio.gather(*futures)
        assert len(rec.runs) == 1
        assert 0.04 <= rec.runs[0][1] - start < 0.3
        await d.close()
    asyncio.run(main())


def test_keys_are_independent() -> None:
    async def main() -> None:
        rec = Recorder()
        d = Debouncer(rec, quiet=0.02, max_wait=0.1)
        await asyncio.gather(d.request("a"), d.request("b"), d.request("a"))
        assert sorted(k for k, _ in rec.runs) == ["a", "b"]
        await d.close()
    asyncio.run(main())


def test_a_steady_stream_still_runs_within_max_wait() -> None:
    async def main() -> None:
        rec = Recorder()
        d = Debouncer(rec, quiet=0.1, max_wait=0.2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < 1.2:
            d.request("ns")
            await asyncio.sleep(0.02)  # events arriving faster than the quiet time
        await d.request("ns")
        times = [t - start for _, t in rec.runs]
        assert times[0] < 0.6, times  # never starved by the stream (it lasts 1.2 s); room for a loaded machine
        assert len(rec.runs) >= 3  # about six: one per max_wait, and the last
        await d.close()
    asyncio.run(main())


def test_requests_during_a_run_get_the_next_run() -> None:
    async def main() -> None:
        rec = Recorder(duration=0.1)
        d = Debouncer(rec, quiet=0.01, max_wait=0.05)
        first = d.request("ns")
        await asyncio.sleep(0.05)  # the first run is in progress now
        second = d.request("ns")
        await first
        assert not second.done()
        await second
        assert len(rec.runs) == 2
        await d.close()
    asyncio.run(main())


def test_failure_reaches_waiters_and_is_retried() -> None:
    async def main() -> None:
        rec = Recorder(fail=1)
        d = Debouncer(rec, quiet=0.01, max_wait=0.05, retry_min=0.05)
        with pytest.raises(RuntimeError, match="API down"):
            await d.request("ns")
        for _ in range(100):  # the retry is scheduled by the debouncer itself
            if len(rec.runs) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(rec.runs) == 2
        await d.close()
    asyncio.run(main())
