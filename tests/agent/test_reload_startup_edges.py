"""The real `ringlane-sidecar run` process under config churn, scrapes, start-up and drain.

Everything goes through the running process: its config file (atomic rename, in-place rewrite,
delete/recreate, the kubelet's ..data symlink swap), its listeners (HTTP keep-alive traffic and a
streaming TCP relay session) and its admin port (/config, /ready, /metrics parsed with
prometheus_client). Waits are conditions with deadlines (util.wait_for); nothing sleeps to
synchronise. Contracts cited are from ARCHITECTURE.md ("Sidecar agent", "Sidecar config",
"Hot reload", "Drain").
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .conftest import Nginx, Sidecar, SidecarFactory
from .util import (
    KubeletDir,
    RawClient,
    dump_config,
    free_port,
    http_config,
    http_get,
    parse_samples,
    sample,
    sample_sum,
    wait_for,
    write_atomic,
)

REJECTED = "config rejected, still serving the previous one"


# ---------------------------------------------------------------- helpers

class EchoServer:
    """TCP backend: echoes every byte; on the client's FIN sends TRAILER and closes."""

    TRAILER = b"echo-done\n"

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @classmethod
    def _serve(cls, c: socket.socket) -> None:
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                c.sendall(data)
            c.sendall(cls.TRAILER)
        except OSError:
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.stopped = True
        self.sock.close()


@pytest.fixture
def echo() -> Any:
    servers: list[EchoServer] = []

    def make() -> EchoServer:
        s = EchoServer()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def served(sc: Sidecar, generation: int) -> bool:
    c = sc.config()
    return c["generation"] == generation and c["served_generation"] == generation


def listener_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@dataclass
class Ports:
    web: int
    extra: int
    relay: int
    admin: int


def storm_config(p: Ports, nginx: Nginx, echoes: list[str], gen: int) -> dict[str, Any]:
    """A valid config whose routes/weights/endpoints/listeners vary with gen. Routes that get
    traffic (/a, /b, /w, /ab) exist in every variant with the same names; /v<k> routes come and
    go; listener "extra" exists on even generations only; the relay's endpoint alternates."""
    wa, wb = (gen % 4) + 1, ((gen * 3) % 5) + 1
    ab_eps = [[nginx.a], [nginx.a, nginx.b], [nginx.b]][gen % 3]
    web_rules = [
        {"name": "app/a/0", "matches": [{"path": {"type": "PathPrefix", "value": "/a"}}],
         "backends": [{"cluster": "a"}]},
        {"name": "app/b/0", "matches": [{"path": {"type": "PathPrefix", "value": "/b"}}],
         "backends": [{"cluster": "b"}]},
        {"name": "app/w/0", "matches": [{"path": {"type": "PathPrefix", "value": "/w"}}],
         "backends": [{"cluster": "a", "weight": wa}, {"cluster": "b", "weight": wb}]},
        {"name": "app/ab/0", "matches": [{"path": {"type": "PathPrefix", "value": "/ab"}}],
         "backends": [{"cluster": "ab"}]},
    ]
    for k in range(gen % 3):  # routes that come and go (never requested)
        web_rules.append({"name": f"app/v{k}/0", "matches": [{"path": {"type": "Exact", "value": f"/v{k}"}}],
                          "backends": [{"cluster": "a"}]})
    listeners: list[dict[str, Any]] = [
        {"name": "web", "address": f"127.0.0.1:{p.web}", "protocol": "http", "rules": web_rules},
        {"name": "relay", "address": f"127.0.0.1:{p.relay}", "protocol": "tcp",
         "rules": [{"name": "relay/0", "backends": [{"cluster": "echo"}]}]},
    ]
    if gen % 2 == 0:
        listeners.append({"name": "extra", "address": f"127.0.0.1:{p.extra}", "protocol": "http",
                          "rules": [{"name": "extra/0", "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                                     "backends": [{"cluster": "b"}]}]})
    return {
        "version": 1,
        "generation": gen,
        "admin": {"address": f"127.0.0.1:{p.admin}"},
        "limits": {"drainTimeout": "5s"},
        "listeners": listeners,
        "clusters": [
            {"name": "a", "endpoints": [{"address": nginx.a}]},
            {"name": "b", "endpoints": [{"address": nginx.b}]},
            {"name": "ab", "endpoints": [{"address": e} for e in ab_eps]},
            {"name": "echo", "endpoints": [{"address": echoes[gen % len(echoes)]}]},
        ],
    }


def bad_config(good: dict[str, Any], k: int) -> tuple[dict[str, Any] | str, str]:
    """(an invalid config, a word its rejection message must contain)."""
    kind = k % 4
    if kind == 0:
        bad = json.loads(json.dumps(good))
        bad["generation"] = 9000 + k
        bad["listeners"][0]["rules"][0]["backends"] = [{"cluster": "nowhere"}]
        return bad, "nowhere"
    if kind == 1:
        return f"version: 1\ngeneration: {9000 + k}\nlisteners: [\n  - name: web\n", "yaml"
    if kind == 2:
        bad = json.loads(json.dumps(good))
        bad["generation"] = 9000 + k
        bad["clusters"][0]["colour"] = "blue"
        return bad, "colour"
    bad = json.loads(json.dumps(good))
    bad["generation"] = 9000 + k
    bad["listeners"][0]["rules"][0]["timeouts"] = {"request": "5 sec"}
    return bad, "timeouts.request"


@dataclass
class HttpLoad:
    """One thread of keep-alive GETs on RawClient connections (20 requests each), every byte
    counted; checks every answer against the path it asked for."""

    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    received: int = 0
    connections: int = 0
    requests: int = 0
    per_route: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> "HttpLoad":
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        n = 0
        routes = [("/a", "app/a/0"), ("/b", "app/b/0"), ("/w", "app/w/0"), ("/ab", "app/ab/0")]
        while not self.stop.is_set():
            try:
                c = RawClient(self.port)
            except OSError as exc:
                self.problems.append(f"connect: {exc!r}")
                return
            self.connections += 1
            try:
                for _ in range(20):
                    prefix, route = routes[n % len(routes)]
                    path = f"{prefix}/req-{n}"
                    n += 1
                    r = c.request(path)
                    self.requests += 1
                    self.per_route[route] = self.per_route.get(route, 0) + 1
                    body = r.body.decode(errors="replace")
                    want = {"/a": ("backend-a",), "/b": ("backend-b",)}.get(prefix, ("backend-a", "backend-b"))
                    if r.status != 200 or body not in [f"{b} {path}\n" for b in want]:
                        self.problems.append(f"{path}: {r.status} {body!r}")
                    if self.stop.is_set():
                        break
            except Exception as exc:  # noqa: BLE001 -- recorded, asserted on
                self.problems.append(f"request failed: {type(exc).__name__}: {exc}")
            finally:
                c.close_and_drain()
                self.sent += c.sent
                self.received += c.received

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(15)


@dataclass
class RelayStream:
    """One long TCP relay session: ping-pong chunks of varying size through the echo backend."""

    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    received: int = 0
    rounds: int = 0
    problems: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> "RelayStream":
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            d = self.sock.recv(n - len(buf))
            if not d:
                raise ConnectionError(f"relay closed after {len(buf)} of {n} echoed bytes")
            self.received += len(d)
            buf += d
        return buf

    def _run(self) -> None:
        k = 0
        try:
            while not self.stop.is_set():
                k += 1
                chunk = bytes([k % 251]) * (1 + (k * 7919) % 20000)
                self.sock.sendall(chunk)
                self.sent += len(chunk)
                got = self._recv_exact(len(chunk))
                if got != chunk:
                    self.problems.append(f"round {k}: echoed bytes differ")
                self.rounds += 1
        except Exception as exc:  # noqa: BLE001
            self.problems.append(f"relay session failed: {type(exc).__name__}: {exc}")

    def finish(self) -> bytes:
        """Stop, half-close, read the backend's trailer and the proxy's FIN."""
        self.stop.set()
        assert self.thread is not None
        self.thread.join(15)
        self.sock.shutdown(socket.SHUT_WR)
        tail = b""
        while True:
            d = self.sock.recv(65536)
            if not d:
                break
            self.received += len(d)
            tail += d
        self.sock.close()
        return tail


@dataclass
class Scrapers:
    """Threads scraping /metrics continuously; each scrape must be 200 and parse, and no
    counter series may go down between two scrapes of the same thread."""

    admin: int
    n: int = 2
    stop: threading.Event = field(default_factory=threading.Event)
    scrapes: int = 0
    problems: list[str] = field(default_factory=list)
    generations: set[float] = field(default_factory=set)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> "Scrapers":
        for _ in range(self.n):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _run(self) -> None:
        prev: dict[Any, float] = {}
        while not self.stop.is_set():
            try:
                status, body = http_get(f"http://127.0.0.1:{self.admin}/metrics", 5)
                if status != 200:
                    self.problems.append(f"/metrics {status}")
                    continue
                s = parse_samples(body.decode())
            except Exception as exc:  # noqa: BLE001
                self.problems.append(f"scrape: {type(exc).__name__}: {exc}")
                continue
            self.scrapes += 1
            g = sample(s, "ringlane_config_generation")
            if g is not None:
                self.generations.add(g)
            for key, v in s.items():
                name = key[0]
                if not (name.endswith("_total") or name.endswith("_count") or name.endswith("_bucket")
                        or name.endswith("_sum")):
                    continue
                if key in prev and v < prev[key]:
                    self.problems.append(f"counter went down: {name} {dict(key[1])}: {prev[key]} -> {v}")
            prev = s

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


# ---------------------------------------------------------------- 1. reload storm under load

STEPS = 60


def test_reload_storm_under_http_and_relay_load_exact_counters(
        sidecar: SidecarFactory, nginx: Nginx, echo: Any, tmp_path: Path) -> None:
    """60 atomic config rewrites (routes, weights, endpoints, a listener added/removed, the relay's
    endpoint) with an invalid config every third write, under keep-alive HTTP traffic, one
    streaming TCP relay session and concurrent /metrics scrapes.

    ARCHITECTURE "Hot reload": nothing is dropped; open connections finish on their config.
    "Sidecar config": an invalid config is rejected whole, the last good one keeps serving and
    config_reloads_total{result="error"} counts it. So: no request fails or gets another's answer;
    each write is applied or rejected (its message names the problem); reloads_total{success} =
    1 + valid writes and {error} = invalid writes exactly; config_generation = the last valid
    generation; listener "extra" exists exactly when the config has it; the relay session
    survives every reload byte-exact; tcp rx/tx bytes per listener equal what the clients moved;
    request counters and histogram counts equal the requests made; gauges end at zero; no
    counter ever goes down between scrapes."""
    e1, e2 = echo(), echo()
    p = Ports(free_port(), free_port(), free_port(), free_port())
    path = tmp_path / "config.yaml"
    sc = sidecar(storm_config(p, nginx, [e1.address, e2.address], 1), config_path=path,
                 admin_port=p.admin, listen_port=p.web)
    load = HttpLoad(p.web).start()
    relay = RelayStream(p.relay).start()
    scrapers = Scrapers(p.admin).start()
    good_gen, valid, invalid = 1, 0, 0
    try:
        wait_for(lambda: load.requests >= 20 and relay.rounds >= 5, 10, "traffic flowing")
        for step in range(1, STEPS + 1):
            if step % 3 == 0:
                invalid += 1
                bad, word = bad_config(storm_config(p, nginx, [e1.address, e2.address], good_gen), step // 3)
                before = len(sc.find_logs(REJECTED))
                write_atomic(path, bad)
                wait_for(lambda: sc.metric("ringlane_config_reloads_total", result="error") == invalid, 5,
                         lambda: f"invalid write #{invalid} (step {step}) to be counted\n{sc.stderr()[-3000:]}")
                lines = sc.find_logs(REJECTED)[before:]
                text = " | ".join(str(r.get("error")) for r in lines).lower()
                assert word.lower() in text, f"step {step}: {word!r} not in {text!r}"
                assert all(r.get("serving") == good_gen for r in lines), lines
                assert served(sc, good_gen), sc.config()
            else:
                valid += 1
                good_gen = step + 1
                write_atomic(path, storm_config(p, nginx, [e1.address, e2.address], good_gen))
                wait_for(lambda: served(sc, good_gen), 5,
                         lambda: f"generation {good_gen} to be served\n{sc.stderr()[-3000:]}")
            # the extra listener follows the config being served
            if good_gen % 2 == 0:
                st, body = http_get(f"http://127.0.0.1:{p.extra}/x{step}")
                assert (st, body) == (200, f"backend-b /x{step}\n".encode()), (step, st, body)
            else:
                wait_for(lambda: listener_refuses(p.extra), 5, f"listener extra removed (step {step})")
            assert http_get(sc.admin + "/ready")[0] == 200
        wait_for(lambda: load.requests >= 200, 20, "more traffic")
    finally:
        load.finish()
        tail = relay.finish()
        scrapers.finish()

    assert not load.problems, f"{len(load.problems)} HTTP problems: {load.problems[:5]}"
    assert not relay.problems, relay.problems
    assert tail == EchoServer.TRAILER, tail
    assert not scrapers.problems, scrapers.problems[:5]
    assert scrapers.scrapes > 0
    extra_writes = {9000 + k for k in range(STEPS)}
    assert not (scrapers.generations & extra_writes), f"an invalid config's generation was reported: " \
                                                      f"{sorted(scrapers.generations)}"

    relay_total_sent = relay.sent
    relay_total_received = relay.received

    def settled() -> bool:
        s = parse_samples(sc.metrics_text())
        return (sample(s, "ringlane_tcp_connections_closed_total", listener="web") == load.connections
                and sample(s, "ringlane_tcp_connections_closed_total", listener="relay") == 1)

    wait_for(settled, 10, lambda: f"every connection counted closed\n{sc.metrics_text()}")
    s = parse_samples(sc.metrics_text())
    assert sample(s, "ringlane_config_reloads_total", result="success") == 1 + valid
    assert sample(s, "ringlane_config_reloads_total", result="error") == invalid
    assert sample(s, "ringlane_config_generation") == good_gen
    assert sample(s, "ringlane_tcp_connections_opened_total", listener="web") == load.connections
    assert sample(s, "ringlane_tcp_connections_active", listener="web") == 0
    assert sample(s, "ringlane_tcp_connections_active", listener="relay") == 0
    assert sample(s, "ringlane_tcp_rx_bytes_total", listener="web") == load.sent
    assert sample(s, "ringlane_tcp_tx_bytes_total", listener="web") == load.received
    assert sample(s, "ringlane_tcp_rx_bytes_total", listener="relay") == relay_total_sent
    assert sample(s, "ringlane_tcp_tx_bytes_total", listener="relay") == relay_total_received
    req = "ringlane_http_requests_total"
    for route, n in load.per_route.items():
        assert sample(s, req, listener="web", route=route, code="2xx") == n, route
        assert sample(s, "ringlane_http_request_duration_seconds_count", listener="web", route=route) == n, route
    assert sample_sum(s, req, listener="web") == load.requests
    assert sample_sum(s, "ringlane_upstream_requests_active") == 0


# ---------------------------------------------------------------- 2. kubelet symlink swaps, deletes

def test_kubelet_symlink_swap_storm_counts_exactly(sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    """40 ConfigMap-style updates (new ..<timestamp> dir, ..data symlink renamed over, old dir
    removed), every fourth one invalid. ARCHITECTURE "Sidecar config": invalid ones are rejected
    and counted as config_reloads_total{result="error"}, the last good config keeps serving; each
    valid one is served (generation in /config, ringlane_config_generation, routing)."""
    listen, admin = free_port(), free_port()
    clusters = {"a": [nginx.a], "b": [nginx.b]}

    def cfg(gen: int) -> dict[str, Any]:
        return http_config(listen, admin, routes=[("app/0", "/", "a" if gen % 2 else "b")], clusters=clusters,
                           generation=gen)

    vol = KubeletDir(tmp_path / "routes")
    vol.root.mkdir()
    vol.write(cfg(1))
    sc = sidecar(None, config_path=vol.path, admin_port=admin, listen_port=listen)
    good, errors = 1, 0
    for step in range(1, 41):
        if step % 4 == 0:
            errors += 1
            vol.write(f"version: 1\ngeneration: {500 + step}\nlisteners: [\n")
            wait_for(lambda: sc.metric("ringlane_config_reloads_total", result="error") == errors, 5,
                     lambda: f"invalid update #{errors} counted\n{sc.stderr()[-2000:]}")
        else:
            good = step + 1
            vol.write(cfg(good))
            wait_for(lambda: served(sc, good), 5, lambda: f"generation {good} served\n{sc.stderr()[-2000:]}")
        st, body = http_get(f"{sc.listener}/s{step}")
        assert (st, body) == (200, f"backend-{'a' if good % 2 else 'b'} /s{step}\n".encode()), (step, st, body)
    s = parse_samples(sc.metrics_text())
    assert sample(s, "ringlane_config_reloads_total", result="error") == errors
    assert sample(s, "ringlane_config_reloads_total", result="success") == 1 + 40 - errors
    assert sample(s, "ringlane_config_generation") == good


def test_config_file_deleted_then_recreated(sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    """Deleting the file is a failed reload (ARCHITECTURE "Sidecar config": keep serving the last
    good config, count config_reloads_total{result="error"}) with a message saying the file is
    missing; /ready stays 200; recreating the file with a new config applies it."""
    listen, admin = free_port(), free_port()
    clusters = {"a": [nginx.a], "b": [nginx.b]}
    path = tmp_path / "config.yaml"
    sc = sidecar(http_config(listen, admin, routes=[("app/0", "/", "a")], clusters=clusters, generation=1),
                 config_path=path, admin_port=admin, listen_port=listen)
    path.unlink()
    wait_for(lambda: sc.metric("ringlane_config_reloads_total", result="error") == 1, 5,
             lambda: f"the deletion to be counted\n{sc.stderr()}")
    lines = sc.find_logs(REJECTED)
    assert lines and "no such file" in str(lines[-1].get("error")).lower(), lines
    assert http_get(f"{sc.listener}/x") == (200, b"backend-a /x\n")
    assert http_get(sc.admin + "/ready")[0] == 200
    path.write_text(dump_config(http_config(listen, admin, routes=[("app/0", "/", "b")], clusters=clusters,
                                            generation=2)))
    wait_for(lambda: served(sc, 2), 5, lambda: f"the recreated file to be served\n{sc.stderr()}")
    assert http_get(f"{sc.listener}/y") == (200, b"backend-b /y\n")
    s = parse_samples(sc.metrics_text())
    assert sample(s, "ringlane_config_reloads_total", result="success") == 2
    assert sample(s, "ringlane_config_generation") == 2


# ---------------------------------------------------------------- 3. the file watcher's blind spots

def frozen_before_started(sc: Sidecar) -> bool:
    """SIGSTOP the sidecar after its start-up "config applied" line and before its "started" line
    (serve(): the admin port, then the signal handlers and the file watcher). False (the process
    stopped and reaped) when the freeze came too late; the caller tries again."""
    wait_for(lambda: '"config applied"' in sc.stderr() or sc.proc.poll() is not None, 15,
             "start-up apply", interval=0.0005)
    sc.proc.send_signal(signal.SIGSTOP)
    if '"started"' not in sc.stderr() and sc.proc.poll() is None:
        return True
    sc.proc.send_signal(signal.SIGCONT)
    sc.signal(signal.SIGTERM)
    sc.wait_exit(10)
    return False


def test_config_changed_while_the_sidecar_starts_is_applied(
        sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    """A config written after `run` read the file at start-up but before the file watcher took its
    first look must still be applied (ARCHITECTURE "Sidecar agent": the process "reloads on
    change"). In Kubernetes this is the operator bumping the ConfigMap while the pod starts.

    The process is frozen (SIGSTOP) right after it logged the start-up "config applied" and
    before it logged "started" (the watcher is created after that line), so the write lands in
    that window deterministically; then it continues (SIGCONT)."""
    clusters = {"a": [nginx.a], "b": [nginx.b]}
    for attempt in range(15):
        listen, admin = free_port(), free_port()
        path = tmp_path / f"config-{attempt}.yaml"
        v1 = http_config(listen, admin, routes=[("app/0", "/", "a")], clusters=clusters, generation=1)
        v2 = http_config(listen, admin, routes=[("app/0", "/", "b")], clusters=clusters, generation=2)
        sc = sidecar(v1, config_path=path, admin_port=admin, listen_port=listen, wait_ready=False)
        if not frozen_before_started(sc):
            continue
        try:
            write_atomic(path, v2)
        finally:
            sc.proc.send_signal(signal.SIGCONT)
        sc.wait_ready()
        wait_for(lambda: served(sc, 2), 5,
                 lambda: f"the config written during start-up to be served (serving {sc.config()['generation']})"
                         f"\n{sc.stderr()}")
        assert http_get(f"{sc.listener}/x") == (200, b"backend-b /x\n")
        return
    pytest.skip("could not freeze the sidecar between its start-up apply and its 'started' line")


def test_sighup_while_the_sidecar_starts_does_not_kill_it(
        sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    """SIGHUP means "reload now" (ringlane_sidecar/agent.py module docstring; nginx/HAProxy users
    send it from config tooling). Once the listeners serve traffic (they do from the start-up
    apply on), a SIGHUP must not kill the proxy with the signal's default action: the sidecar
    stays up and becomes ready. The SIGHUP is sent while the process is frozen after its
    start-up "config applied" line and before "started" (where the handlers are installed)."""
    clusters = {"a": [nginx.a]}
    for attempt in range(15):
        listen, admin = free_port(), free_port()
        cfg = http_config(listen, admin, routes=[("app/0", "/", "a")], clusters=clusters, generation=1)
        sc = sidecar(cfg, config_path=tmp_path / f"c-{attempt}.yaml", admin_port=admin, listen_port=listen,
                     wait_ready=False)
        if not frozen_before_started(sc):
            continue
        sc.proc.send_signal(signal.SIGHUP)
        sc.proc.send_signal(signal.SIGCONT)
        sc.wait_ready()  # fails at once, with stderr, if the process died
        assert http_get(f"{sc.listener}/x") == (200, b"backend-a /x\n")
        assert sc.running()
        return
    pytest.skip("could not freeze the sidecar between its start-up apply and its 'started' line")


def test_in_place_rewrite_with_preserved_mtime_is_picked_up(
        sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    """`cp -p`, `rsync -t --inplace`, `touch -r` or a reproducible-build tool (SOURCE_DATE_EPOCH)
    can rewrite the file in place with the same size and mtime. The content changed and the
    inode's ctime says so (it cannot be set from user space); ARCHITECTURE "Sidecar agent":
    `run` "reloads on change". The new config must be served without a SIGHUP."""
    listen, admin = free_port(), free_port()
    clusters = {"a": [nginx.a], "b": [nginx.b]}
    path = tmp_path / "config.yaml"
    v1 = dump_config(http_config(listen, admin, routes=[("app/0", "/", "a")], clusters=clusters, generation=1))
    v2 = dump_config(http_config(listen, admin, routes=[("app/0", "/", "b")], clusters=clusters, generation=2))
    assert len(v1) == len(v2) and v1 != v2
    sc = sidecar(v1, config_path=path, admin_port=admin, listen_port=listen)
    # The watcher has looked at the file by now: a SIGHUP-free reload that we can observe first.
    st = path.stat()
    with open(path, "r+") as f:
        f.write(v2)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = path.stat()
    assert (st2.st_ino, st2.st_size, st2.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    assert st2.st_ctime_ns != st.st_ctime_ns
    wait_for(lambda: served(sc, 2), 5, lambda: f"the rewritten config to be served\n{sc.stderr()}")
    assert http_get(f"{sc.listener}/x") == (200, b"backend-b /x\n")


# ---------------------------------------------------------------- 4. readiness during reloads

def test_ready_stays_200_through_valid_reloads(sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    """ARCHITECTURE "Sidecar agent": /ready means "serving the current config"; "Hot reload": a
    reload swaps a pointer and drops nothing. A sidecar that keeps serving through 40 valid
    reloads must not report itself unready (a failing readiness probe takes the pod out of its
    Services). /ready is polled continuously while the config changes."""
    listen, admin = free_port(), free_port()
    clusters = {"a": [nginx.a], "b": [nginx.b]}
    path = tmp_path / "config.yaml"

    def cfg(gen: int) -> dict[str, Any]:
        return http_config(listen, admin, routes=[("app/0", "/", "a" if gen % 2 else "b")], clusters=clusters,
                           generation=gen)

    sc = sidecar(cfg(1), config_path=path, admin_port=admin, listen_port=listen)
    stop = threading.Event()
    seen: list[tuple[int, bytes]] = []
    polls = [0]

    def poll() -> None:
        while not stop.is_set():
            st, body = http_get(sc.admin + "/ready", 5)
            polls[0] += 1
            if st != 200:
                seen.append((st, body))

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        for gen in range(2, 42):
            write_atomic(path, cfg(gen))
            wait_for(lambda: served(sc, gen), 5, f"generation {gen}")
    finally:
        stop.set()
        t.join(10)
    assert polls[0] > 0
    assert not seen, f"/ready answered non-200 {len(seen)} times of {polls[0]} during valid reloads: {seen[:3]}"


# ---------------------------------------------------------------- 5. drain

def test_config_change_during_drain_is_not_counted_as_a_failed_reload(
        sidecar: SidecarFactory, nginx: Nginx, slow_backend: Any, tmp_path: Path) -> None:
    """During the SIGTERM drain (a request in flight keeps it going) the ConfigMap is updated with
    a *valid* config. ARCHITECTURE counts config_reloads_total{result="error"} for a config that
    "fails validation"; this one does not, so it must not be logged as rejected at error level nor
    counted as an error (alerts on reload errors would fire on every pod termination). The drain
    still completes the in-flight request and the process exits 0."""
    listen, admin = free_port(), free_port()
    clusters = {"slow": [slow_backend.address]}
    path = tmp_path / "config.yaml"
    sc = sidecar(http_config(listen, admin, routes=[("slow", "/", "slow")], clusters=clusters, generation=1),
                 config_path=path, admin_port=admin, listen_port=listen)
    result: dict[str, Any] = {}

    def slow() -> None:
        result["r"] = http_get(f"{sc.listener}/slow/3/x", 15)

    t = threading.Thread(target=slow, daemon=True)
    t.start()
    wait_for(lambda: slow_backend.started == 1, 5, "the request in flight")
    sc.signal(signal.SIGTERM)
    sc.wait_log("draining")
    errors_before = sc.metric("ringlane_config_reloads_total", result="error")
    write_atomic(path, http_config(listen, admin, routes=[("slow", "/", "slow")], clusters=clusters, generation=2))
    # The watcher reacts within its poll period: wait for any trace of the change (a log line).
    wait_for(lambda: len(sc.logs()) > 0 and any(r.get("generation") == 2 for r in sc.logs()), 3,
             lambda: f"the sidecar to react to the change during the drain\n{sc.stderr()}")
    errors_after = sc.metric("ringlane_config_reloads_total", result="error")
    rejected = [r for r in sc.find_logs(REJECTED) if r.get("generation") == 2]
    t.join(10)
    code = sc.wait_exit(10)
    assert result.get("r") == (200, b"slow /slow/3/x\n"), result
    assert code == 0, sc.stderr()
    assert (errors_before, errors_after) == (0, 0), (errors_before, errors_after, rejected)
    assert not rejected, rejected
