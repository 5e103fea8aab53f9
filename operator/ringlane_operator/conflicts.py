"""Listener-port conflicts between ProxyRoutes: what the admission webhook refuses (pure).

CEL sees one object; this sees the namespace. Two routes clash when they would make one
pod's sidecar serve one port two ways (HTTP and TCP), or relay one TCP port to two
places, and their selectors can select the same pod. Routes whose selectors cannot meet
are let through here; the render still keeps one listener per port for the whole
namespace (oldest route wins), because every sidecar validates the whole config.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .selectors import selectors_may_overlap, to_label_selector

Route = Mapping[str, Any]


def _listener(route: Route) -> tuple[int, str]:
    listener = (route.get("spec") or {}).get("listener") or {}
    return int(listener.get("port", 0)), str(listener.get("protocol", "HTTP"))


def listener_conflicts(route: Route, others: Iterable[Route], admin_port: int) -> list[str]:
    """Problems with route's listener given the other routes of its namespace ([] when fine)."""
    port, protocol = _listener(route)
    name = (route.get("metadata") or {}).get("name")
    problems = []
    if port == admin_port:
        problems.append(f"spec.listener.port: {port} is the sidecars' admin port")
    selector = to_label_selector((route.get("spec") or {}).get("selector"))
    for other in sorted(others, key=lambda r: r["metadata"]["name"]):
        meta = other.get("metadata") or {}
        if meta.get("name") == name or meta.get("deletionTimestamp"):
            continue
        other_port, other_protocol = _listener(other)
        if other_port != port or (protocol == other_protocol == "HTTP"):
            continue
        if not selectors_may_overlap(selector, to_label_selector((other.get("spec") or {}).get("selector"))):
            continue
        if protocol != other_protocol:
            why = f"is served as {other_protocol} by ProxyRoute {meta.get('name')}"
        else:
            why = f"is already relayed by TCP ProxyRoute {meta.get('name')} (a TCP listener has one destination)"
        problems.append(f"spec.listener.port: {port} {why}, whose selector can select the same pods")
    return problems
