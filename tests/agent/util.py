"""Helpers for the agent tests: ports and condition waits (from tests/polling.py, shared with the
integration tests), HTTP clients, config builders, metrics.

Everything here talks to real processes over real sockets; nothing is mocked.
"""
from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

import yaml
from prometheus_client.parser import text_string_to_metric_families

from polling import free_port, port_open, wait_for  # noqa: F401 -- re-exported for the tests

TRACEBACK = "Traceback (most recent call last)"


# ---- HTTP ----

def http_get(url: str, timeout: float = 5.0, method: str = "GET") -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, raw_len: int) -> None:
        self.status, self.headers, self.body, self.raw_len = status, headers, body, raw_len


class RawClient:
    """HTTP/1.1 over a plain socket that counts every byte it sends and receives."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sent = 0
        self.received = 0
        self._buf = b""

    def request(self, path: str, *, close: bool = False, host: str = "test.local") -> RawResponse:
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringlane-tests\r\n"
               f"{'Connection: close' + chr(13) + chr(10) if close else ''}\r\n").encode()
        self.sock.sendall(req)
        self.sent += len(req)
        return self._read_response()

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.received += len(data)
        self._buf += data
        return bool(data)

    def _read_response(self) -> RawResponse:
        while b"\r\n\r\n" not in self._buf:
            if not self._fill():
                raise ConnectionError(f"connection closed before a response head ({self._buf!r})")
        head, _, rest = self._buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "content-length" not in headers:
            raise AssertionError(f"test client expects Content-Length framing, got {headers}")
        n = int(headers["content-length"])
        self._buf = rest
        while len(self._buf) < n:
            if not self._fill():
                raise ConnectionError("connection closed inside a response body")
        body, self._buf = self._buf[:n], self._buf[n:]
        return RawResponse(status, headers, body, len(head) + 4 + n)

    def close_and_drain(self) -> None:
        """Half-close, then read until the proxy closes too, so every byte it sent is counted."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while self._fill():
                pass
        except OSError:
            pass
        self.sock.close()


# ---- config files ----

def http_config(listen_port: int, admin_port: int, *, routes: Iterable[tuple[str, str, str]],
                clusters: dict[str, list[str]], generation: int = 1, drain_timeout: str = "5s",
                listener: str = "web") -> dict[str, Any]:
    """A version-1 config: one HTTP listener; routes are (rule name, path prefix, cluster)."""
    return {
        "version": 1,
        "generation": generation,
        "admin": {"address": f"127.0.0.1:{admin_port}"},
        "limits": {"drainTimeout": drain_timeout},
        "listeners": [{
            "name": listener,
            "address": f"127.0.0.1:{listen_port}",
            "protocol": "http",
            "rules": [{"name": name, "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
                       "backends": [{"cluster": cluster}]} for name, prefix, cluster in routes],
        }],
        "clusters": [{"name": name, "endpoints": [{"address": a} for a in eps]} for name, eps in clusters.items()],
    }


def dump_config(cfg: dict[str, Any] | str) -> str:
    return cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False)


def write_atomic(path: Path, cfg: dict[str, Any] | str) -> None:
    """What a careful writer does: a temporary file in the same directory, then rename over."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(dump_config(cfg))
    os.replace(tmp, path)


class KubeletDir:
    """A ConfigMap volume as the kubelet lays it out (atomic_writer.go):

    dir/..<timestamp>/config.yaml, dir/..data -> ..<timestamp>, dir/config.yaml -> ..data/config.yaml.
    An update writes a new timestamped dir, renames a new symlink over ..data, then removes the old dir."""

    def __init__(self, root: Path, name: str = "config.yaml") -> None:
        self.root, self.name = root, name
        self.n = 0
        self.current: Path | None = None

    @property
    def path(self) -> Path:
        return self.root / self.name

    def write(self, cfg: dict[str, Any] | str) -> None:
        self.n += 1
        ts = self.root / f"..2026_11_25_07_{self.n:02d}_00.{os.getpid()}{self.n}"
        ts.mkdir()
        (ts / self.name).write_text(dump_config(cfg))
        tmp_link = self.root / "..data_tmp"
        tmp_link.symlink_to(ts.name)
        os.replace(tmp_link, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(f"..data/{self.name}")
        old, self.current = self.current, ts
        if old is not None:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()


# ---- metrics ----

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the one sample with exactly these labels (None when absent)."""
    return samples.get((name, frozenset(labels.items())))


def sample_sum(samples: Samples, name: str, **labels: str) -> float:
    """Sum over samples whose labels include these (e.g. all listeners)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def metadata(text: str) -> tuple[dict[str, str], set[str]]:
    """TYPE per metric family and the families with a HELP line, straight from the text."""
    types: dict[str, str] = {}
    helps: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"# (TYPE|HELP) (\S+) ?(.*)$", line)
        if m and m.group(1) == "TYPE":
            types[m.group(2)] = m.group(3)
        elif m and m.group(3).strip():
            helps.add(m.group(2))
    return types, helps


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every JSON object line of a log; other lines (there should be none) are returned as raw."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"raw": line})
    return out
