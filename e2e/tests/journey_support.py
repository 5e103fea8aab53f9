"""Manifests and helpers for the user-journey tests (pure builders, plus small I/O helpers)."""
from __future__ import annotations

import http.client
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ECHO = (Path(__file__).resolve().parents[1] / "apps" / "echo_server.py").read_text()
TESTBOX = "localhost/ringlane-testbox:dev"


def echo_deployment(ns: str, name: str, replicas: int, labels: dict[str, str], port: int = 8080,
                    resources: dict[str, Any] | None = None, inject: bool = False) -> dict[str, Any]:
    """inject=False opts the pods out (label ringlane.io/inject=false): backends need no sidecar,
    and this 2-CPU node can pin only one."""
    container: dict[str, Any] = {
        "name": "app", "image": TESTBOX, "imagePullPolicy": "Never",
        "command": ["python3", "-c", ECHO],
        "env": [{"name": "BACKEND", "value": name}, {"name": "PORT", "value": str(port)}],
        "ports": [{"containerPort": port}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
    }
    if resources:
        container["resources"] = resources
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels if inject else {**labels, "ringlane.io/inject": "false"}},
                         "spec": {"containers": [container], "terminationGracePeriodSeconds": 30}},
        },
    }


def service(ns: str, name: str, selector: dict[str, str], port: int = 80, target: int = 8080) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": selector, "ports": [{"port": port, "targetPort": target}]}}


def proxyroute(ns: str, weights: tuple[int, int] = (90, 10), extra_rules: list[dict[str, Any]] | None = None
               ) -> dict[str, Any]:
    return {
        "apiVersion": "ringlane.io/v1alpha1", "kind": "ProxyRoute",
        "metadata": {"name": "shop", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "listener": {"port": 8080, "protocol": "HTTP"},
            "hostnames": ["shop.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                              "headers": [{"name": "x-user", "value": "demo"}]}],
                 "backendRefs": [{"name": "api", "port": 80, "weight": weights[0]},
                                 {"name": "api-canary", "port": 80, "weight": weights[1]}],
                 "filters": [{"type": "RequestHeaderModifier",
                              "requestHeaderModifier": {"set": [{"name": "x-env", "value": "e2e"}],
                                                        "remove": ["x-debug"]}},
                             {"type": "URLRewrite",
                              "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v1"}}}],
                 "timeouts": {"request": "5s", "backendRequest": "2s"},
                 "retry": {"attempts": 2, "codes": [503], "backoff": "50ms"}},
                *(extra_rules or []),
            ],
        },
    }


def get(host: str, port: int, path: str, headers: dict[str, str], timeout: float = 5) -> tuple[int, dict[str, Any] | str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        body = r.read().decode()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, body
    finally:
        conn.close()


def send(host: str, port: int, n: int, path: str = "/api/items", headers: dict[str, str] | None = None
         ) -> tuple[Counter[str], list[dict[str, Any]]]:
    """n requests over one keep-alive connection; counts per backend (or status)."""
    hdrs = {"Host": "shop.example.com", "x-user": "demo", "x-debug": "1", **(headers or {})}
    conn = http.client.HTTPConnection(host, port, timeout=10)
    seen: Counter[str] = Counter()
    bodies = []
    try:
        for _ in range(n):
            conn.request("GET", path, headers=hdrs)
            r = conn.getresponse()
            raw = r.read()
            if r.status != 200:
                seen[f"status-{r.status}"] += 1
                continue
            body = json.loads(raw)
            seen[body["backend"]] += 1
            bodies.append(body)
    finally:
        conn.close()
    return seen, bodies


def wait_until(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)  # polling a condition against a deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]
