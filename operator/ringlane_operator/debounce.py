"""Per-key debounced actions: many requests in a burst -> one run, within a bounded delay.

A run starts once a key has been quiet for `quiet` seconds, but never later than
`max_wait` after the first pending request, so a steady stream of changes (EndpointSlices
of a busy Service) still renders at least that often. Runs of one key never overlap;
requests that arrive during a run get the next run. A failed run is retried with backoff.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


@dataclass
class _Key:
    first: float | None = None
    last: float = 0.0
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    poke: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    failures: int = 0
    retry: asyncio.TimerHandle | None = None


class Debouncer(Generic[K]):
    def __init__(self, action: Callable[[K], Awaitable[None]], quiet: float = 0.2, max_wait: float = 0.5,
                 retry_min: float = 1.0, retry_max: float = 30.0) -> None:
        self.action = action
        self.quiet = quiet
        self.max_wait = max_wait
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._keys: dict[K, _Key] = {}

    def request(self, key: K) -> asyncio.Future[None]:
        """Ask for a run of key; the future resolves when a run that started after now ends."""
        loop = asyncio.get_running_loop()
        st = self._keys.setdefault(key, _Key())
        now = loop.time()
        if st.first is None:
            st.first = now
        st.last = now
        fut: asyncio.Future[None] = loop.create_future()
        st.waiters.append(fut)
        st.poke.set()
        if st.task is None or st.task.done():
            st.task = loop.create_task(self._worker(key, st), name=f"debounce:{key}")
        return fut

    async def _worker(self, key: K, st: _Key) -> None:
        loop = asyncio.get_running_loop()
        while st.waiters:
            while True:  # wait for quiet, bounded by max_wait
                assert st.first is not None
                deadline = min(st.last + self.quiet, st.first + self.max_wait)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                st.poke.clear()
                try:
                    await asyncio.wait_for(st.poke.wait(), remaining)
                except TimeoutError:
                    pass
            waiters, st.waiters, st.first = st.waiters, [], None
            try:
                await self.action(key)
            except Exception as exc:  # the edge: report to the waiters, retry by ourselves
                st.failures += 1
                delay = min(self.retry_max, self.retry_min * 2 ** (st.failures - 1))
                log.warning("run for %s failed (%s); retrying in %.1fs", key, exc, delay)
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                        w.exception()  # retrieved: nobody awaiting is not an error
                if st.retry is None:
                    st.retry = loop.call_later(delay, self._retry, key)
                continue
            st.failures = 0
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def _retry(self, key: K) -> None:
        st = self._keys.get(key)
        if st is not None:
            st.retry = None
            self.request(key)

    async def close(self) -> None:
        for st in self._keys.values():
            if st.retry is not None:
                st.retry.cancel()
            if st.task is not None:
                st.task.cancel()
        await asyncio.gather(*(st.task for st in self._keys.values() if st.task), return_exceptions=True)
