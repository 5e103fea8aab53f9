"""Hot reload of the real sidecar under live keep-alive traffic: atomic rename, the kubelet's
..data symlink swap, and invalid configs that must never replace a good one."""
from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from .conftest import Nginx, Sidecar, SidecarFactory
from .util import KubeletDir, dump_config, free_port, http_config, http_get, parse_samples, sample, wait_for, write_atomic


@dataclass
class Record:
    thread: int
    conn: int
    opened_at: float  # monotonic time the client connection was established
    path: str
    status: int | None
    body: str
    error: str | None = None


@dataclass
class Traffic:
    """Client threads sending GETs over keep-alive connections (a few requests per connection,
    then a new one, like clients with a max-requests-per-connection policy)."""

    port: int
    threads: int = 4
    per_conn: int = 5
    records: list[Record] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> "Traffic":
        for t in range(self.threads):
            th = threading.Thread(target=self._run, args=(t,), daemon=True)
            th.start()
            self.workers.append(th)
        return self

    def _run(self, t: int) -> None:
        nconn = 0
        while not self.stop.is_set():
            nconn += 1
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            opened = float("nan")
            try:
                conn.connect()
                opened = time.monotonic()
                for i in range(self.per_conn):
                    path = f"/t{t}/c{nconn}/r{i}"
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read().decode(errors="replace")
                    self._add(Record(t, nconn, opened, path, resp.status, body))
                    if resp.getheader("connection", "").lower() == "close":
                        break
            except Exception as exc:  # noqa: BLE001 -- every failure is a test failure, recorded
                self._add(Record(t, nconn, opened, "", None, "", f"{type(exc).__name__}: {exc}"))
            finally:
                conn.close()

    def _add(self, r: Record) -> None:
        with self.lock:
            self.records.append(r)

    def snapshot(self) -> list[Record]:
        with self.lock:
            return list(self.records)

    def count(self, pred: Callable[[Record], bool]) -> int:
        return sum(1 for r in self.snapshot() if pred(r))

    def finish(self) -> list[Record]:
        self.stop.set()
        for th in self.workers:
            th.join(10)
        return self.snapshot()


def _backend(r: Record) -> str:
    return r.body.split(" ", 1)[0]


def configs(nginx: Nginx, listen: int, admin: int) -> tuple[dict[str, Any], dict[str, Any]]:
    clusters = {"a": [nginx.a], "b": [nginx.b]}
    v1 = http_config(listen, admin, routes=[("default/app/0", "/", "a")], clusters=clusters, generation=1)
    v2 = http_config(listen, admin, routes=[("default/app/0", "/", "b")], clusters=clusters, generation=2)
    return v1, v2


def served(sc: Sidecar, generation: int) -> bool:
    c = sc.config()
    return c["generation"] == generation and c["served_generation"] == generation


def switch_under_traffic(sc: Sidecar, write_v2: Callable[[], None]) -> None:
    traffic = Traffic(sc.listen_port or 0).start()
    try:
        wait_for(lambda: traffic.count(lambda r: _backend(r) == "backend-a") >= 40, 10, "traffic through A")
        write_v2()
        t_write = time.monotonic()
        wait_for(lambda: served(sc, 2), 5, "generation 2 to be served")
        t_switched = time.monotonic()
        # Every connection opened after every worker serves generation 2 must reach B.
        wait_for(lambda: traffic.count(lambda r: r.opened_at > t_switched and r.status == 200) >= 40, 10,
                 "traffic on connections opened after the switch")
    finally:
        records = traffic.finish()

    failures = [r for r in records if r.error or r.status != 200]
    assert not failures, f"{len(failures)} of {len(records)} requests failed across the reload: {failures[:5]}"
    bodies = {_backend(r) for r in records}
    assert bodies == {"backend-a", "backend-b"}, bodies
    for r in records:  # the body echoes the request: no response went to the wrong request
        assert r.body == f"{_backend(r)} {r.path}\n", r
    late = [r for r in records if r.opened_at > t_switched]
    stale = [r for r in late if _backend(r) != "backend-b"]
    assert not stale, f"{len(stale)} of {len(late)} requests on connections opened after the switch reached A"
    assert t_switched - t_write < 3.0, "the change took more than 3 s to be served"

    # The admin API and the metrics follow the new generation.
    cfg = sc.config()
    assert (cfg["generation"], cfg["served_generation"], cfg["draining"]) == (2, 2, False), cfg
    s = parse_samples(sc.metrics_text())
    assert sample(s, "ringlane_config_generation") == 2
    assert sample(s, "ringlane_config_reloads_total", result="success") == 2  # start-up + this reload
    assert sample(s, "ringlane_config_reloads_total", result="error") == 0
    assert [r["generation"] for r in sc.find_logs("config applied")] == [1, 2], sc.stderr()
    assert http_get(sc.admin + "/ready")[0] == 200


def test_atomic_rename_switches_routes_without_dropping_requests(
        sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    listen, admin = free_port(), free_port()
    v1, v2 = configs(nginx, listen, admin)
    path = tmp_path / "config.yaml"
    sc = sidecar(v1, config_path=path, admin_port=admin, listen_port=listen)
    assert served(sc, 1)
    switch_under_traffic(sc, lambda: write_atomic(path, v2))


def test_kubelet_symlink_swap_switches_routes_without_dropping_requests(
        sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    listen, admin = free_port(), free_port()
    v1, v2 = configs(nginx, listen, admin)
    vol = KubeletDir(tmp_path / "routes")
    vol.root.mkdir()
    vol.write(v1)
    assert vol.path.is_symlink() and (vol.root / "..data").is_symlink()
    sc = sidecar(None, config_path=vol.path, admin_port=admin, listen_port=listen)
    assert served(sc, 1)
    old_dir = vol.current
    switch_under_traffic(sc, lambda: vol.write(v2))
    assert old_dir is not None and not old_dir.exists()  # the kubelet removed the old timestamped dir


def get_body(sc: Sidecar, path: str = "/probe") -> str:
    status, body = http_get(sc.listener + path)
    assert status == 200, (status, body)
    return body.decode()


BAD_WRITES = [
    pytest.param(lambda good: {**good, "generation": 3, "listeners": [{
        **good["listeners"][0],
        "rules": [{"name": "default/app/0", "backends": [{"cluster": "nowhere"}],
                   "timeouts": {"request": "5 sec"}}]}]},
                 ["nowhere", "timeouts.request"], id="unknown-cluster-and-bad-duration"),
    pytest.param(lambda good: "version: 1\ngeneration: 4\nlisteners: [\n  - name: web\n", ["yaml"], id="bad-yaml"),
    pytest.param(lambda good: {**good, "generation": 5, "clusters": [{"name": "a", "colour": "blue",
                                                                       "endpoints": []}]},
                 ["colour"], id="unknown-field"),
]


def test_invalid_configs_never_replace_the_good_one(sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    listen, admin = free_port(), free_port()
    good, v2 = configs(nginx, listen, admin)
    path = tmp_path / "config.yaml"
    sc = sidecar(good, config_path=path, admin_port=admin, listen_port=listen)
    assert get_body(sc).startswith("backend-a ")

    for n, bad in enumerate(BAD_WRITES, start=1):
        make, words = bad.values
        rejected_before = len(sc.find_logs("config rejected, still serving the previous one"))
        write_atomic(path, make(good))
        wait_for(lambda: sc.metric("ringlane_config_reloads_total", result="error") == n, 5,
                 f"reload error #{n} ({bad.id}) to be counted")
        # Old behaviour kept: still generation 1, still backend A, still ready.
        assert served(sc, 1), sc.config()
        assert get_body(sc).startswith("backend-a "), bad.id
        assert http_get(sc.admin + "/ready")[0] == 200
        assert sc.metric("ringlane_config_generation") == 1
        lines = sc.find_logs("config rejected, still serving the previous one")[rejected_before:]
        text = " | ".join(str(r.get("error")) for r in lines).lower()
        for w in words:
            assert w.lower() in text, f"{bad.id}: {w!r} not in the logged errors: {text}"
        assert all(r["level"] == "error" and r.get("serving") == 1 for r in lines), lines
        if bad.id == "unknown-cluster-and-bad-duration":
            assert len(lines) == 2, f"one log line per error expected: {lines}"

    # A good config after the bad ones applies; the poller has handled every write by then,
    # so the counters are final: exactly one error per bad write.
    write_atomic(path, v2)
    wait_for(lambda: served(sc, 2), 5, "the good config after the bad ones")
    assert get_body(sc).startswith("backend-b ")
    s = parse_samples(sc.metrics_text())
    assert sample(s, "ringlane_config_reloads_total", result="error") == len(BAD_WRITES)
    assert sample(s, "ringlane_config_reloads_total", result="success") == 2
    assert sample(s, "ringlane_config_generation") == 2


def test_in_place_truncating_rewrite_is_picked_up(
        sidecar: SidecarFactory, nginx: Nginx, tmp_path: Path) -> None:
    """`cat new > config.yaml` (open O_TRUNC, write) is how people edit files; the poller may see
    the empty file first (and count an error for it). Whatever it sees, the new config must end
    up served."""
    listen, admin = free_port(), free_port()
    v1, v2 = configs(nginx, listen, admin)
    path = tmp_path / "config.yaml"
    sc = sidecar(v1, config_path=path, admin_port=admin, listen_port=listen)
    with open(path, "w") as f:  # same inode, new content
        f.write(dump_config(v2))
    wait_for(lambda: served(sc, 2), 5, "in-place rewrite to be served")
    assert get_body(sc).startswith("backend-b ")


def test_existing_keepalive_connection_follows_a_reload(sidecar: SidecarFactory, nginx: Nginx,
                                                         tmp_path: Path) -> None:
    listen, admin = free_port(), free_port()
    v1, v2 = configs(nginx, listen, admin)
    path = tmp_path / "config.yaml"
    sc = sidecar(v1, config_path=path, admin_port=admin, listen_port=listen)
    conn = http.client.HTTPConnection("127.0.0.1", listen, timeout=5)
    try:
        conn.request("GET", "/before")
        assert conn.getresponse().read() == b"backend-a /before\n"
        write_atomic(path, v2)
        wait_for(lambda: served(sc, 2), 5, "generation 2 to be served")
        conn.request("GET", "/after")
        assert conn.getresponse().read() == b"backend-b /after\n"
    finally:
        conn.close()
