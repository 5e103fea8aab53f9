"""The C proxy core as a Python object: start workers, apply configs, drain, read stats."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

from ringlane_sidecar.compile import compile_config, split_rule_key
from ringlane_sidecar.slots import Slots
from ringlane_sidecar.config import Config

ENGINES = {"io_uring": 1, "epoll": 2}
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class CoreError(Exception):
    """The core could not start or refused a config; the message says why."""


def _ffi():  # type: ignore[no-untyped-def]
    from ringlane_sidecar.native import load

    return load()


def allowed_cpus() -> list[int]:
    """The CPUs of this process's cpuset (what kubelet's static CPU manager gave the container)."""
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class WorkerTotals:
    uring_submits: int
    uring_enters: int
    uring_buf_exhausted: int
    epoll_waits: int
    loop_turns: int
    config_generation: int
    conns_active: int
    upstream_conns_active: int
    upstream_conns_idle: int
    rx_copied: int  # receives copied out of a scarce receive-buffer pool
    draining: bool  # the worker has taken a drain in


class Core:
    def __init__(self, engine: str, cpus: list[int | None], buf_size: int = 16384,
                 recv_bufs: int = 1024, tx_bufs: int = 512, spill_bufs: int = 0, ring_entries: int = 0) -> None:
        ffi, lib = _ffi()
        self._ffi, self._lib = ffi, lib
        if engine not in ENGINES:
            raise CoreError(f"unknown engine {engine!r} (io_uring or epoll)")
        if not 1 <= len(cpus) <= lib.RL_MAX_WORKERS:
            raise CoreError(f"{len(cpus)} workers: the core runs 1 to {lib.RL_MAX_WORKERS}")
        opts = ffi.new("rl_core_opts *")
        opts.engine = ENGINES[engine]
        opts.nworkers = len(cpus)
        for i, cpu in enumerate(cpus):
            opts.cpus[i] = -1 if cpu is None else cpu
        opts.buf_size, opts.nrecv_bufs, opts.ntx_bufs = buf_size, recv_bufs, tx_bufs
        opts.nspill_bufs = spill_bufs  # 0: as many as buffer ids allow
        opts.ring_entries = ring_entries  # io_uring SQ size; 0: the default (1024)
        err = ffi.new("char[256]")
        self._core = lib.rl_core_new(opts, err, 256)
        if self._core == ffi.NULL:
            raise CoreError(ffi.string(err).decode(errors="replace"))
        self.engine = engine
        self.cpus = list(cpus)
        self.slots = Slots.new(lib.RL_MAX_SLOTS)

    def apply(self, cfg: Config) -> None:
        """Publish a config to every worker; raises CoreError (old config stays) on failure."""
        ffi, lib = self._ffi, self._lib
        saved = self.slots.begin(self.oldest_seq())
        try:
            c = compile_config(cfg, self.slots, ffi, lib)
            for table, slot in self.slots.recycled():
                lib.rl_core_reset_slot(self._core, table, slot)
            err = ffi.new("char[256]")
            if lib.rl_core_apply(self._core, c, err, 256) != 0:
                raise CoreError(ffi.string(err).decode(errors="replace"))
        except BaseException:
            self.slots.restore(saved)
            raise
        self.slots.commit(int(lib.rl_core_applied_seq(self._core)))

    def served_generation(self) -> int:
        return int(self._lib.rl_core_served_generation(self._core))

    def oldest_seq(self) -> int:
        """The oldest config still in use (by connections that began on it), numbered 1, 2, ...
        in the order applied."""
        return int(self._lib.rl_core_oldest_seq(self._core))

    def drain(self, timeout_ms: int) -> None:
        self._lib.rl_core_drain(self._core, timeout_ms)

    def running_workers(self) -> int:
        return int(self._lib.rl_core_running(self._core))

    def close(self) -> None:
        if self._core is not None:
            self._lib.rl_core_free(self._core)
            self._core = None

    def __enter__(self) -> "Core":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- stats (summed over workers) ----
    def workers(self) -> range:
        return range(len(self.cpus))

    def totals(self) -> Iterator[WorkerTotals]:
        ffi, lib = self._ffi, self._lib
        out = ffi.new("rl_worker_totals *")
        for i in self.workers():
            lib.rl_core_read_totals(self._core, i, out)
            yield WorkerTotals(out.uring_submits, out.uring_enters, out.uring_buf_exhausted,
                               out.epoll_waits, out.loop_turns, out.config_generation, out.conns_active,
                               out.upstream_conns_active, out.upstream_conns_idle, out.rx_copied,
                               bool(out.draining))

    def _sums(self, fn, ctype: str, slots: list[int]):  # type: ignore[no-untyped-def]
        """fn's summed counters of the slots: one C call for the whole table (see rl_core.h)."""
        out = self._ffi.new(f"{ctype}[]", max(len(slots), 1))
        fn(self._core, self._ffi.new("uint32_t[]", slots), len(slots), out)
        return out

    def listener_stats(self) -> dict[str, dict[str, int]]:
        names = self.slots.listeners.names()
        sums = self._sums(self._lib.rl_core_sum_listeners, "rl_listener_stats", list(names))
        return {name: {"conns_opened": s.conns_opened, "conns_closed": s.conns_closed, "rx_bytes": s.rx_bytes,
                       "tx_bytes": s.tx_bytes} for name, s in zip(names.values(), sums)}

    def rule_stats(self) -> dict[tuple[str, str], dict[str, object]]:
        """Per (listener, route); route "" holds requests that matched no rule."""
        names = self.slots.rules.names()
        sums = self._sums(self._lib.rl_core_sum_rules, "rl_rule_stats", list(names))
        return {split_rule_key(name): {"codes": dict(zip(CODE_CLASSES, s.requests)), "buckets": list(s.duration_buckets),
                                       "sum_ns": s.duration_sum_ns} for name, s in zip(names.values(), sums)}

    def cluster_stats(self) -> dict[str, dict[str, int]]:
        names = self.slots.clusters.names()
        sums = self._sums(self._lib.rl_core_sum_clusters, "rl_cluster_stats", list(names))
        # rq_active is a gauge: requests in flight now
        return {name: {"requests": s.requests, "connect_errors": s.connect_errors,
                       "connections_opened": s.connections_opened, "active": s.rq_active}
                for name, s in zip(names.values(), sums)}
