"""One-line human summary of a valid config (what `check` prints)."""
from __future__ import annotations

from .model import Config, Listener


def summarize(cfg: Config) -> str:
    """e.g. "ok: generation 7, 1 listener (web 0.0.0.0:8080 http, 2 rules), 2 clusters, 3 endpoints"."""
    listeners = _count(len(cfg.listeners), "listener")
    if cfg.listeners:
        listeners += " (" + "; ".join(_listener(item) for item in cfg.listeners) + ")"
    endpoints = sum(len(cluster.endpoints) for cluster in cfg.clusters)
    return (
        f"ok: generation {cfg.generation}, {listeners}, "
        f"{_count(len(cfg.clusters), 'cluster')}, {_count(endpoints, 'endpoint')}"
    )


def _listener(listener: Listener) -> str:
    return f"{listener.name} {listener.address} {listener.protocol}, {_count(len(listener.rules), 'rule')}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
