"""Compact, immutable facts about Services and EndpointSlices (what the render needs, no more).

The kopf indices store these instead of whole bodies: small, hashable, and the render
stays a pure function of plain values.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    name: str = ""  # "" for the single unnamed port of a Service
    target_port: int | str | None = None  # a number, a container port name, or unset (= port)
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    name: str
    ports: tuple[ServicePort, ...] = ()
    type: str = "ClusterIP"


@dataclass(frozen=True, slots=True)
class SlicePort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool


@dataclass(frozen=True, slots=True)
class SliceInfo:
    name: str
    service: str
    address_type: str  # IPv4 | IPv6 | FQDN
    ports: tuple[SlicePort, ...] = ()
    endpoints: tuple[SliceEndpoint, ...] = ()


def service_info(body: Mapping[str, Any]) -> ServiceInfo:
    spec = body.get("spec") or {}
    ports = tuple(
        ServicePort(
            port=int(p["port"]),
            name=p.get("name") or "",
            target_port=p.get("targetPort"),
            protocol=p.get("protocol") or "TCP",
        )
        for p in spec.get("ports") or ()
        if "port" in p
    )
    return ServiceInfo(name=body["metadata"]["name"], ports=ports, type=spec.get("type") or "ClusterIP")


def slice_info(body: Mapping[str, Any]) -> SliceInfo | None:
    """None for a slice that belongs to no Service (no kubernetes.io/service-name label)."""
    meta = body.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service:
        return None
    ports = tuple(
        SlicePort(name=p.get("name") or "", port=int(p["port"]), protocol=p.get("protocol") or "TCP")
        for p in body.get("ports") or ()
        if p.get("port") is not None
    )
    endpoints = tuple(
        # API convention: an unset ready condition means "unknown" and is to be read as ready.
        SliceEndpoint(addresses=tuple(ep.get("addresses") or ()),
                      ready=(ep.get("conditions") or {}).get("ready") is not False)
        for ep in body.get("endpoints") or ()
    )
    return SliceInfo(name=meta.get("name", ""), service=service, address_type=body.get("addressType", "IPv4"),
                     ports=ports, endpoints=endpoints)
