"""`ringlane-sidecar run`: the process in the pod.

Loads and validates the config, picks the engine (auto falls back to epoll when io_uring is
blocked), starts the pinned workers, serves the admin port, reloads on change (an invalid
config never replaces a good one; SIGHUP reloads now), and drains on SIGTERM/SIGINT (a second
signal exits now).
"""
from __future__ import annotations

import asyncio
import os
import resource
import signal
import threading
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ringlane_sidecar.admin import json_body, start_admin
from ringlane_sidecar.cli import MAX_WORKERS
from ringlane_sidecar.compile import CompileError
from ringlane_sidecar.confine import uring_ops
from ringlane_sidecar.confine.apply import Layers, lock_io_uring, register_bpf_filters, seccomp_mode
from ringlane_sidecar.config import Config, ConfigError, config_hash, load_config, parse_config, select_for_pod
from ringlane_sidecar.config.addresses import parse_address
from ringlane_sidecar.config.decode import decode_document
from ringlane_sidecar.config.semantic_common import MAX_DURATION_MS
from ringlane_sidecar.core import Core, CoreError, allowed_cpus
from ringlane_sidecar.logs import JsonLog
from ringlane_sidecar.metrics import AgentState, CoreCollector
from ringlane_sidecar.probe import ProbeReport, choose_engine, run_probe
from ringlane_sidecar.sources import FileStamp, file_stamp, read_labels, watch_configmap, watch_file

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
HANDLED_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
ADMIN_METHODS = {"/metrics": ("GET",), "/healthz": ("GET",), "/ready": ("GET",), "/config": ("GET",),
                 "/drain": ("POST",)}


@dataclass
class RunOptions:
    config: str | None = None
    engine: str | None = None  # overrides the config's engine.kind
    workers: int | None = None
    cpus: list[int] | None = None
    admin: str | None = None
    configmap: str | None = None  # NAMESPACE/NAME
    configmap_key: str = "config.json"
    pod_labels: str | None = None
    log_level: str = "info"


class StartError(Exception):
    """The sidecar cannot start; the message says why."""


def worker_cpus(cfg: Config, opts: RunOptions) -> list[int | None]:
    """One worker per CPU of the cpuset (or --cpus), pinned unless engine.pin is false."""
    cpus = opts.cpus or allowed_cpus()
    want = opts.workers or (cfg.engine.workers if cfg.engine.workers != "auto" else min(len(cpus), MAX_WORKERS))
    chosen = [cpus[i % len(cpus)] for i in range(want)]
    return [c if cfg.engine.pin else None for c in chosen]


def load_checked(path: str) -> Config | list[str]:
    """The config in path, or the errors that keep it out (never raises: a reload that
    raised would end the watch that called it)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        return exc.errors
    except Exception as exc:
        return [f"internal error reading {path}: {exc!r}"]


READ_TIMEOUT_S = 60.0  # reading and checking a 4 MiB config takes seconds, not minutes


def read_in_daemon_thread(path: str) -> asyncio.Future[Config | list[str]]:
    """load_checked on a thread exit does not wait for: after a drain, a read whose result can
    no longer be applied must not keep the process up for seconds (the default executor's
    threads are joined at exit)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Config | list[str]] = loop.create_future()

    def read() -> None:
        loaded = load_checked(path)
        try:
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(loaded))
        except RuntimeError:  # the loop is closed: the agent has exited
            pass

    threading.Thread(target=read, name="config-read", daemon=True).start()
    return fut


def parse_checked(text: str | None) -> Config | list[str] | None:
    """load_checked for ConfigMap text (None stays None: the ConfigMap or key is gone)."""
    if text is None:
        return None
    try:
        return parse_config(decode_document(text))
    except ConfigError as exc:
        return exc.errors
    except Exception as exc:
        return [f"internal error parsing the ConfigMap: {exc!r}"]


@dataclass
class Agent:
    opts: RunOptions
    log: JsonLog
    core: Core | None = None
    state: AgentState | None = None
    cfg: Config | None = None
    labels: dict[str, str] | None = None
    hash: str = ""
    served_listeners: list[str] = field(default_factory=list)  # of the config as selected for this pod
    draining: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reloading: asyncio.Lock = field(default_factory=asyncio.Lock)
    reload_waiting: bool = False  # a file reload waits for the one under way
    signals: int = 0
    probe: ProbeReport | None = None
    layers: Layers = field(default_factory=Layers)
    first: Config = field(default_factory=Config)
    stamp: FileStamp | None = None  # the config file's identity before its first read
    serving: bool = False  # all workers have taken a config in at least once
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=False))

    # ---- start-up ----
    def initial_config(self) -> Config:
        if self.opts.config and (os.path.exists(self.opts.config) or not self.opts.configmap):
            return load_config(self.opts.config)
        # Waiting for the ConfigMap: serve nothing until it arrives, and be ready meanwhile (the
        # sidecar starts before the app container; a namespace may have no ProxyRoute yet).
        return Config()

    def start_core(self, cfg: Config) -> Core:
        requested = self.opts.engine or cfg.engine.kind
        cpus = worker_cpus(cfg, self.opts)
        kernel = os.uname().release
        if requested == "epoll":  # no io_uring call at all: the epoll profile allows none
            engine, reason = "epoll", "requested"
        else:
            self.probe = run_probe()
            if requested == "auto":
                engine, reason = choose_engine(self.probe.io_uring_usable, self.probe.setup_error,
                                               self.probe.features)
            else:
                engine, reason = requested, "requested"
                if not self.probe.io_uring_usable:
                    source = "--engine io_uring" if self.opts.engine else "engine.kind io_uring (config)"
                    raise StartError(f"{source}: io_uring unusable here ({self.probe.setup_error})")
        allow = uring_ops.from_core()
        self.layers.seccomp_profile = seccomp_mode()
        if engine == "io_uring" and self.probe:  # task-wide filters apply to rings created after them
            self.layers.io_uring_bpf_filter = register_bpf_filters(allow, self.probe.nr_register_opcodes)
        try:
            core = Core(engine, cpus)
        except CoreError as exc:
            if requested != "auto" or engine == "epoll":
                raise StartError(f"{engine} engine failed to start: {exc}") from exc
            reason = f"io_uring failed to start ({exc})"
            engine = "epoll"
            core = Core(engine, cpus)
        if engine == "io_uring":
            self.layers.ring_restrictions = f"on: {len(allow.sqe_ops)} SQE opcodes, flags {allow.sqe_flags:#x}"
        else:
            self.layers.ring_restrictions = self.layers.io_uring_bpf_filter = "n/a (epoll engine)"
        # Every ring exists now: no new ones, no new registrations, for the life of the process.
        self.layers.seccomp_lock = lock_io_uring()
        if self.layers.seccomp_lock.startswith("failed"):
            self.log.warning("seccomp lock not applied", detail=self.layers.seccomp_lock)
        self.state = AgentState(engine, kernel, reason)
        self.log.info("engine chosen", engine=engine, reason=reason, kernel=kernel, workers=len(cpus),
                      cpus=cpus, confinement=self.layers.to_dict())
        return core

    # ---- config changes ----
    def apply(self, cfg: Config, startup: bool = False) -> bool:
        """Publish cfg; a failure at start-up is fatal, later it only keeps the old config."""
        assert self.core is not None and self.state is not None
        selected = select_for_pod(cfg, self.labels) if self.labels is not None else cfg
        h = config_hash(selected)
        if h == self.hash:
            return True
        try:
            self.core.apply(selected)
        except Exception as exc:  # CoreError, CompileError; anything else must not end reloading
            error = str(exc) if isinstance(exc, (CoreError, CompileError)) else f"internal error: {exc!r}"
            if startup:
                self.log.error("cannot start", error=error, generation=cfg.generation)
            else:
                self.reload_failed([error], cfg.generation)
            return False
        if self.cfg is not None and (cfg.engine != self.cfg.engine or cfg.admin != self.cfg.admin):
            self.log.warning("engine and admin settings change only on restart", generation=cfg.generation)
        self.cfg, self.hash, self.served_listeners = cfg, h, [lst.name for lst in selected.listeners]
        self.state.generation = cfg.generation
        self.state.reloads["success"] += 1
        self.log.info("config applied", generation=cfg.generation, hash=h[:12],
                      listeners=self.served_listeners)
        return True

    def reload_failed(self, errors: list[str], generation: int | None = None) -> None:
        assert self.state is not None
        self.state.reloads["error"] += 1
        for e in errors:
            self.log.error("config rejected, still serving the previous one", error=e,
                           generation=generation, serving=self.state.generation)

    def take(self, loaded: Config | list[str]) -> None:
        """Apply a reloaded config, or count and log why there is none."""
        if self.draining:  # the core refuses configs now; that is no failed reload
            self.log.info("draining: config change not applied",
                          generation=loaded.generation if isinstance(loaded, Config) else None)
            return
        if isinstance(loaded, Config):
            self.apply(loaded)
        else:
            self.reload_failed(loaded)

    async def reload_file(self) -> None:
        """Read and validate off the event loop (a big config takes seconds; the admin port
        must keep answering probes meanwhile), apply on it; one reload at a time, and at most
        one waiting: it reads the newest file, so SIGHUPs and changes during a read cost one
        more read, not one each."""
        assert self.opts.config is not None
        if self.reload_waiting:
            return
        self.reload_waiting = True
        async with self.reloading:
            self.reload_waiting = False
            try:  # a read that hangs (a stuck network file system) must not hold every later reload
                loaded = await asyncio.wait_for(read_in_daemon_thread(self.opts.config), READ_TIMEOUT_S)
            except asyncio.TimeoutError:
                loaded = [f"{self.opts.config}: config: not read within {READ_TIMEOUT_S:.0f} s"]
            self.take(loaded)

    def reload_text(self, loaded: Config | list[str] | None) -> None:
        """A ConfigMap change, already parsed on the watch thread (None: ConfigMap or key gone)."""
        if loaded is None:
            self.log.warning("routes ConfigMap or key missing: keeping the current config")
            return
        self.take(loaded)

    def on_hangup(self) -> None:
        """SIGHUP: reload the config file now (what nginx and HAProxy users expect of it)."""
        if self.opts.config and not self.draining:
            self.log.info("signal received: reloading", signal="SIGHUP")
            asyncio.get_running_loop().create_task(self.reload_file())

    # ---- admin ----
    def ready(self) -> bool:
        """Ready once every worker serves the first config, until the drain. A later reload does
        not make it unready: the previous config serves until the workers switch (milliseconds),
        and probes failing on every endpoint change would take the pod out of rotation."""
        if self.core is None or self.state is None or self.draining:
            return False
        if not self.serving:
            self.serving = (self.state.reloads["success"] > 0
                            and self.core.served_generation() == self.state.generation)
        return self.serving

    def config_view(self) -> dict[str, object]:
        assert self.core is not None and self.state is not None
        return {
            "generation": self.state.generation,
            "served_generation": self.core.served_generation(),
            "hash": self.hash,
            "engine": self.state.engine,
            "engine_reason": self.state.reason,
            "kernel": self.state.kernel,
            "workers": len(self.core.cpus),
            "cpus": self.core.cpus,
            "allowed_cpus": allowed_cpus(),
            "listeners": self.served_listeners,  # this pod's (--pod-labels selects), as "hash"
            "draining": self.draining,
            "confinement": self.layers.to_dict(),
        }

    async def handle(self, method: str, path: str) -> tuple[int, str, bytes]:
        """One of ADMIN_METHODS' (path, method) pairs: admin.py answers the others."""
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/ready":
            ok = self.ready()
            return (200 if ok else 503), "text/plain", b"ready\n" if ok else b"not ready\n"
        if path == "/config":
            return 200, "application/json", json_body(self.config_view())
        self.begin_drain("admin /drain")
        return 202, "text/plain", b"draining\n"

    # ---- drain and signals ----
    def begin_drain(self, why: str) -> None:
        if self.draining or self.core is None or self.cfg is None:
            return
        self.draining = True
        timeout = min(self.cfg.limits.drain_timeout_ms, MAX_DURATION_MS)  # validated; clamped anyway
        self.log.info("draining", reason=why, timeout_ms=timeout)
        self.core.drain(timeout)
        asyncio.get_running_loop().create_task(self._wait_drained(timeout))

    async def _wait_drained(self, timeout_ms: int) -> None:
        assert self.core is not None
        deadline = time.monotonic() + timeout_ms / 1000 + 1.0
        while self.core.running_workers() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # polling a C counter with a deadline
        self.log.info("drained", workers_left=self.core.running_workers())
        self.drained.set()

    def on_signal(self, signame: str) -> None:
        self.signals += 1
        if self.signals > 1:
            self.log.warning("second signal: exiting now", signal=signame)
            os._exit(EXIT_FAILED)
        self.log.info("signal received", signal=signame)
        try:
            self.begin_drain(signame)
        finally:
            self.stop.set()

    # ---- main ----
    def prepare(self) -> int:
        """Synchronous start-up: config, engine, workers, confinement, first apply.

        Runs before the event loop exists: once the seccomp lock is in, libuv cannot create
        io_uring rings of its own (it would for epoll_ctl batching) and falls back to epoll.
        """
        self.stamp = file_stamp(self.opts.config) if self.opts.config else None
        try:
            cfg = self.initial_config()
        except ConfigError as exc:
            for e in exc.errors:
                self.log.error("invalid config", error=e, file=self.opts.config)
            return EXIT_INVALID
        if self.opts.admin:
            try:
                parse_address(self.opts.admin)
            except ValueError as exc:
                self.log.error("invalid --admin", error=str(exc))
                return EXIT_INVALID
        if self.opts.pod_labels:
            try:
                self.labels = read_labels(self.opts.pod_labels)
            except (OSError, UnicodeDecodeError) as exc:
                self.log.error("cannot read the pod labels", file=self.opts.pod_labels, error=str(exc))
                return EXIT_INVALID
        try:
            self.core = self.start_core(cfg)
        except (StartError, CoreError) as exc:
            self.log.error("cannot start", error=str(exc))
            return EXIT_FAILED
        assert self.state is not None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CoreCollector(lambda: self.core, self.state))
        if not self.apply(cfg, startup=True):
            self.core.close()
            return EXIT_FAILED
        self.first = cfg
        return EXIT_OK

    async def serve(self) -> int:
        assert self.core is not None
        loop = asyncio.get_running_loop()
        host, port = parse_address(self.opts.admin or self.first.admin.address)
        try:
            server = await start_admin(host, port, self.handle, ADMIN_METHODS)
        except OSError as exc:
            self.log.error("cannot serve the admin port", address=f"{host}:{port}", error=str(exc))
            self.core.close()
            return EXIT_FAILED
        self.log.info("started", admin=f"{host}:{port}", generation=self.first.generation, pid=os.getpid())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.on_hangup)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)  # one sent during start-up lands now
        tasks = []
        if self.opts.config:
            tasks.append(loop.create_task(watch_file(self.opts.config, self.reload_file, self.stamp)))
        stop_watch = threading.Event()
        if self.opts.configmap:
            ns, _, name = self.opts.configmap.partition("/")
            watch_configmap(ns, name, self.opts.configmap_key,  # parsed on the watch thread
                            lambda text: loop.call_soon_threadsafe(self.reload_text, parse_checked(text)),
                            stop_watch, lambda msg, **f: loop.call_soon_threadsafe(lambda: self.log.warning(msg, **f)))
        await self.stop.wait()
        await self.drained.wait()
        stop_watch.set()
        for t in tasks:
            t.cancel()
        server.close()
        self.core.close()
        self.core = None
        self.log.info("exit", code=EXIT_OK)
        return EXIT_OK


def raise_open_files_limit() -> tuple[int, int]:
    """Every connection is a file descriptor (two, proxied): the soft limit goes up to the hard
    one (container runtimes commonly start processes at 1024 soft). Returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:  # the kernel caps it at fs.nr_open
        try:
            with open("/proc/sys/fs/nr_open") as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            return soft, soft
        return soft, target
    return soft, soft


def run(opts: RunOptions) -> int:
    import uvloop

    agent = Agent(opts, JsonLog(opts.log_level))
    before, after = raise_open_files_limit()
    if after != before:
        agent.log.info("open files limit raised", soft=after, was=before)
    # Held until serve() has its handlers: the listeners serve from prepare() on, and SIGHUP's or
    # SIGTERM's default action would end the process (without a drain). Worker threads inherit
    # the mask and keep it: signals are the agent's.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    rc = agent.prepare()
    if rc != EXIT_OK:
        return rc
    return uvloop.run(agent.serve())
