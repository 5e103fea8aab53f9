"""backendRefs -> sidecar clusters: Services resolved through their EndpointSlices, or the local app."""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .facts import ServiceInfo, ServicePort, SliceInfo

LOAD_BALANCERS = {"RoundRobin": "round-robin", "LeastRequest": "least-request", "Random": "random"}
DEFAULT_LB = "round-robin"
LOCAL_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ResolvedBackend:
    cluster: str
    endpoints: tuple[str, ...]  # "10.1.2.3:8080" / "[fd00::1]:8080", sorted, unique
    load_balancer: str = DEFAULT_LB  # sidecar spelling: round-robin | least-request | random
    problem: str | None = None  # why the ref did not resolve (its share of traffic then gets 503)


def cluster_name(namespace: str, ref: Mapping[str, Any], lb: str) -> str:
    """<ns>/<svc>:<port> or local:<port>; a non-default balancer gets its own cluster (@least-request)."""
    base = f"local:{ref['port']}" if ref.get("kind") == "Local" else f"{namespace}/{ref['name']}:{ref['port']}"
    return base if lb == DEFAULT_LB else f"{base}@{lb}"


def resolve_backend(
    namespace: str,
    ref: Mapping[str, Any],
    lb: str,
    services: Mapping[str, ServiceInfo],
    slices: Mapping[str, Sequence[SliceInfo]],
) -> ResolvedBackend:
    name = cluster_name(namespace, ref, lb)
    port = int(ref["port"])
    if ref.get("kind") == "Local":
        return ResolvedBackend(name, (f"{LOCAL_HOST}:{port}",), lb)
    svc = services.get(ref["name"])
    if svc is None:
        return ResolvedBackend(name, (), lb, f"Service {namespace}/{ref['name']} not found")
    if svc.type == "ExternalName":
        return ResolvedBackend(name, (), lb, f"Service {namespace}/{svc.name} is ExternalName (not supported)")
    sport = next((p for p in svc.ports if p.port == port and p.protocol == "TCP"), None)
    if sport is None:
        have = ", ".join(f"{p.port}/{p.protocol}" for p in svc.ports) or "none"
        return ResolvedBackend(name, (), lb, f"port {port} not found on Service {namespace}/{svc.name} (ports: {have})")
    return ResolvedBackend(name, _endpoints(sport, slices.get(svc.name, ())), lb)


def _endpoints(sport: ServicePort, slices: Sequence[SliceInfo]) -> tuple[str, ...]:
    """Ready addresses with the port the EndpointSlice gives for the Service port's name.

    The EndpointSlice controller resolves named targetPorts per pod, so the slice port named
    like the Service port is authoritative; a numeric targetPort is the fallback for
    hand-made slices without that port name.
    """
    found: set[tuple[int, int, str, int]] = set()
    for sl in slices:
        if sl.address_type not in ("IPv4", "IPv6"):
            continue
        target = next((p.port for p in sl.ports if p.name == sport.name and p.protocol == "TCP"), None)
        if target is None and not isinstance(sport.target_port, str):
            target = int(sport.target_port) if sport.target_port is not None else sport.port
        if target is None:
            continue
        for ep in sl.endpoints:
            if not ep.ready:
                continue
            for addr in ep.addresses:
                try:
                    ip = ipaddress.ip_address(addr)
                except ValueError:
                    continue
                found.add((ip.version, int(ip), str(ip), target))
    return tuple(f"[{text}]:{port}" if version == 6 else f"{text}:{port}"
                 for version, _, text, port in sorted(found))
