"""Bad input handed to the sidecar (check/run/seccomp-profile flags, config files, live reloads,
the admin port), from a review pass. Each test asserts the project's rule: a clear error naming
what is wrong (exit 2 for invalid input), never a traceback or an "internal error", and a running
sidecar keeps serving and recovers. All but the last two tests and the flag checks in
test_cpus_and_workers_bad_values_are_usage_errors failed when written."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from .conftest import Nginx, SidecarFactory, sidecar_bin
from .util import TRACEBACK, free_port, http_config, http_get, wait_for, write_atomic

BASE_YAML = """\
version: 1
listeners:
  - name: web
    address: 127.0.0.1:8080
    rules: [{name: r, backends: [{cluster: c}]}]
clusters:
  - name: c
    endpoints: [{address: 127.0.0.1:8081}]
"""


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sidecar_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def check_file(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> subprocess.CompletedProcess[str]:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return cli("check", "--config", str(path))


def assert_clean_invalid(r: subprocess.CompletedProcess[str], *, lines: int | None = None) -> list[str]:
    out = r.stdout + r.stderr
    assert TRACEBACK not in out, out
    assert "internal error" not in out, out
    assert r.returncode == 2, f"exit {r.returncode}, expected 2\n{out}"
    got = r.stderr.strip().splitlines()
    if lines is not None:
        assert len(got) == lines, f"expected {lines} error line(s), got {len(got)}:\n{r.stderr}"
    return got


# ---- check: config files ----

def test_check_yaml_bool_tag_with_a_bad_value_is_an_invalid_config(tmp_path: Path) -> None:
    # `!!bool maybe`: PyYAML's bool constructor raises KeyError, which decode.py does not catch.
    r = check_file(tmp_path, BASE_YAML + "engine: {pin: !!bool maybe}\n")
    (line,) = assert_clean_invalid(r, lines=1)
    assert "maybe" in line and "line 9" in line, line


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b"])
def test_check_control_character_is_one_line_naming_the_line(tmp_path: Path, char: str) -> None:
    # yaml.ReaderError's str() spans two lines and says '<unicode string>, position N'.
    r = check_file(tmp_path, BASE_YAML.replace("name: web", f"name: w{char}b"))
    (line,) = assert_clean_invalid(r, lines=1)
    assert "<unicode string>" not in line, line
    assert "line 3" in line, line


def test_check_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    try:
        r = cli("check", "--config", str(fifo), timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`ringlane-sidecar check --config {fifo}` (a FIFO) still blocked after 20 s")
    (line,) = assert_clean_invalid(r, lines=1)
    assert str(fifo) in line, line


def _surrogate_header_config(admin: int, listen: int) -> str:
    return json.dumps({
        "version": 1, "admin": {"address": f"127.0.0.1:{admin}"},
        "listeners": [{"name": "web", "address": f"127.0.0.1:{listen}", "rules": [{
            "name": "r", "backends": [{"cluster": "c"}],
            "filters": [{"requestHeaderModifier": {"set": [{"name": "x-a", "value": "\ud800"}]}}]}]}],
        "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:9"}]}],
    })  # ensure_ascii: the file holds the escape \ud800, valid JSON for a lone surrogate


def test_check_rejects_a_header_value_the_core_cannot_encode(tmp_path: Path) -> None:
    r = check_file(tmp_path, _surrogate_header_config(free_port(), free_port()), "config.json")
    (line,) = assert_clean_invalid(r, lines=1)
    assert "filters[0].requestHeaderModifier.set[0].value" in line, line


def test_run_with_an_unencodable_header_value_is_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(_surrogate_header_config(free_port(), free_port()))
    r = cli("run", "--config", str(path), "--engine", "epoll", timeout=60)
    assert TRACEBACK not in r.stderr, r.stderr
    assert "internal error" not in r.stderr, r.stderr
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stderr}"
    assert "filters[0].requestHeaderModifier.set[0].value" in r.stderr, r.stderr


def test_check_rejects_more_clusters_than_the_core_can_count(tmp_path: Path) -> None:
    # The core has 4096 stats slots per table; `run` refuses this config ("more than 4096 names
    # in use"), so `check` saying "ok" sends a config to the pods that none of them can start.
    cfg = {"version": 1,
           "listeners": [{"name": "web", "address": "127.0.0.1:8080",
                          "rules": [{"name": "r", "backends": [{"cluster": "c0"}]}]}],
           "clusters": [{"name": f"c{i}", "endpoints": []} for i in range(4200)]}
    r = check_file(tmp_path, json.dumps(cfg), "config.json")
    (line,) = assert_clean_invalid(r, lines=1)
    assert "clusters" in line, line


# ---- other commands and flags ----

def test_seccomp_profile_install_into_a_regular_file_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "not-a-dir"
    target.write_text("x")
    r = cli("seccomp-profile", "--install", str(target))
    (line,) = assert_clean_invalid(r, lines=1)
    assert str(target) in line, line


def test_seccomp_profile_install_under_a_missing_unwritable_root_names_the_path() -> None:
    target = "/proc/ringlane-review/profiles"
    r = cli("seccomp-profile", "--install", target)
    (line,) = assert_clean_invalid(r, lines=1)
    assert target in line or "/proc" in line, line


def test_run_configmap_flag_without_a_slash_is_rejected(tmp_path: Path) -> None:
    admin = free_port()
    argv = [sidecar_bin(), "run", "--configmap", "routes-without-namespace", "--admin", f"127.0.0.1:{admin}",
            "--engine", "epoll"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        pytest.fail("`run --configmap routes-without-namespace` is still running 20 s later (expected exit 2 "
                    f"naming --configmap NS/NAME)\n--- stderr ---\n{err[-1500:]}")
    assert proc.returncode == 2, err
    assert "--configmap" in err, err


@pytest.mark.parametrize("bad", ["0-", "1-", "0,1-"])
def test_cpus_open_range_is_rejected(tmp_path: Path, bad: str) -> None:
    # "0-" is not kernel cpuset syntax; it is taken as "0" today.
    r = cli("run", "--cpus", bad, "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2, r.stderr
    assert "--cpus" in r.stderr, f"--cpus {bad!r} was accepted; stderr:\n{r.stderr}"


def test_cpus_and_workers_bad_values_are_usage_errors(tmp_path: Path) -> None:
    for args in (["--cpus", ""], ["--cpus", "a"], ["--cpus", "2-1"], ["--cpus", "-1"], ["--workers", "0"],
                 ["--workers", "-1"], ["--workers", "x"], ["--engine", "bogus"]):
        r = cli("run", *args, "--config", str(tmp_path / "missing.yaml"))
        assert r.returncode == 2 and TRACEBACK not in r.stderr, (args, r.stderr)
        assert args[0] in r.stderr, (args, r.stderr)


# ---- the admin port ----

def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)


@pytest.mark.parametrize("value", ["\u00b2".encode("latin-1"), b"1" * 5000])
def test_admin_content_length_int_cannot_parse_gets_400(sidecar: SidecarFactory, nginx: Nginx,
                                                        value: bytes) -> None:
    # "²".isdigit() is True but int("²") raises; so does a 5000-digit number (int max str digits).
    listen, admin = free_port(), free_port()
    sc = sidecar(http_config(listen, admin, routes=[("r", "/", "a")], clusters={"a": [nginx.a]}),
                 listen_port=listen, admin_port=admin)
    reply = _raw(admin, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 "), f"reply {reply[:80]!r}\n--- stderr ---\n{sc.stderr()[-1500:]}"
    assert TRACEBACK not in sc.stderr(), sc.stderr()


def test_admin_slowloris_blocks_neither_admin_nor_proxy(sidecar: SidecarFactory, nginx: Nginx) -> None:
    listen, admin = free_port(), free_port()
    sc = sidecar(http_config(listen, admin, routes=[("r", "/", "a")], clusters={"a": [nginx.a]}),
                 listen_port=listen, admin_port=admin)
    slow = [socket.create_connection(("127.0.0.1", admin), timeout=5) for _ in range(50)]
    try:
        for s in slow:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-a: ")  # never finished
        big = _raw(admin, b"GET /healthz HTTP/1.1\r\nX-big: " + b"a" * 70000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431 "), big[:80]
        assert _raw(admin, b"GARBAGE\x00\xff\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert _raw(admin, b"BREW /metrics HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 405 ")
        r10 = _raw(admin, b"GET /metrics?name[]=x&y HTTP/1.0\r\n\r\n")
        assert r10.startswith(b"HTTP/1.1 200 ") and b"ringlane_config_generation" in r10, r10[:200]
        assert http_get(f"{sc.admin}/healthz")[0] == 200
        assert http_get(f"{sc.listener}/")[0] == 200
    finally:
        for s in slow:
            s.close()


# ---- live reload ----

def test_reload_recovers_after_the_config_path_was_briefly_a_fifo(sidecar: SidecarFactory, nginx: Nginx,
                                                                   tmp_path: Path) -> None:
    """A FIFO in place of the config file: opening it for reading waited for a writer, inside the
    reload lock, so every later change (a good file too) was ignored without a word. It is
    refused at once now ("is a FIFO"), counted as a failed reload, and the good file applies."""
    listen, admin = free_port(), free_port()
    path = tmp_path / "config.yaml"
    v1 = http_config(listen, admin, routes=[("r", "/", "a")], clusters={"a": [nginx.a]}, generation=1)
    v2 = http_config(listen, admin, routes=[("r", "/", "b")], clusters={"b": [nginx.b]}, generation=2)
    sc = sidecar(v1, config_path=path, listen_port=listen, admin_port=admin)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.replace(fifo, path)
    wait_for(lambda: (sc.metric("ringlane_config_reloads_total", result="error") or 0) >= 1, 10.0,
             lambda: f"the FIFO refused as a failed reload\n{sc.stderr()[-1500:]}", interval=0.05)
    assert any("FIFO" in str(r.get("error")) for r in sc.find_logs("config rejected, still serving the previous one"))
    assert sc.config()["generation"] == 1 and http_get(f"{sc.listener}/")[0] == 200
    write_atomic(path, v2)
    wait_for(lambda: sc.config()["generation"] == 2, 10.0,
             lambda: f"generation 2 applied after the FIFO was replaced by a good file (/config: "
                     f"{sc.config()['generation']})\n--- stderr ---\n{sc.stderr()[-1500:]}", interval=0.05)
    assert http_get(f"{sc.listener}/")[0] == 200


def test_bad_reloads_keep_serving_and_a_good_one_recovers(sidecar: SidecarFactory, nginx: Nginx,
                                                         tmp_path: Path) -> None:
    listen, admin = free_port(), free_port()
    path = tmp_path / "config.yaml"
    v1 = http_config(listen, admin, routes=[("r", "/", "a")], clusters={"a": [nginx.a]}, generation=1)
    v2 = http_config(listen, admin, routes=[("r", "/", "b")], clusters={"b": [nginx.b]}, generation=2)
    sc = sidecar(v1, config_path=path, listen_port=listen, admin_port=admin)
    bad = ["", "version: 1\nlisteners: [\n", "\t- x\n", "- a\n", "version: 2\nlisteners: []\nclusters: []\n",
           "a: \x00\n"]
    for n, text in enumerate(bad, start=1):
        write_atomic(path, text)
        wait_for(lambda: (sc.metric("ringlane_config_reloads_total", result="error") or 0) >= n, 10.0,
                 lambda: f"{n} failed reloads counted\n{sc.stderr()[-1500:]}", interval=0.05)
        assert http_get(f"{sc.listener}/")[0] == 200
        assert sc.config()["generation"] == 1
    rejected = sc.find_logs("config rejected, still serving the previous one")
    assert all("internal error" not in str(r.get("error")) for r in rejected), rejected
    write_atomic(path, v2)
    wait_for(lambda: sc.config()["generation"] == 2, 10.0, "good config applied", interval=0.05)
    assert http_get(f"{sc.listener}/")[0] == 200
