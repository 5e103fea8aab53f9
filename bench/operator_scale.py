#!/usr/bin/env python3
"""Operator at scale, against the real kube-apiserver (e2e/cluster/up.sh): memory and
reconcile time with many EndpointSlices and ProxyRoutes, and the injection webhook's
admission latency.

  bench/operator_scale.py            # make bench-operator: 5,000 EndpointSlices, 1,000 ProxyRoutes, 500 pods
  bench/operator_scale.py --help     # the sizes are flags

What it does (everything in fresh namespaces rlscale-<run>-*, all deleted at the end, also on
failure, Ctrl-C or SIGTERM; a shared cluster is otherwise left alone):

 1. `ringlane-operator --dev -n <its namespaces>` as a local process (webhook configurations
    named rlscale-<run>, limited to those namespaces), so its memory is read from
    /proc/<pid>/status: VmRSS at each step, VmHWM for the peak, sampled every second too.
 2. Headless selector-less Services and their EndpointSlices (ours, `managed-by:
    ringlane-bench`; headless, so kube-proxy programs nothing for them), created in parallel.
 3. ProxyRoutes spread over the namespaces, each sending to two of those Services; then it
    waits until every route is Programmed=True at its current generation and has resolved
    all its endpoints (the reconcile time), with a deadline.
 4. Pods in a namespace labelled ringlane.io/injection=enabled and, as the baseline, in one
    without it, created one at a time in alternating blocks; a scheduling gate keeps every
    pod unscheduled, so nothing starts. Latency per create on the client; the webhook's own
    latency from the API server's histogram apiserver_admission_webhook_admission_duration_seconds
    (bucket deltas around each block); and AdmissionReviews POSTed straight to the
    operator's webhook URL (the operator's own time, TLS and HTTP included).

A cluster-wide Ringlane (an e2e run's Helm release) would inject our pods too and reconcile our
ProxyRoutes, and its webhook has the same name in the API server's metrics. So the script waits
(--wait-quiet) until no webhook but ours selects its namespaces, watches for one during the run,
and when one appears it deletes everything it made and starts over (--attempts).

Writes bench/results/operator-latest.json and .md; the operator's log and the raw samples go
to bench/build/operator-scale-<stamp>-<run>/. The machine is small and shared: numbers come with
the command and the load average; nothing here judges them.
Exit codes: 0 ok, 1 a step failed (the report says which), 130 interrupted.
"""
from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from ringbench.kubesel import foreign_webhooks  # noqa: E402
from ringbench.promhist import Histogram, counter, histogram, percentile  # noqa: E402

UP = ROOT / "e2e" / "cluster" / "up.sh"
CRD = ROOT / "crds" / "proxyroutes.ringlane.io.yaml"
OPERATOR = Path(sys.executable).with_name("ringlane-operator")
BENCH_LABEL = "ringlane.io/bench"
GATE = "ringlane.io/bench-never-schedule"
WEBHOOK_HIST = "apiserver_admission_webhook_admission_duration_seconds"
REQUEST_HIST = "apiserver_request_duration_seconds"
INJECT_WEBHOOK = "inject.ringlane.io"
VALIDATE_WEBHOOK = "proxyroutes.ringlane.io"
ROUTES_API = "/apis/ringlane.io/v1alpha1"
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the cleanup in `finally` runs."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, handler)


# ------------------------------------------------------------------ API access
class ApiError(Exception):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300].decode(errors='replace')}")
        self.status = status


class Api:
    """Raw JSON on the kubernetes client's connection pool (no model (de)serialization: the
    client shares two CPUs with the API server and the operator)."""

    def __init__(self, kubeconfig: str, pool: int) -> None:
        from kubernetes import config

        self.client = config.new_client_from_config(config_file=kubeconfig)
        cfg = self.client.configuration
        cfg.connection_pool_maxsize = pool
        self.client.rest_client.pool_manager.connection_pool_kw["maxsize"] = pool
        self.host = cfg.host.rstrip("/")
        self.headers: dict[str, str] = {}
        key = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if key:
            prefix = (cfg.api_key_prefix or {}).get("authorization", "")
            self.headers["Authorization"] = f"{prefix} {key}".strip()

    def raw(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
            timeout: float = 60) -> tuple[int, bytes]:
        headers = {**self.headers, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        resp = self.client.call_api(method, self.host + path, headers, body=body, _request_timeout=timeout)
        return resp.status, resp.read()

    def call(self, method: str, path: str, body: Any = None, ok: Iterable[int] = (200, 201, 202),
             content_type: str = "application/json", timeout: float = 60) -> Any:
        status, data = self.raw(method, path, body, content_type, timeout)
        if status not in tuple(ok):
            raise ApiError(method, path, status, data)
        return json.loads(data) if data else None

    def get(self, path: str, missing_ok: bool = False) -> Any:
        status, data = self.raw("GET", path)
        if status == 404 and missing_ok:
            return None
        if status != 200:
            raise ApiError("GET", path, status, data)
        return json.loads(data)

    def metrics(self) -> str:
        status, data = self.raw("GET", "/metrics", timeout=60)
        if status != 200:
            raise ApiError("GET", "/metrics", status, data)
        return data.decode()

    def close(self) -> None:
        self.client.close()


def kubeconfig_from_up() -> str:
    log(f"cluster: {UP.relative_to(ROOT)} (idempotent; reuses a running cluster)")
    proc = subprocess.Popen([str(UP)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            last = line
            if line.startswith("==>"):
                log(f"  up.sh {line}")
    if proc.wait() != 0 or not last.startswith("export KUBECONFIG="):
        raise SystemExit(f"up.sh failed (exit {proc.returncode}); last line: {last}")
    return last.split("=", 1)[1].strip().strip("'\"")


def kubectl_binary() -> str:
    venv = Path(sys.executable).with_name("kubectl")
    if venv.exists():
        return str(venv)
    cache = Path(os.environ.get("RINGLANE_CACHE", Path.home() / ".cache" / "ringlane"))
    found = sorted(cache.glob("bin/*/kubectl"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no kubectl (make setup links one into .venv/bin; up.sh caches it)")
    return str(found[-1])


# ------------------------------------------------------------------ the operator process
@dataclass
class ProcStat:
    rss_kib: int
    hwm_kib: int
    cpu_s: float
    threads: int


def proc_stat(pid: int) -> ProcStat:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text()
    after = stat[stat.rindex(")") + 2:].split()  # fields from 3 on; utime, stime are 14, 15
    ticks = os.sysconf("SC_CLK_TCK")
    return ProcStat(int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0]),
                    (int(after[11]) + int(after[12])) / ticks, int(fields["Threads"]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    def __init__(self, namespaces: Sequence[str], webhook_name: str, log_path: Path, kubeconfig: str) -> None:
        self.webhook_name = webhook_name
        self.log_path = log_path
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        self.argv = [str(OPERATOR), "--dev", *[a for ns in namespaces for a in ("-n", ns)],
                     "--webhook-name", webhook_name, "--liveness", self.liveness]
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, api: Api, timeout: float = 90) -> float:
        started = time.monotonic()
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = started + timeout
        while time.monotonic() < deadline:
            self.check()
            try:
                with urllib.request.urlopen(self.liveness, timeout=1) as resp:
                    if resp.status == 200 and api.get(
                            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{self.webhook_name}",
                            missing_ok=True):
                        return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.2)  # polling the liveness endpoint with a deadline
        raise RuntimeError(f"the operator was not ready within {timeout:.0f}s:\n{self.tail()}")

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited ({self.proc.returncode}):\n{self.tail()}")

    def stat(self) -> ProcStat:
        self.check()
        return proc_stat(self.pid)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)  # --dev withdraws its webhook configurations
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Sampler(threading.Thread):
    """The operator's RSS and CPU time every `every` seconds, tagged with the current phase."""

    def __init__(self, op: Operator, every: float = 1.0) -> None:
        super().__init__(daemon=True, name="sampler")
        self.op, self.every = op, every
        self.phase = "start"
        self.rows: list[dict[str, Any]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                s = proc_stat(self.op.pid)
            except (OSError, ValueError):
                continue
            self.rows.append({"t": round(time.monotonic() - T0, 2), "phase": self.phase, "rss_kib": s.rss_kib,
                              "hwm_kib": s.hwm_kib, "cpu_s": round(s.cpu_s, 2)})

    def peak_rss(self, phase: str) -> int | None:
        values = [r["rss_kib"] for r in self.rows if r["phase"] == phase]
        return max(values) if values else None


def settle(op: Operator, window: float = 3.0, idle_cpu: float = 0.05, timeout: float = 120) -> float:
    """Wait until the operator used < idle_cpu of a CPU over `window` seconds; the seconds waited."""
    start = time.monotonic()
    before = op.stat().cpu_s
    while time.monotonic() - start < timeout:
        time.sleep(window)  # measuring CPU use over a window
        guard_check()
        now = op.stat().cpu_s
        if (now - before) / window < idle_cpu:
            return time.monotonic() - start
        before = now
    log(f"  the operator did not go idle within {timeout:.0f}s (still busy); sampling anyway")
    return time.monotonic() - start


# ------------------------------------------------------------------ objects
@dataclass(frozen=True)
class Sizes:
    namespaces: int
    services: int
    slices: int
    endpoints_per_slice: int
    routes: int
    pods: int
    block: int
    direct: int

    @property
    def services_per_ns(self) -> int:
        return self.services // self.namespaces

    @property
    def slices_per_service(self) -> int:
        return self.slices // self.services

    @property
    def routes_per_ns(self) -> int:
        return self.routes // self.namespaces


@dataclass
class Names:
    run: str

    def routes_ns(self, i: int) -> str:
        return f"rlscale-{self.run}-r{i:02d}"

    @property
    def inject_ns(self) -> str:
        return f"rlscale-{self.run}-inj"

    @property
    def plain_ns(self) -> str:
        return f"rlscale-{self.run}-base"

    @property
    def webhook(self) -> str:
        return f"rlscale-{self.run}"


def namespace(name: str, run: str, inject: bool = False) -> dict[str, Any]:
    labels = {BENCH_LABEL: run, **({"ringlane.io/injection": "enabled"} if inject else {})}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def service(name: str, run: str) -> dict[str, Any]:
    """Headless and selector-less: no ClusterIP, no kube-proxy rules, and the EndpointSlice
    controller leaves our slices alone."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {BENCH_LABEL: run}},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def endpoint_slice(svc: str, index: int, addresses: Sequence[str], run: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{svc}-{index}", "labels": {"kubernetes.io/service-name": svc, BENCH_LABEL: run,
                                                           "endpointslice.kubernetes.io/managed-by": "ringlane-bench"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True, "terminating": False}}
                      for a in addresses],
    }


def proxy_route(ns: str, i: int, services: Sequence[str], run: str) -> dict[str, Any]:
    return {
        "apiVersion": "ringlane.io/v1alpha1", "kind": "ProxyRoute",
        "metadata": {"name": f"route-{i:04d}", "namespace": ns, "labels": {BENCH_LABEL: run}},
        "spec": {
            "selector": {"matchLabels": {"app": f"web-{i % 10}"}},
            "listener": {"port": 8080, "protocol": "HTTP"},
            "hostnames": [f"r{i}.{ns}.example.com"],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": f"/r{i}"}}],
                "backendRefs": [{"name": s, "port": 80, "weight": w} for s, w in zip(services, (90, 10))],
                "timeouts": {"request": "5s"},
            }],
        },
    }


def pod(name: str, run: str) -> dict[str, Any]:
    """Guaranteed QoS (no warning, no Event), and gated: never scheduled, nothing runs."""
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web-0", BENCH_LABEL: run}},
            "spec": {"schedulingGates": [{"name": GATE}], "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "app", "image": "localhost/ringlane:dev",
                                     "resources": {"limits": {"cpu": "1", "memory": "64Mi"}},
                                     "ports": [{"containerPort": 9000}]}]}}


def ip(ns_index: int, k: int) -> str:
    return f"10.{100 + ns_index}.{k // 250}.{k % 250 + 1}"


# ------------------------------------------------------------------ parallel creation with progress
class Progress:
    def __init__(self, what: str, total: int, op: Operator | None, every: float = 5.0) -> None:
        self.what, self.total, self.op, self.every = what, total, op, every
        self.done = 0
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()

    def step(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now - self.last >= self.every or self.done == self.total:
                self.last = now
                rate = self.done / max(now - self.start, 1e-9)
                mem = ""
                if self.op is not None and self.op.alive():
                    mem = f", operator RSS {proc_stat(self.op.pid).rss_kib / 1024:.0f} MiB"
                log(f"  {self.what}: {self.done}/{self.total} ({rate:.0f}/s){mem}")


def create_all(api: Api, items: Sequence[tuple[str, dict[str, Any]]], workers: int, what: str,
               op: Operator | None) -> dict[str, Any]:
    """POST every (collection path, body), `workers` at a time; retries 429/5xx and refused
    connections a few times; the first other failure stops the step."""
    progress = Progress(what, len(items), op)
    retries = collections.Counter[str]()
    stop = threading.Event()

    def one(item: tuple[str, dict[str, Any]]) -> None:
        path, body = item
        for attempt in range(6):
            if stop.is_set():
                return
            guard_check()
            try:
                status, data = api.raw("POST", path, body)
            except Exception as exc:  # connection trouble: retry like any client would
                status, data = 0, str(exc).encode()
            if status in (200, 201, 202):
                progress.step()
                return
            if status in (0, 429, 500, 502, 503, 504) and attempt < 5:
                retries[str(status)] += 1
                time.sleep(0.2 * 2 ** attempt)  # backoff before a retry
                continue
            stop.set()
            raise ApiError("POST", path, status, data)

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, it) for it in items]
        try:
            for f in concurrent.futures.as_completed(futures):
                f.result()
        except BaseException:
            stop.set()
            for f in futures:
                f.cancel()
            raise
    seconds = time.monotonic() - start
    return {"objects": len(items), "seconds": round(seconds, 2), "per_s": round(len(items) / seconds, 1),
            "retries": dict(retries)}


# ------------------------------------------------------------------ reconcile
def route_state(route: Mapping[str, Any]) -> tuple[bool, bool, int]:
    """(programmed at the current generation, all refs resolved, endpoints)."""
    status = route.get("status") or {}
    gen = route["metadata"].get("generation")
    conds = {c.get("type"): c for c in status.get("conditions") or ()}
    prog = conds.get("Programmed") or {}
    programmed = (prog.get("status") == "True" and status.get("observedGeneration") == gen
                  and prog.get("observedGeneration", gen) == gen)
    resolved = (conds.get("ResolvedRefs") or {}).get("status") == "True"
    return programmed, resolved, int(status.get("endpoints") or 0)


def parse_time(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def wait_programmed(api: Api, run: str, total: int, expect_endpoints: int, op: Operator, timeout: float,
                    every: float = 2.0) -> dict[str, Any]:
    start = time.monotonic()
    last_log = 0.0
    while True:
        op.check()
        guard_check()
        items = api.get(f"{ROUTES_API}/proxyroutes?labelSelector={BENCH_LABEL}%3D{run}")["items"]
        states = [route_state(r) for r in items]
        programmed = sum(1 for p, _, _ in states if p)
        complete = sum(1 for p, r, e in states if p and r and e == expect_endpoints)
        now = time.monotonic()
        if complete == total == len(items):
            break
        if now - last_log >= 5:
            last_log = now
            log(f"  programmed {programmed}/{total}, with all {expect_endpoints} endpoints {complete}/{total}, "
                f"operator RSS {op.stat().rss_kib / 1024:.0f} MiB")
        if now - start > timeout:
            raise TimeoutError(f"after {timeout:.0f}s only {complete}/{total} routes are Programmed with all "
                               f"{expect_endpoints} endpoints ({programmed} Programmed)")
        time.sleep(every)  # polling the routes' status with a deadline
    created = [parse_time(r["metadata"]["creationTimestamp"]) for r in items]
    programmed_at = [parse_time(c["lastTransitionTime"]) for r in items for c in r["status"]["conditions"]
                     if c["type"] == "Programmed"]
    return {"waited_s": round(time.monotonic() - start, 2), "routes": len(items),
            "by_server_timestamps_s": max(programmed_at) - min(created),  # 1 s resolution
            "endpoints_per_route": expect_endpoints}


# ------------------------------------------------------------------ admission latency
@dataclass
class Mode:
    name: str
    namespace: str
    injected: bool
    client_ms: list[float] = field(default_factory=list)
    webhook: Histogram = field(default_factory=Histogram)
    request: Histogram = field(default_factory=Histogram)
    wrong: int = 0
    created: int = 0


def webhook_hist(text: str) -> Histogram:
    return histogram(text, WEBHOOK_HIST, name=INJECT_WEBHOOK, operation="CREATE", type="admit")


def pod_post_hist(text: str) -> Histogram:
    return histogram(text, REQUEST_HIST, verb="POST", resource="pods", subresource="", group="")


def admission(api: Api, names: Names, sizes: Sizes) -> tuple[list[Mode], dict[str, Any] | None]:
    """Pods one at a time, blocks alternating A B B A ..., the API server's histograms around each block."""
    modes = [Mode("injection webhook", names.inject_ns, True), Mode("no webhook (baseline)", names.plain_ns, False)]
    blocks = max(1, sizes.pods // sizes.block)
    order = [modes[(b + (b // 2)) % 2] for b in range(2 * blocks)]  # ABBAABBA...: drift hits both alike
    sample_pod: dict[str, Any] | None = None
    progress = Progress("pods", 2 * blocks * sizes.block, None)
    for mode in modes:  # one unmeasured create each: connections, caches and the webhook's TLS warm
        api.call("POST", f"/api/v1/namespaces/{mode.namespace}/pods", pod("warmup", names.run))
    text = api.metrics()
    for mode in order:
        before_w, before_r = webhook_hist(text), pod_post_hist(text)
        path = f"/api/v1/namespaces/{mode.namespace}/pods"
        for _ in range(sizes.block):
            guard_check()
            body = pod(f"p{mode.created:04d}", names.run)
            t = time.perf_counter()
            status, data = api.raw("POST", path, body)
            ms = (time.perf_counter() - t) * 1000
            if status != 201:
                raise ApiError("POST", path, status, data)
            mode.client_ms.append(ms)
            mode.created += 1
            obj = json.loads(data)
            spec = obj["spec"]
            has = any(c["name"] == "ringlane-proxy" for c in spec.get("initContainers", []) + spec["containers"])
            mode.wrong += has != mode.injected
            if sample_pod is None and not mode.injected:
                sample_pod = obj
            progress.step()
        text = api.metrics()
        mode.webhook = mode.webhook + (webhook_hist(text) - before_w)
        mode.request = mode.request + (pod_post_hist(text) - before_r)
    return modes, sample_pod


def direct_webhook(api: Api, names: Names, sample: dict[str, Any], n: int) -> dict[str, Any]:
    """AdmissionReviews POSTed to the operator's inject URL over one keep-alive TLS connection,
    as the API server does: the operator's own latency, without the API server."""
    cfg = api.get(f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{names.webhook}")
    cc = cfg["webhooks"][0]["clientConfig"]
    url = urllib.parse.urlsplit(cc["url"])
    ctx = ssl.create_default_context(cadata=base64.b64decode(cc["caBundle"]).decode())
    obj = {k: v for k, v in sample.items() if k != "status"}
    obj["metadata"] = {k: v for k, v in sample["metadata"].items()
                       if k not in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")}
    obj["metadata"]["namespace"] = names.inject_ns
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=30)
    times: list[float] = []
    try:
        for i in range(n + 20):
            guard_check()
            obj["metadata"]["name"] = f"direct-{i}"
            review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
                "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                "name": obj["metadata"]["name"], "namespace": names.inject_ns, "operation": "CREATE",
                "userInfo": {"username": "ringlane-bench"}, "object": obj, "oldObject": None, "dryRun": False,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}
            payload = json.dumps(review).encode()
            t = time.perf_counter()
            conn.request("POST", url.path, body=payload, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            ms = (time.perf_counter() - t) * 1000
            answer = json.loads(data).get("response") or {}
            if resp.status != 200 or not answer.get("allowed") or "ringlane-proxy" not in \
                    base64.b64decode(answer.get("patch") or "").decode():
                raise RuntimeError(f"direct AdmissionReview: HTTP {resp.status}, {data[:300]!r}")
            if i >= 20:  # the first 20 warm up
                times.append(ms)
    finally:
        conn.close()
    return {"n": len(times), **summary_ms(times)}


def summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 2)
    return {"p50_ms": r(percentile(values, 0.5)), "p90_ms": r(percentile(values, 0.9)),
            "p99_ms": r(percentile(values, 0.99)), "mean_ms": r(sum(values) / len(values) if values else None),
            "max_ms": r(max(values) if values else None)}


def hist_summary(h: Histogram) -> dict[str, Any]:
    def ms(x: float | None) -> float | None:
        return None if x is None else round(x * 1000, 2)
    if not h.buckets or h.count <= 0:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None, "buckets": []}
    return {"count": int(h.count), "p50_ms": ms(h.quantile(0.5)), "p99_ms": ms(h.quantile(0.99)), "mean_ms": ms(h.mean),
            "buckets": [{"le_ms": "+Inf" if le == float("inf") else round(le * 1000, 3), "n": int(n)}
                        for le, n in h.non_cumulative() if n] if h.count else []}


# ------------------------------------------------------------------ API request counts
COUNTED = [("proxyroutes", "PATCH", ""), ("proxyroutes", "PATCH", "status"), ("configmaps", "GET", ""),
           ("configmaps", "PUT", ""), ("configmaps", "POST", ""), ("events", "POST", ""),
           ("roles", "GET", ""), ("rolebindings", "GET", "")]


def request_counts(text: str) -> dict[str, float]:
    return {f"{verb} {res}{'/' + sub if sub else ''}": counter(text, "apiserver_request_total", resource=res,
                                                                   verb=verb, subresource=sub)
            for res, verb, sub in COUNTED}


# ------------------------------------------------------------------ operator log
RENDER = re.compile(r"namespace (\S+): ConfigMap generation (\d+) \((\d+) listeners, (\d+) clusters\)")


def log_facts(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace") if path.exists() else ""
    gens: dict[str, int] = {}
    writes = collections.Counter[str]()
    for m in RENDER.finditer(text):
        writes[m.group(1)] += 1
        gens[m.group(1)] = int(m.group(2))
    problems = collections.Counter[str]()
    for line in text.splitlines():
        if " WARNING " in line or " ERROR " in line:
            problems[re.sub(r"^\S+ \S+ ", "", line)[:200]] += 1
    return {"configmap_writes": sum(writes.values()), "configmap_writes_per_namespace": dict(sorted(writes.items())),
            "warning_or_error_lines": sum(problems.values()), "top_problems": problems.most_common(5)}


# ------------------------------------------------------------------ cleanup
def routes_of(api: Api, run: str) -> list[dict[str, Any]]:
    return api.get(f"{ROUTES_API}/proxyroutes?labelSelector={BENCH_LABEL}%3D{run}")["items"]


def lift_finalizers(api: Api, run: str) -> int:
    lifted = 0
    for r in routes_of(api, run):
        m = r["metadata"]
        if m.get("finalizers"):
            api.call("PATCH", f"{ROUTES_API}/namespaces/{m['namespace']}/proxyroutes/{m['name']}",
                     {"metadata": {"finalizers": None}}, ok=(200, 404), content_type="application/merge-patch+json")
            lifted += 1
    return lifted


def delete_routes(api: Api, run: str, namespaces: Sequence[str], timeout: float) -> float | None:
    """Delete the ProxyRoutes while the operator runs and their namespaces are still active (in a
    terminating namespace its renders cannot write): the seconds until all are gone, or None."""
    start = time.monotonic()
    for ns in namespaces:
        api.call("DELETE", f"{ROUTES_API}/namespaces/{ns}/proxyroutes?labelSelector={BENCH_LABEL}%3D{run}", ok=(200,))
    last_log = start
    while (left := len(routes_of(api, run))) > 0:
        if time.monotonic() - start > timeout:
            log(f"  {left} ProxyRoutes still there after {timeout:.0f}s")
            return None
        if time.monotonic() - last_log >= 5:
            last_log = time.monotonic()
            log(f"  {left} ProxyRoutes left")
        time.sleep(0.5)  # polling the deletion with a deadline
    return time.monotonic() - start


def delete_namespaces(api: Api, run: str, namespaces: Sequence[str], timeout: float) -> dict[str, Any]:
    """Delete our namespaces; lift ProxyRoute finalizers by hand if they hold them up. Lingering
    namespaces are reported, never waited on forever."""
    start = time.monotonic()
    report: dict[str, Any] = {"finalizers_lifted_by_hand": 0}
    for ns in namespaces:
        try:
            api.call("DELETE", f"/api/v1/namespaces/{ns}", ok=(200, 202, 404))
        except Exception as exc:
            log(f"  deleting namespace {ns}: {exc}")
    last_log = last_lift = start
    while True:
        left = [ns for ns in namespaces if api.get(f"/api/v1/namespaces/{ns}", missing_ok=True) is not None]
        if not left:
            break
        elapsed = time.monotonic() - start
        if time.monotonic() - last_lift > 20:  # no operator handles them (any more), or not fast enough
            last_lift = time.monotonic()
            report["finalizers_lifted_by_hand"] += lift_finalizers(api, run)
        if elapsed > timeout:
            report["left"] = left
            log(f"  namespaces still terminating after {timeout:.0f}s: {', '.join(left)}")
            break
        if time.monotonic() - last_log >= 5:
            last_log = time.monotonic()
            log(f"  waiting for {len(left)} namespace(s) to go")
        time.sleep(1)  # polling namespace deletion with a deadline
    report["namespaces_s"] = round(time.monotonic() - start, 1)
    return report


def remove_webhooks(api: Api, name: str) -> list[str]:
    removed = []
    for kind in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        path = f"/apis/admissionregistration.k8s.io/v1/{kind}/{name}"
        if api.get(path, missing_ok=True) is not None:
            api.call("DELETE", path, ok=(200, 202, 404))
            removed.append(kind)
    return removed


# ------------------------------------------------------------------ report
def mib(kib: float | None) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def fmt(x: float | None, unit: str = "") -> str:
    return "–" if x is None else f"{x:.1f}{unit}" if x >= 10 else f"{x:.2f}{unit}"


def markdown(res: dict[str, Any]) -> str:
    m, s = res["meta"], res["sizes"]
    out = [f"# Ringlane operator at scale, {m['started']}", "",
           f"- command: `{m['command']}`",
           f"- result: **{res['status']}**; wall time {m.get('wall_s', '?')} s; host: {m['host']}; commit {m['commit']}",
           f"- cluster: Kubernetes {m.get('server', '?')} from e2e/cluster/up.sh (one node, shared with other work: "
           f"noise); load average at start {m['loadavg_start']}, at end {m.get('loadavg_end', '?')}; waited "
           f"{m.get('waited_for_cluster_s', 0)} s for no other webhook to select our namespaces",
           f"- operator: `{m.get('operator_argv', '')}` (out of cluster, default debounce 200 ms / 500 ms), "
           f"{m.get('versions', '')}",
           f"- objects: {s['namespaces']} namespaces with {s['services']} headless Services, {s['slices']} "
           f"EndpointSlices ({s['slices'] // s['services']} per Service, {s['endpoints_per_slice']} ready endpoints "
           f"each), {s['routes']} ProxyRoutes (2 Services each, so {res.get('reconcile', {}).get('endpoints_per_route', '?')} "
           f"endpoints per route); {s['pods']} pods with and {s['pods']} without injection", ""]
    mem = res.get("memory") or []
    if mem:
        out += ["## Operator memory (/proc/<pid>/status)", "",
                "| after | VmRSS MiB | VmHWM (peak) MiB | peak RSS in step MiB | operator CPU s (cumulative) | step s |",
                "|---|---|---|---|---|---|"]
        for row in mem:
            out.append(f"| {row['step']} | {mib(row['rss_kib'])} | {mib(row['hwm_kib'])} | {mib(row.get('step_peak_kib'))} "
                       f"| {row['cpu_s']:.1f} | {fmt(row.get('step_s'))} |")
        per = res.get("per_object") or {}
        if per:
            out += ["", "Growth: " + "; ".join(f"{k} {v}" for k, v in per.items()) + "."]
        out.append("")
    rec = res.get("reconcile")
    if rec:
        out += ["## Reconcile", "",
                f"- {rec['routes']} ProxyRoutes created in {rec['create_s']} s ({rec['create_per_s']}/s, "
                f"{res['sizes']['workers']} client threads; through the validating webhook)",
                f"- all Programmed=True at their generation with all {rec['endpoints_per_route']} endpoints: "
                f"**{rec['all_programmed_after_first_create_s']} s** after the first create, "
                f"{rec['after_last_create_s']} s after the last (polled every 2 s); by the API server's timestamps "
                f"(1 s resolution) {rec['by_server_timestamps_s']:.0f} s; throughput "
                f"{rec['routes_per_s']} routes/s",
                f"- ConfigMap writes (operator log): {rec['log']['configmap_writes']} for {s['namespaces']} namespaces; "
                f"warnings/errors in its log: {rec['log']['warning_or_error_lines']}",
                "- API requests during create + reconcile (kube-apiserver `apiserver_request_total` delta, "
                "cluster-wide): " + ", ".join(f"{k} {int(v)}" for k, v in rec["api_requests"].items() if v), ""]
        for op_, vw in (rec.get("validating_webhook") or {}).items():
            if vw["count"]:
                why = "the creates" if op_ == "CREATE" else "kopf's own finalizer/annotation patches"
                out.insert(-1, f"- validating webhook {VALIDATE_WEBHOOK}, {op_} ({why}; API server histogram†): "
                               f"{vw['count']} calls, "
                               f"p50 {fmt(vw['p50_ms'], ' ms')}, p99 {fmt(vw['p99_ms'], ' ms')}, mean {fmt(vw['mean_ms'], ' ms')}")
    adm = res.get("admission")
    if adm:
        out += ["## Admission latency (pod CREATE, one at a time)", "",
                "| measured | n | p50 ms | p99 ms | mean ms | max ms |", "|---|---|---|---|---|---|"]
        for key, label in (("client_injected", "client: create with injection"),
                           ("client_baseline", "client: create without webhook (baseline)")):
            c = adm[key]
            out.append(f"| {label} | {c['n']} | {fmt(c['p50_ms'])} | {fmt(c['p99_ms'])} | {fmt(c['mean_ms'])} | {fmt(c['max_ms'])} |")
        d = adm["client_difference"]
        out.append(f"| difference (webhook cost seen by the client) | | {fmt(d['p50_ms'])} | {fmt(d['p99_ms'])} | {fmt(d['mean_ms'])} | |")
        w = adm["apiserver_webhook"]
        out.append(f"| API server†: `{WEBHOOK_HIST}` {{name={INJECT_WEBHOOK}}} | {w['count']} | {fmt(w['p50_ms'])} | "
                   f"{fmt(w['p99_ms'])} | {fmt(w['mean_ms'])} | |")
        for key, label in (("apiserver_request_injected", f"API server†: `{REQUEST_HIST}` pod POST, injected"),
                           ("apiserver_request_baseline", f"API server†: `{REQUEST_HIST}` pod POST, baseline")):
            r = adm[key]
            out.append(f"| {label} | {r['count']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['mean_ms'])} | |")
        dw = adm.get("direct_webhook")
        if dw:
            out.append(f"| operator alone: AdmissionReview POSTed to its webhook URL | {dw['n']} | {fmt(dw['p50_ms'])} | "
                       f"{fmt(dw['p99_ms'])} | {fmt(dw['mean_ms'])} | {fmt(dw['max_ms'])} |")
        out += ["", "† API server histograms: deltas of /metrics around each block. Their buckets are wide "
                "(webhook: 5/25/100/500 ms…; request: 5/25/50/100 ms…), so p50/p99 are interpolated inside a "
                "bucket (Prometheus histogram_quantile) and only coarse; the means are exact (_sum/_count). "
                "Webhook buckets (ms: count): " + ", ".join(f"≤{b['le_ms']}: {b['n']}" for b in w["buckets"]) + ". "
                  f"Counted {w['count']} webhook calls for {adm['client_injected']['n']} injected creates "
                  "(more would mean another operator's injection webhook ran meanwhile: the metric's label is "
                  "the webhook's name).",
                f"Pods with the wrong injection result: {adm['wrong']}.", ""]
    if res.get("errors"):
        out += ["## Errors", ""] + [f"- {e}" for e in res["errors"]] + [""]
    cl = res.get("cleanup")
    if cl:
        parts = []
        if cl.get("routes_deleted_s") is not None:
            parts.append(f"all {s['routes']} ProxyRoutes deleted (finalizers handled by the operator) in "
                         f"{cl['routes_deleted_s']} s")
        parts.append(f"namespaces gone in {cl.get('namespaces_s')} s"
                     + (f", still terminating: {cl['left']}" if cl.get("left") else ""))
        if cl.get("finalizers_lifted_by_hand"):
            parts.append(f"finalizers of {cl['finalizers_lifted_by_hand']} routes lifted by hand")
        parts.append(f"webhook configurations removed by --dev at exit: {cl.get('webhooks_withdrawn')}")
        out += ["Cleanup: " + "; ".join(parts) + ".", ""]
    if res.get("earlier_attempts"):
        out += ["Earlier attempts, stopped because another webhook started to select our namespaces (their "
                "objects were deleted): " + "; ".join(f"{e['started']} ({e['interference']})"
                                                       for e in res["earlier_attempts"]) + ".", ""]
    return "\n".join(out)


def write_results(res: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (("operator-latest.json", json.dumps(res, indent=1, default=str) + "\n"),
                       ("operator-latest.md", markdown(res))):
        tmp = directory / f"{name}.tmp"
        tmp.write_text(text)
        tmp.replace(directory / name)
        paths.append(directory / name)
    return paths[0], paths[1]


# ------------------------------------------------------------------ main
def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--namespaces", type=int, default=10, help="namespaces for Services, slices and routes (10)")
    p.add_argument("--services", type=int, default=1000, help="headless Services in all (1000)")
    p.add_argument("--slices", type=int, default=5000, help="EndpointSlices in all, spread over the Services (5000)")
    p.add_argument("--endpoints-per-slice", type=int, default=4)
    p.add_argument("--routes", type=int, default=1000, help="ProxyRoutes in all (1000)")
    p.add_argument("--pods", type=int, default=500, help="pods per mode: with injection, and without (500)")
    p.add_argument("--block", type=int, default=50, help="pods per alternating block (50)")
    p.add_argument("--direct", type=int, default=500, help="AdmissionReviews POSTed to the webhook directly (500)")
    p.add_argument("--workers", type=int, default=4, help="client threads creating objects (4)")
    p.add_argument("--reconcile-timeout", type=float, default=900)
    p.add_argument("--cleanup-timeout", type=float, default=600)
    p.add_argument("--wait-quiet", type=float, default=1800, metavar="S",
                   help="wait this long for other webhooks on our namespaces (a cluster-wide Ringlane) to go (1800)")
    p.add_argument("--attempts", type=int, default=3,
                   help="start over this often when such a webhook appears during a run (3)")
    p.add_argument("--kubeconfig", help="use this cluster instead of running e2e/cluster/up.sh")
    p.add_argument("--results", type=Path, default=BENCH / "results")
    a = p.parse_args(argv)
    if a.services % a.namespaces or a.slices % a.services or a.routes % a.namespaces or a.pods % a.block:
        p.error("need --services divisible by --namespaces, --slices by --services, --routes by --namespaces, "
                "--pods by --block")
    if a.services // a.namespaces < 2:
        p.error("need at least 2 Services per namespace (each route sends to two)")
    return a


def git_commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def versions() -> str:
    from importlib.metadata import version
    return ", ".join(f"{p} {version(p)}" for p in ("kopf", "kubernetes", "aiohttp", "uvloop")) + \
        f", Python {platform.python_version()}"


class Interference(Exception):
    """Another Ringlane (or another webhook) started to see our namespaces: the numbers would mix
    two operators, and that operator would reconcile our routes while someone else tests it."""


class Guard(threading.Thread):
    """Looks for foreign webhooks on our namespaces every `every` seconds."""

    def __init__(self, api: Api, names: Names, labels: Mapping[str, Mapping[str, str]], every: float = 2.0) -> None:
        super().__init__(daemon=True, name="guard")
        self.api, self.names, self.labels, self.every = api, names, labels, every
        self.found: list[str] = []
        self.tripped = threading.Event()
        self.stopped = threading.Event()

    def look(self) -> list[str]:
        configs = []
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            items = self.api.get(f"/apis/admissionregistration.k8s.io/v1/{kind.lower()}s")["items"]
            configs += [{**c, "kind": kind} for c in items]
        return foreign_webhooks(configs, self.names.webhook, self.labels)

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                found = self.look()
            except Exception:  # the API server is busy: look again next time
                continue
            if found and not self.tripped.is_set():
                self.found = found
                self.tripped.set()

    def check(self) -> None:
        if self.tripped.is_set():
            raise Interference(f"foreign webhooks now select our namespaces: {', '.join(self.found)}")


GUARD: Guard | None = None


def guard_check() -> None:
    if GUARD is not None:
        GUARD.check()


def namespace_labels(names: Names, sizes: Sizes) -> dict[str, dict[str, str]]:
    out = {}
    for ns in [*(names.routes_ns(i) for i in range(sizes.namespaces)), names.inject_ns, names.plain_ns]:
        labels = namespace(ns, names.run, inject=ns == names.inject_ns)["metadata"]["labels"]
        out[ns] = {"kubernetes.io/metadata.name": ns, **labels}
    return out


def wait_quiet(api: Api, names: Names, labels: Mapping[str, Mapping[str, str]], timeout: float) -> float:
    """Wait until no foreign webhook would see our namespaces (e.g. an e2e run's Helm release of
    Ringlane, cluster-wide); the seconds waited."""
    guard = Guard(api, names, labels)
    start = time.monotonic()
    last_log = 0.0
    while found := guard.look():
        waited = time.monotonic() - start
        if waited > timeout:
            raise TimeoutError(f"for {timeout:.0f}s another webhook kept selecting our namespaces: {', '.join(found)}")
        if time.monotonic() - last_log >= 30:
            last_log = time.monotonic()
            log(f"waiting for the cluster: {', '.join(found)} would see our namespaces (a cluster-wide Ringlane "
                f"would also reconcile our ProxyRoutes); waited {waited:.0f}s of {timeout:.0f}s")
        time.sleep(5)  # polling the webhook configurations with a deadline
    return time.monotonic() - start


def new_result(a: argparse.Namespace, argv: Sequence[str], sizes: Sizes, names: Names, run_dir: Path) -> dict[str, Any]:
    cmd = "bench/operator_scale.py" + ("" if not argv else " " + shlex.join(argv))
    return {
        "status": "incomplete", "errors": [],
        "meta": {"command": cmd, "run": names.run, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                 "host": f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs", "commit": git_commit(),
                 "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
                 "run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
                 "versions": versions()},
        "sizes": {**sizes.__dict__, "workers": a.workers},
        "memory": [],
    }


def run_once(a: argparse.Namespace, sizes: Sizes, names: Names, kubeconfig: str, api: Api, res: dict[str, Any],
             run_dir: Path) -> int:
    """One whole measurement in fresh namespaces, cleaned up before it returns (an exit code)."""
    global GUARD
    routes_ns = [names.routes_ns(i) for i in range(sizes.namespaces)]
    all_ns = [*routes_ns, names.inject_ns, names.plain_ns]
    op: Operator | None = None
    sampler: Sampler | None = None
    created_ns: list[str] = []
    memory: list[dict[str, Any]] = res["memory"]
    exit_code = 1
    step_start = time.monotonic()
    GUARD = Guard(api, names, namespace_labels(names, sizes))
    GUARD.start()

    def sample(step: str) -> ProcStat:
        nonlocal step_start
        assert op is not None and sampler is not None
        st = op.stat()
        memory.append({"step": step, "rss_kib": st.rss_kib, "hwm_kib": st.hwm_kib, "cpu_s": round(st.cpu_s, 2),
                       "threads": st.threads, "step_peak_kib": sampler.peak_rss(sampler.phase),
                       "step_s": round(time.monotonic() - step_start, 1)})
        log(f"memory after {step}: VmRSS {st.rss_kib / 1024:.1f} MiB, VmHWM {st.hwm_kib / 1024:.1f} MiB, "
            f"CPU {st.cpu_s:.1f} s")
        step_start = time.monotonic()
        return st

    try:
        res["meta"]["server"] = api.get("/version")["gitVersion"]
        if api.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/proxyroutes.ringlane.io",
                   missing_ok=True) is None:
            log("installing the ProxyRoute CRD")
            env = {**os.environ, "KUBECONFIG": kubeconfig}
            subprocess.run([kubectl_binary(), "apply", "-f", str(CRD)], check=True, capture_output=True, env=env)
            subprocess.run([kubectl_binary(), "wait", "--for=condition=Established", "crd/proxyroutes.ringlane.io",
                            "--timeout=60s"], check=True, capture_output=True, env=env)
        log(f"run {names.run}: namespaces {routes_ns[0]}..{routes_ns[-1]}, {names.inject_ns}, {names.plain_ns}")
        for ns in all_ns:
            api.call("POST", "/api/v1/namespaces", namespace(ns, names.run, inject=ns == names.inject_ns))
            created_ns.append(ns)

        # 1. the operator, idle
        op = Operator(all_ns, names.webhook, run_dir / "operator.log", kubeconfig)
        res["meta"]["operator_argv"] = shlex.join(["ringlane-operator", *op.argv[1:]])
        log("starting the operator")
        ready = op.start(api)
        log(f"  ready in {ready:.1f}s (pid {op.pid}, log {op.log_path.relative_to(ROOT)})")
        sampler = Sampler(op)
        sampler.start()
        sampler.phase = "idle"
        settle(op)
        base = sample("start (idle, empty namespaces)")

        # 2. Services and EndpointSlices
        sampler.phase = "slices"
        svc_items, slice_items = [], []
        for n, ns in enumerate(routes_ns):
            k = 0
            for s in range(sizes.services_per_ns):
                svc = f"svc-{s:03d}"
                svc_items.append((f"/api/v1/namespaces/{ns}/services", service(svc, names.run)))
                for j in range(sizes.slices_per_service):
                    addrs = [ip(n, k + e) for e in range(sizes.endpoints_per_slice)]
                    k += sizes.endpoints_per_slice
                    slice_items.append((f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                                        endpoint_slice(svc, j, addrs, names.run)))
        log(f"creating {len(svc_items)} Services")
        res["create_services"] = create_all(api, svc_items, a.workers, "Services", op)
        log(f"creating {len(slice_items)} EndpointSlices")
        res["create_slices"] = create_all(api, slice_items, a.workers, "EndpointSlices", op)
        settle(op)
        after_slices = sample(f"{len(svc_items)} Services + {len(slice_items)} EndpointSlices")

        # 3. ProxyRoutes, then reconcile
        sampler.phase = "routes"
        route_items = []
        for ns in routes_ns:
            for i in range(sizes.routes_per_ns):
                pair = [f"svc-{i % sizes.services_per_ns:03d}", f"svc-{(i + 1) % sizes.services_per_ns:03d}"]
                route_items.append((f"{ROUTES_API}/namespaces/{ns}/proxyroutes", proxy_route(ns, i, pair, names.run)))
        metrics_before = api.metrics()
        log(f"creating {len(route_items)} ProxyRoutes")
        first_create = time.monotonic()
        created = create_all(api, route_items, a.workers, "ProxyRoutes", op)
        last_create = time.monotonic()
        sample(f"creating {len(route_items)} ProxyRoutes")
        sampler.phase = "reconcile"
        expect = 2 * sizes.slices_per_service * sizes.endpoints_per_slice
        log(f"waiting until every route is Programmed with its {expect} endpoints")
        rec = wait_programmed(api, names.run, len(route_items), expect, op, a.reconcile_timeout)
        done = time.monotonic()
        metrics_after = api.metrics()
        before_counts, after_counts = request_counts(metrics_before), request_counts(metrics_after)
        vw = {op_: hist_summary(histogram(metrics_after, WEBHOOK_HIST, name=VALIDATE_WEBHOOK, operation=op_)
                                - histogram(metrics_before, WEBHOOK_HIST, name=VALIDATE_WEBHOOK, operation=op_))
              for op_ in ("CREATE", "UPDATE")}
        res["reconcile"] = {
            **rec, "create_s": created["seconds"], "create_per_s": created["per_s"], "create_retries": created["retries"],
            "all_programmed_after_first_create_s": round(done - first_create, 1),
            "after_last_create_s": round(done - last_create, 1),
            "routes_per_s": round(len(route_items) / (done - first_create), 1),
            "api_requests": {k: after_counts[k] - before_counts[k] for k in after_counts},
            "validating_webhook": vw,
        }
        log(f"  all {len(route_items)} Programmed {done - first_create:.1f}s after the first create "
            f"({done - last_create:.1f}s after the last)")
        settle(op)
        res["reconcile"]["log"] = log_facts(op.log_path)
        after_routes = sample(f"reconciled ({len(route_items)} ProxyRoutes Programmed)")
        res["per_object"] = {
            "per EndpointSlice (with its share of a Service)":
                f"{(after_slices.rss_kib - base.rss_kib) / len(slice_items):.2f} KiB",
            "per ProxyRoute (reconciled)": f"{(after_routes.rss_kib - after_slices.rss_kib) / len(route_items):.2f} KiB",
        }

        # 4. admission latency
        sampler.phase = "admission"
        for ns in (names.inject_ns, names.plain_ns):
            deadline = time.monotonic() + 60
            while api.get(f"/api/v1/namespaces/{ns}/serviceaccounts/default", missing_ok=True) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no default ServiceAccount in {ns} after 60s")
                time.sleep(0.2)  # the controller-manager creates it
        log(f"admission: {2 * sizes.pods} pods one at a time, blocks of {sizes.block} alternating "
            f"{names.inject_ns} (injection) and {names.plain_ns} (baseline)")
        modes, sample_pod = admission(api, names, sizes)
        inj, plain = modes
        adm: dict[str, Any] = {
            "client_injected": {"n": len(inj.client_ms), **summary_ms(inj.client_ms)},
            "client_baseline": {"n": len(plain.client_ms), **summary_ms(plain.client_ms)},
            "apiserver_webhook": hist_summary(inj.webhook),
            "apiserver_webhook_during_baseline_blocks": int(plain.webhook.count),
            "apiserver_request_injected": hist_summary(inj.request),
            "apiserver_request_baseline": hist_summary(plain.request),
            "wrong": inj.wrong + plain.wrong,
        }
        ci, cb = adm["client_injected"], adm["client_baseline"]
        adm["client_difference"] = {k: None if ci[k] is None or cb[k] is None else round(ci[k] - cb[k], 2)
                                    for k in ("p50_ms", "p99_ms", "mean_ms")}
        res["admission"] = adm
        log(f"  client p50/p99: injected {ci['p50_ms']}/{ci['p99_ms']} ms, baseline {cb['p50_ms']}/{cb['p99_ms']} ms; "
            f"API server webhook histogram p50/p99 {adm['apiserver_webhook']['p50_ms']}/"
            f"{adm['apiserver_webhook']['p99_ms']} ms over {adm['apiserver_webhook']['count']}")
        if adm["wrong"]:
            res["errors"].append(f"{adm['wrong']} pods had the wrong injection result")
        if sample_pod is not None and sizes.direct:
            log(f"direct: {sizes.direct} AdmissionReviews to the operator's webhook URL")
            adm["direct_webhook"] = direct_webhook(api, names, sample_pod, sizes.direct)
            log(f"  p50/p99 {adm['direct_webhook']['p50_ms']}/{adm['direct_webhook']['p99_ms']} ms")
        sample(f"admission ({2 * sizes.pods} pods, {sizes.direct} direct reviews)")
        log("deleting the pods")
        for ns in (names.inject_ns, names.plain_ns):
            api.call("DELETE", f"/api/v1/namespaces/{ns}/pods?labelSelector={BENCH_LABEL}%3D{names.run}",
                     ok=(200,))
        guard_check()  # a foreign webhook that came and went during the last step still counts
        res["status"] = "ok" if not res["errors"] else "failed"
        exit_code = 0 if not res["errors"] else 1
    except Interference as exc:
        res["status"] = "interfered"
        res["interference"] = str(exc)
        log(f"INTERFERENCE: {exc}: stopping this attempt")
    except KeyboardInterrupt as exc:
        res["status"] = "interrupted"
        res["errors"].append(f"interrupted ({exc or 'Ctrl-C'})")
        exit_code = 130
        log("interrupted: cleaning up")
    except Exception as exc:
        res["status"] = "failed"
        res["errors"].append(f"{type(exc).__name__}: {exc}")
        log(f"FAILED: {type(exc).__name__}: {exc}")
        if op is not None:
            log(f"operator log tail:\n{op.tail(3000)}")
    finally:
        GUARD.stopped.set()
        tripped, GUARD = GUARD.tripped.is_set(), None
        cl: dict[str, Any] = {}
        res["cleanup"] = cl
        try:
            if created_ns:
                if op is not None and op.alive() and not tripped:
                    log("cleanup: deleting the ProxyRoutes while the operator runs")
                    if sampler is not None:
                        sampler.phase = "delete-routes"
                    step_start = time.monotonic()
                    took = delete_routes(api, names.run, routes_ns, a.cleanup_timeout / 2)
                    cl["routes_deleted_s"] = None if took is None else round(took, 1)
                    if took is not None and exit_code == 0 and sampler is not None:
                        log(f"  all ProxyRoutes gone in {took:.1f}s")
                        settle(op, timeout=60)
                        sample("deleting every ProxyRoute")
                elif tripped:
                    cl["finalizers_lifted_by_hand"] = lift_finalizers(api, names.run)
                log(f"cleanup: deleting namespaces {', '.join(created_ns)}")
                cl.update(delete_namespaces(api, names.run, created_ns, a.cleanup_timeout))
            if sampler is not None:
                sampler.stopped.set()
            if op is not None:
                log("stopping the operator")
                cl["operator_exit"] = op.stop()
            leftover = remove_webhooks(api, names.webhook)
            cl["webhooks_withdrawn"] = "yes" if not leftover else f"no, deleted {leftover}"
        except BaseException as exc:  # noqa: BLE001 - report, and still write what we have
            res["errors"].append(f"cleanup: {type(exc).__name__}: {exc}")
            log(f"cleanup failed: {exc}")
            exit_code = exit_code or 1
        if sampler is not None:
            (run_dir / "samples.json").write_text(json.dumps(sampler.rows))
            res["meta"]["samples"] = str((run_dir / "samples.json").relative_to(ROOT))
        if op is not None and "reconcile" in res and "log" not in res["reconcile"]:
            res["reconcile"]["log"] = log_facts(op.log_path)
    return exit_code


def main(argv: Sequence[str]) -> int:
    a = parse_args(argv)
    interrupt_on_signals()
    sizes = Sizes(a.namespaces, a.services, a.slices, a.endpoints_per_slice, a.routes, a.pods, a.block, a.direct)
    kubeconfig = a.kubeconfig or kubeconfig_from_up()
    api = Api(kubeconfig, pool=max(8, 2 * a.workers))
    earlier: list[dict[str, Any]] = []
    res: dict[str, Any] = {}
    exit_code = 1
    try:
        for attempt in range(1, a.attempts + 1):
            names = Names(uuid.uuid4().hex[:6])
            run_dir = BENCH / "build" / f"operator-scale-{time.strftime('%Y%m%d-%H%M%S')}-{names.run}"
            run_dir.mkdir(parents=True, exist_ok=True)
            res = new_result(a, argv, sizes, names, run_dir)
            res["attempt"], res["earlier_attempts"] = attempt, earlier
            try:
                res["meta"]["waited_for_cluster_s"] = round(
                    wait_quiet(api, names, namespace_labels(names, sizes), a.wait_quiet), 1)
            except TimeoutError as exc:
                res["status"] = "not run"
                res["meta"]["waited_for_cluster_s"] = a.wait_quiet
                res["errors"].append(str(exc))
                log(f"NOT RUN: {exc}")
                break
            exit_code = run_once(a, sizes, names, kubeconfig, api, res, run_dir)
            if res["status"] != "interfered":
                break
            earlier.append({"run": names.run, "interference": res.get("interference"),
                            "started": res["meta"]["started"]})
            if attempt < a.attempts:
                log(f"attempt {attempt} of {a.attempts} was interfered with; starting over when the cluster is quiet")
        if res.get("status") == "interfered":
            res["errors"].append(f"every attempt ({a.attempts}) was interfered with: {res.get('interference')}")
    except KeyboardInterrupt as exc:
        res.setdefault("errors", []).append(f"interrupted ({exc or 'Ctrl-C'})")
        res["status"] = "interrupted"
        exit_code = 130
    finally:
        api.close()
        if "meta" in res:
            res["meta"]["wall_s"] = round(time.monotonic() - T0)
            res["meta"]["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            js, md = write_results(res, a.results)
            log(f"wrote {js.relative_to(ROOT) if js.is_relative_to(ROOT) else js} and "
                f"{md.relative_to(ROOT) if md.is_relative_to(ROOT) else md} ({res['status']}, {res['meta']['wall_s']} s)")
    return exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
