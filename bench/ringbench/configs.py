"""Config files for every peer: the backend nginx, Ringlane, nginx as a proxy, HAProxy.

Every proxy gets the same shape: one HTTP listener with one rule to one backend, and one L4
(TCP) listener relaying to the same backend. Each is tuned the way its operators would:
upstream keep-alive, no access log, one worker per proxy CPU, pinned.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ringbench.placement import cpu_list, nginx_affinity

BODY_12 = b"hello world\n"                      # 12 bytes
BODY_1K = b"r" * 1023 + b"\n"                    # 1 KiB
FILE_1M_SIZE = 1 << 20
PATH_12, PATH_1K, PATH_1M = "/12", "/1k", "/1m"
BODIES = {PATH_12: BODY_12, PATH_1K: BODY_1K}
NOFILE = 20000                                   # per-process descriptors the peers may use
# HAProxy reserves two descriptors per connection and refuses to start when that exceeds the
# hard RLIMIT_NOFILE (20000 here, and it cannot be raised without CAP_SYS_RESOURCE).
HAPROXY_MAXCONN = NOFILE // 2 - 50
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


@dataclass(frozen=True)
class Ports:
    backend: int
    http: int      # the proxy's HTTP listener
    tcp: int       # the proxy's L4 listener
    admin: int     # Ringlane's admin port


def backend_nginx(run_dir: Path, port: int, cpus: tuple[int, ...]) -> str:
    """The origin: nginx, one pinned worker, `return 200` bodies and a 1 MiB static file."""
    docroot = run_dir / "www"
    docroot.mkdir(parents=True, exist_ok=True)
    big = docroot / PATH_1M.lstrip("/")
    if not big.exists() or big.stat().st_size != FILE_1M_SIZE:
        big.write_bytes(bytes(range(256)) * (FILE_1M_SIZE // 256))
    return f"""# backend (origin) for the benchmarks: one worker pinned to CPU {cpu_list(cpus)}
daemon off;
master_process on;
worker_processes 1;
worker_cpu_affinity {nginx_affinity(cpus)};
worker_rlimit_nofile {NOFILE};
pid {run_dir}/backend.pid;
error_log {run_dir}/backend-error.log warn;
events {{ worker_connections {NOFILE - 100}; multi_accept on; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {run_dir}/tmp-backend;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
        location = {PATH_12} {{ return 200 "{BODY_12.decode().rstrip()}\\n"; }}
        location = {PATH_1K} {{ return 200 "{BODY_1K.decode().rstrip()}\\n"; }}
        location = {PATH_1M} {{ }}
    }}
}}
"""


def ringlane(ports: Ports, engine: str, workers: int) -> str:
    """Ringlane's config (JSON, which `ringlane-sidecar run --config` reads like YAML)."""
    backend = f"127.0.0.1:{ports.backend}"
    cfg = {
        "version": 1,
        "generation": 1,
        "engine": {"kind": engine, "workers": workers, "pin": True},
        "admin": {"address": f"127.0.0.1:{ports.admin}"},
        "limits": {"idleTimeout": "5m"},
        "listeners": [
            {"name": "web", "address": f"127.0.0.1:{ports.http}", "protocol": "http",
             "rules": [{"name": "bench/web/0", "backends": [{"cluster": "backend"}]}]},
            {"name": "relay", "address": f"127.0.0.1:{ports.tcp}", "protocol": "tcp",
             "rules": [{"name": "bench/relay/0", "backends": [{"cluster": "backend"}]}]},
        ],
        "clusters": [{"name": "backend", "idleTimeout": "5m", "endpoints": [{"address": backend}]}],
    }
    return json.dumps(cfg, indent=2) + "\n"


def nginx_proxy(run_dir: Path, ports: Ports, cpus: tuple[int, ...], stream: bool) -> str:
    """nginx as a reverse proxy (and stream relay when the module is installed)."""
    stream_block = f"""
stream {{
    upstream relay {{ server 127.0.0.1:{ports.backend}; }}
    server {{ listen 127.0.0.1:{ports.tcp} reuseport backlog=4096; proxy_pass relay; }}
}}
""" if stream else ""
    load = f"load_module {STREAM_MODULE};\n" if stream else ""
    return f"""# nginx as the reference proxy: {len(cpus)} worker(s) pinned to CPU(s) {cpu_list(cpus)}
{load}daemon off;
master_process on;
worker_processes {len(cpus)};
worker_cpu_affinity {nginx_affinity(cpus)};
worker_rlimit_nofile {NOFILE};
pid {run_dir}/nginx-proxy.pid;
error_log {run_dir}/nginx-proxy-error.log warn;
events {{ worker_connections {NOFILE - 100}; multi_accept on; }}
http {{
    access_log off;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    client_body_temp_path {run_dir}/tmp-nginx-body;
    proxy_temp_path {run_dir}/tmp-nginx-proxy;
    upstream backend {{
        server 127.0.0.1:{ports.backend};
        keepalive 128;
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{ports.http} reuseport backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffer_size 16k;
            proxy_buffers 8 16k;
            proxy_busy_buffers_size 32k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
{stream_block}"""


def haproxy(ports: Ports, cpus: tuple[int, ...]) -> str:
    """HAProxy: nbthread = workers, each thread pinned (cpu-map), http-reuse always."""
    n = len(cpus)
    return f"""# HAProxy as the reference proxy: {n} thread(s) pinned to CPU(s) {cpu_list(cpus)}
global
    nbthread {n}
    cpu-map auto:1/1-{n} {cpu_list(cpus)}
    maxconn {HAPROXY_MAXCONN}
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always
frontend web
    bind 127.0.0.1:{ports.http}
    default_backend origin
backend origin
    server s1 127.0.0.1:{ports.backend}
listen relay
    mode tcp
    bind 127.0.0.1:{ports.tcp}
    server s1 127.0.0.1:{ports.backend}
"""
