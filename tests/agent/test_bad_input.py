"""Bad input to the sidecar process (config values past the core's limits, flags, signals, the
admin port, big configs): a clear error and exit 2, or a refused reload that keeps the watch
going; never a traceback or an "internal error"."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from ringlane_sidecar.config import ConfigError, parse_config

from polling import free_port

BIN = str(Path(sys.executable).parent / "ringlane-sidecar")


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def doc(admin: int, listen: int, generation: int = 0, **extra: object) -> dict:
    d: dict = {
        "version": 1,
        "generation": generation,
        "admin": {"address": f"127.0.0.1:{admin}"},
        "listeners": [{"name": "web", "address": f"127.0.0.1:{listen}",
                       "rules": [{"name": "r", "backends": [{"cluster": "c"}]}]}],
        "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:1"}]}],
    }
    d.update(extra)
    return d


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
        return r.read()


class Sidecar:
    def __init__(self, cfg: Path, admin: int, *extra: str) -> None:
        self.admin = admin
        self.err = cfg.with_suffix(".stderr")
        self.proc = subprocess.Popen([BIN, "run", "--config", str(cfg), "--cpus", "0", "--workers", "1",
                                      "--engine", "epoll", *extra],
                                     stdout=subprocess.DEVNULL, stderr=open(self.err, "wb"))

    def up(self) -> bool:
        try:
            return get(self.admin, "/ready") == b"ready\n"
        except OSError:
            return False

    def generation(self) -> int:
        return int(json.loads(get(self.admin, "/config"))["generation"])

    def reload_errors(self) -> float:
        for line in get(self.admin, "/metrics").decode().splitlines():
            if line.startswith('ringlane_config_reloads_total{result="error"}'):
                return float(line.split()[-1])
        return -1.0

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def start(cfg: Path, admin: int, *extra: str) -> Sidecar:
        s = Sidecar(cfg, admin, *extra)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


# ---------- 1. durations that overflow the C core's uint32 milliseconds ----------

@pytest.mark.parametrize("field", ["idleTimeout", "requestHeaderTimeout"])
def test_validation_rejects_duration_overflowing_uint32_ms(field: str) -> None:
    """1194h = 4 298 400 000 ms > 2**32-1: the C core takes uint32 ms, so validation must refuse it."""
    d = doc(39901, 39080, limits={field: "1194h"})
    with pytest.raises(ConfigError):
        parse_config(d)


def test_check_rejects_cluster_timeout_overflow(tmp_path: Path) -> None:
    d = doc(39901, 39080)
    d["clusters"][0]["connectTimeout"] = "99999h99999h99999h99999h"
    p = tmp_path / "c.json"
    p.write_text(json.dumps(d))
    r = run_cli("check", "--config", str(p))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)


def test_run_with_overflowing_duration_is_a_clear_config_error(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(free_port(), free_port(), limits={"idleTimeout": "1194h"})))
    r = run_cli("run", "--config", str(p), "--cpus", "0", "--workers", "1", "--engine", "epoll")
    assert r.returncode == 2 and "internal error" not in r.stderr, (r.returncode, r.stderr[-400:])


def _reload_survives(tmp_path: Path, sidecar: Callable[..., Sidecar], bad_text: str) -> None:
    admin, listen = free_port(), free_port()
    p = tmp_path / "live.json"
    p.write_text(json.dumps(doc(admin, listen, generation=1)))
    s = sidecar(p, admin)
    assert wait_for(s.up, 15), s.stderr()
    write_atomic(p, bad_text)
    counted = wait_for(lambda: s.reload_errors() >= 1, 5)
    write_atomic(p, json.dumps(doc(admin, listen, generation=2)))
    applied = wait_for(lambda: s.generation() == 2, 5)
    assert counted and applied, (
        f"bad reload counted={counted}; later good config applied={applied}; "
        f"generation={s.generation()} reload_errors={s.reload_errors()}\n{s.stderr()[-600:]}")


def test_reload_with_overflowing_duration_keeps_watching(tmp_path: Path, sidecar: Callable[..., Sidecar]) -> None:
    """A bad reload must be refused (counted, logged) and later good configs still applied."""
    admin = free_port()
    bad = json.dumps(doc(admin, free_port(), generation=9, limits={"idleTimeout": "1194h"}))
    _reload_survives(tmp_path, sidecar, bad)


# ---------- 2. JSON integers longer than Python's int-str limit ----------

HUGE_INT_JSON = '{"version": 1, "generation": ' + "9" * 5000 + ', "listeners": [], "clusters": []}'


def test_check_huge_json_integer_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(HUGE_INT_JSON)
    r = run_cli("check", "--config", str(p))
    assert r.returncode == 2 and "internal error" not in r.stderr, (r.returncode, r.stderr[-300:])


def test_reload_with_huge_json_integer_keeps_watching(tmp_path: Path, sidecar: Callable[..., Sidecar]) -> None:
    _reload_survives(tmp_path, sidecar, HUGE_INT_JSON)


# ---------- 3. SIGTERM with the longest drainTimeout the core takes ----------

def test_sigterm_drains_and_exits_with_the_longest_drain_timeout(tmp_path: Path, sidecar: Callable[..., Sidecar]) -> None:
    """1193h is accepted; the drain (nothing in flight) ends at once and the process exits."""
    admin = free_port()
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(admin, free_port(), limits={"drainTimeout": "1193h"})))
    s = sidecar(p, admin)
    assert wait_for(s.up, 15), s.stderr()
    s.proc.send_signal(signal.SIGTERM)
    exited = wait_for(lambda: s.proc.poll() is not None, 8)
    assert exited and "Traceback" not in s.stderr(), s.stderr()[-800:]


# ---------- 4. CLI flags / engine.workers beyond the core's 256 workers ----------

def test_workers_over_core_maximum_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(free_port(), free_port())))
    r = run_cli("run", "--config", str(p), "--cpus", "0", "--workers", "300", "--engine", "epoll")
    assert r.returncode == 2 and "internal error" not in r.stderr, (r.returncode, r.stderr[-300:])


def test_cpus_list_larger_than_core_maximum_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(free_port(), free_port())))
    r = run_cli("run", "--config", str(p), "--cpus", "0-300", "--engine", "epoll")
    assert r.returncode == 2 and "internal error" not in r.stderr, (r.returncode, r.stderr[-300:])


def test_config_engine_workers_over_core_maximum_rejected_by_validation() -> None:
    """Schema allows 1..1024 but the core has RL_MAX_WORKERS 256: check says ok, run dies with IndexError."""
    with pytest.raises(ConfigError):
        parse_config(doc(39901, 39080, engine={"workers": 300}))


def test_cpus_huge_range_no_traceback(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(free_port(), free_port())))
    r = subprocess.run(["prlimit", "--as=800000000", BIN, "run", "--config", str(p), "--cpus", "0-1000000000"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "Traceback" not in r.stderr, (r.returncode, r.stderr[-300:])


def test_invalid_admin_flag_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(free_port(), free_port())))
    r = run_cli("run", "--config", str(p), "--cpus", "0", "--workers", "1", "--engine", "epoll",
                "--admin", "1.2.3:4")
    assert r.returncode == 2 and "internal error" not in r.stderr, (r.returncode, r.stderr[-300:])


@pytest.mark.parametrize("content", [None, b'app="\xff"\n'])
def test_bad_pod_labels_file_is_a_clear_error(tmp_path: Path, content: bytes | None) -> None:
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(free_port(), free_port())))
    labels = tmp_path / "labels"
    if content is not None:
        labels.write_bytes(content)
    r = run_cli("run", "--config", str(p), "--cpus", "0", "--workers", "1", "--engine", "epoll",
                "--pod-labels", str(labels))
    assert r.returncode == 2 and "internal error" not in r.stderr, (r.returncode, r.stderr[-300:])
    assert "pod labels" in r.stderr, r.stderr[-300:]


# ---------- 5. SIGHUP ----------

def test_sighup_reloads_and_does_not_kill_the_sidecar(tmp_path: Path, sidecar: Callable[..., Sidecar]) -> None:
    """SIGHUP reloads the file at once (its default action would kill the proxy, no drain). The
    new file is written in place with its old size and mtime, so only the signal can reveal it."""
    admin, listen = free_port(), free_port()
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(admin, listen, generation=1)))
    s = sidecar(p, admin)
    assert wait_for(s.up, 15), s.stderr()
    st = p.stat()
    with open(p, "r+b") as f:  # same length: generation 1 -> 2
        f.write(json.dumps(doc(admin, listen, generation=2)).encode())
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    s.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: s.generation() == 2, 5), s.stderr()[-600:]
    assert s.proc.poll() is None, f"sidecar died on SIGHUP with rc={s.proc.returncode}"


# ---------- 6. admin port: malformed framing gets no answer ----------

@pytest.mark.parametrize("head", [b"GET /healthz HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                                  b"GET /healthz HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                                  b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n"])
def test_admin_malformed_request_gets_a_4xx(tmp_path: Path, sidecar: Callable[..., Sidecar], head: bytes) -> None:
    admin = free_port()
    p = tmp_path / "c.json"
    p.write_text(json.dumps(doc(admin, free_port())))
    s = sidecar(p, admin)
    assert wait_for(s.up, 15), s.stderr()
    with socket.create_connection(("127.0.0.1", admin), timeout=3) as c:
        c.sendall(head)
        data = c.recv(4096)
    assert data.startswith(b"HTTP/1.1 4"), data[:100]


# ---------- 7. a large (but allowed) config blocks the admin loop ----------

def test_healthz_answers_during_reload_of_1mib_config(tmp_path: Path, sidecar: Callable[..., Sidecar]) -> None:
    """A ~1 MiB config is read and validated off the event loop (on it, /healthz went unanswered
    for ~4 s). The bound is kubelet's default probe timeout, 1 s: a liveness contract with a
    wide margin (the loop waits at most one GIL switch interval, 5 ms), not a speed claim."""
    admin, listen = free_port(), free_port()
    p = tmp_path / "live.json"
    p.write_text(json.dumps(doc(admin, listen, generation=1)))
    s = sidecar(p, admin)
    assert wait_for(s.up, 15), s.stderr()
    big = doc(admin, listen, generation=2)
    big["clusters"] = [{"name": f"c{i}", "endpoints": [{"address": f"10.{i // 256}.{i % 256}.{j}:80"}
                                                       for j in range(1, 130)]} for i in range(250)]
    big["clusters"][0]["name"] = "c"
    write_atomic(p, json.dumps(big))
    worst = 0.0
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        try:
            get(admin, "/healthz")
            done = s.generation() == 2
        except OSError:
            done = False
        worst = max(worst, time.monotonic() - t0)  # two admin round trips
        if done:
            break
    assert s.generation() == 2, s.stderr()[-500:]
    assert worst < 1.0, f"/healthz took {worst:.2f}s while a ~1 MiB config was reloading (probes time out at 1 s)"


def test_the_cli_worker_limit_is_the_cores() -> None:
    from ringlane_sidecar.cli import MAX_WORKERS
    from ringlane_sidecar.core import Core, CoreError
    from ringlane_sidecar.native import load

    _, lib = load()
    assert MAX_WORKERS == lib.RL_MAX_WORKERS
    with pytest.raises(CoreError, match="1 to 256"):
        Core("epoll", [0] * (MAX_WORKERS + 1))


@pytest.mark.parametrize("cpus,expected", [("0", [0]), ("2,0-1", [2, 0, 1]), ("1,1-2", [1, 2])])
def test_cpu_lists(cpus: str, expected: list[int]) -> None:
    from ringlane_sidecar.cli import cpu_list

    assert cpu_list(cpus) == expected


@pytest.mark.parametrize("cpus", ["", "a", "3-1", "-1", "0-4096", "0-1000000000", "1,,2"])
def test_bad_cpu_lists(cpus: str) -> None:
    import argparse

    from ringlane_sidecar.cli import cpu_list

    with pytest.raises(argparse.ArgumentTypeError):
        cpu_list(cpus)
