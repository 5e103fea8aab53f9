"""Starting the backend and the peers (proxies under test, plus "direct"), pinned, ready-checked."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ringbench import configs
from ringbench.accounting import process_tree
from ringbench.configs import BODY_12, PATH_12, Ports
from ringbench.net import accepts, free_ports, http_get, serves
from ringbench.placement import Placement, cpu_list, taskset
from ringbench.procs import Child, StartError, Supervisor, wait_until

PEERS = ("ringlane-io_uring", "ringlane-epoll", "nginx", "haproxy", "direct")
PROXIES = PEERS[:-1]
START_TIMEOUT_S = 20.0


@dataclass
class Running:
    """A started peer: where to send load and which processes to account."""

    name: str
    http_port: int
    tcp_port: int | None      # None: no L4 listener (direct, or nginx without the stream module)
    child: Child | None       # None for "direct"
    note: str = ""
    build: str = ""           # Ringlane: which C core build the process loaded

    def pids(self) -> list[int]:
        """The peer's processes: the root and all its descendants (nginx's workers)."""
        return process_tree(self.child.pid) if self.child is not None else []

    def alive(self) -> bool:
        return self.child is None or self.child.alive()


@dataclass
class Tools:
    ringlane: Path
    nginx: str
    haproxy: str
    nginx_stream: bool


def find_tools(repo: Path) -> Tools:
    ringlane = repo / ".venv" / "bin" / "ringlane-sidecar"
    if not ringlane.exists():
        raise StartError(f"{ringlane} is missing: run `make setup` first")
    nginx, haproxy = shutil.which("nginx") or "/usr/sbin/nginx", shutil.which("haproxy") or "/usr/sbin/haproxy"
    for tool in (nginx, haproxy):
        if not Path(tool).exists():
            raise StartError(f"{tool} is missing: run `make setup` first")
    return Tools(ringlane, nginx, haproxy, configs.STREAM_MODULE.exists())


def start_backend(sup: Supervisor, run_dir: Path, placement: Placement) -> Running:
    (port,) = free_ports(1)
    conf = run_dir / f"backend-{placement.name}.conf"
    conf.write_text(configs.backend_nginx(run_dir, port, placement.backend_cpus))
    (run_dir / "tmp-backend").mkdir(exist_ok=True)
    child = sup.spawn(f"backend-{placement.name}",
                      taskset(placement.backend_cpus, [shutil.which("nginx") or "/usr/sbin/nginx",
                                                       "-p", str(run_dir), "-c", str(conf), "-e", "stderr"]))
    wait_until("the backend to serve", lambda: serves(port, PATH_12, BODY_12), START_TIMEOUT_S, child)
    return Running("backend", port, port, child)


def start_peer(sup: Supervisor, tools: Tools, run_dir: Path, placement: Placement, name: str,
               backend_port: int) -> Running:
    if name == "direct":
        return Running("direct", backend_port, backend_port, None, "no proxy: the load generator talks to the backend")
    http, tcp, admin = free_ports(3, first=20000 + 100 * (PEERS.index(name) + 1))
    ports = Ports(backend_port, http, tcp, admin)
    tag = f"{name}-{placement.name}"
    cpus = placement.proxy_cpus
    note = ""
    if name.startswith("ringlane-"):
        engine = name.removeprefix("ringlane-")
        conf = run_dir / f"{tag}.json"
        conf.write_text(configs.ringlane(ports, engine, placement.workers))
        argv = taskset(cpus, [str(tools.ringlane), "run", "--config", str(conf), "--engine", engine,
                              "--cpus", cpu_list(cpus), "--workers", str(placement.workers),
                              "--log-level", "warning"])
        child = sup.spawn(tag, argv)
        wait_until(f"{tag} /ready", lambda: _ready(admin), START_TIMEOUT_S, child)
        build = core_build(tools.ringlane)
        view = _config_view(admin)
        if view.get("engine") != engine or view.get("workers") != placement.workers:
            raise StartError(f"{tag}: asked for engine {engine} x{placement.workers}, /config says "
                             f"{view.get('engine')} x{view.get('workers')} ({view.get('engine_reason')})")
    elif name == "nginx":
        conf = run_dir / f"{tag}.conf"
        conf.write_text(configs.nginx_proxy(run_dir, ports, cpus, tools.nginx_stream))
        for d in ("tmp-nginx-body", "tmp-nginx-proxy"):
            (run_dir / d).mkdir(exist_ok=True)
        child = sup.spawn(tag, taskset(cpus, [tools.nginx, "-p", str(run_dir), "-c", str(conf), "-e", "stderr"]))
        wait_until(f"{tag} workers", lambda: len(process_tree(child.pid)) >= 1 + placement.workers,
                   START_TIMEOUT_S, child)
        if not tools.nginx_stream:
            note = f"no L4: {configs.STREAM_MODULE} missing (Debian package libnginx-mod-stream)"
    elif name == "haproxy":
        conf = run_dir / f"{tag}.cfg"
        conf.write_text(configs.haproxy(ports, cpus))
        child = sup.spawn(tag, taskset(cpus, [tools.haproxy, "-db", "-f", str(conf)]))
    else:
        raise ValueError(f"unknown peer {name!r}")
    wait_until(f"{tag} to proxy HTTP", lambda: serves(http, PATH_12, BODY_12), START_TIMEOUT_S, child)
    has_tcp = not (name == "nginx" and not tools.nginx_stream)
    if has_tcp:
        wait_until(f"{tag} to relay TCP", lambda: accepts(tcp) and serves(tcp, PATH_12, BODY_12),
                   START_TIMEOUT_S, child)
    return Running(name, http, tcp if has_tcp else None, child, note,
                   build if name.startswith("ringlane-") else "")


def core_build(ringlane: Path) -> str:
    """The C core a Ringlane started now loads: file name, short sha256 and mtime (the core can
    be rebuilt while a long run goes on; the report then shows which cells used which build)."""
    override = os.environ.get("RINGLANE_CORE_SO")
    package = ringlane.parent.parent.parent / "sidecar" / "ringlane_sidecar"
    candidates = [Path(override)] if override else sorted(package.glob("_core*.so"))
    if not candidates or not candidates[0].exists():
        return "?"
    so = candidates[0]
    digest = hashlib.sha256(so.read_bytes()).hexdigest()[:12]
    return f"{so.name} sha256:{digest} built {time.strftime('%H:%M:%S', time.localtime(so.stat().st_mtime))}"


def _ready(admin: int) -> bool:
    got = http_get(admin, "/ready")
    return got is not None and got[0] == 200


def _config_view(admin: int) -> dict[str, object]:
    got = http_get(admin, "/config", timeout_s=2.0)
    if got is None or got[0] != 200:
        raise StartError(f"GET /config on the admin port {admin} failed: {got!r}")
    view = json.loads(got[1])
    if not isinstance(view, dict):
        raise StartError(f"GET /config: not a JSON object: {got[1][:200]!r}")
    return view
