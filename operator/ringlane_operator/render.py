"""All ProxyRoutes of a namespace -> one sidecar Config, plus per-route status facts (pure).

Every sidecar of the namespace validates the whole config before selecting its own rules,
and rejects an invalid config whole. So a route that cannot be rendered, or that would make
the config invalid, is left out (Accepted=False with the reason) instead of breaking the
others. Conflicts follow Gateway API precedence: the oldest route (creationTimestamp, then
name) keeps a contested listener port.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ringlane_sidecar.config import (
    AdminSettings,
    Cluster,
    Config,
    ConfigError,
    Endpoint,
    Listener,
    Rule,
    config_to_dict,
    parse_config,
)

from .backends import LOAD_BALANCERS, ResolvedBackend, resolve_backend
from .facts import ServiceInfo, SliceInfo
from .render_rules import build_rule
from .selectors import to_label_selector

Route = Mapping[str, Any]

# Condition reasons (Gateway API names where it has one).
ACCEPTED = "Accepted"
LISTENER_CONFLICT = "ListenerConflict"
UNSUPPORTED_VALUE = "UnsupportedValue"
INVALID = "Invalid"


@dataclass(frozen=True, slots=True)
class RenderSettings:
    admin_port: int = 9901  # the sidecars' admin port: no listener may take it


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What the render found out about one route; conditions.py turns it into status."""

    name: str
    generation: int
    accepted: bool
    reason: str = ACCEPTED
    message: str = ""
    resolved: bool = True  # False: rendering failed before backendRefs were looked at
    ref_problems: tuple[str, ...] = ()  # unresolved backendRefs (their share gets 503)
    endpoints: int = 0  # resolved endpoints over the route's distinct clusters
    rules: tuple[str, ...] = ()  # names of the rules in the config


@dataclass(frozen=True, slots=True)
class Rendered:
    config: Config  # generation 0: the ConfigMap step numbers it
    routes: Mapping[str, RouteFacts] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Part:
    """One accepted route's contribution to the config."""

    name: str
    port: int
    protocol: str  # sidecar spelling: http | tcp
    rules: tuple[Rule, ...]
    backends: tuple[ResolvedBackend, ...]


def route_order(route: Route) -> tuple[str, str]:
    meta = route.get("metadata") or {}
    return str(meta.get("creationTimestamp") or ""), str(meta.get("name") or "")


def referenced_services(routes: Iterable[Route]) -> set[str]:
    """Names of the Services the routes refer to (which backend changes need a re-render)."""
    return {
        ref["name"]
        for route in routes
        for rule in (route.get("spec") or {}).get("rules") or ()
        for ref in rule.get("backendRefs") or ()
        if ref.get("kind", "Service") == "Service" and ref.get("name")
    }


def render_namespace(
    namespace: str,
    routes: Sequence[Route],
    services: Mapping[str, ServiceInfo],
    slices: Mapping[str, Sequence[SliceInfo]],
    settings: RenderSettings = RenderSettings(),
) -> Rendered:
    live = sorted((r for r in routes if not (r.get("metadata") or {}).get("deletionTimestamp")), key=route_order)
    facts: dict[str, RouteFacts] = {}
    parts: list[_Part] = []
    owners: dict[int, tuple[str, str]] = {}  # port -> (protocol, route that holds it)
    for route in live:
        name = route["metadata"]["name"]
        generation = int(route["metadata"].get("generation") or 0)
        try:
            part = _render_route(namespace, route, services, slices)
        except (KeyError, ValueError, TypeError) as exc:
            facts[name] = RouteFacts(name, generation, False, INVALID, f"cannot render: {exc}", resolved=False)
            continue
        refused = _listener_refusal(part, owners, settings)
        facts[name] = _resolved(part, generation)
        if refused is not None:
            facts[name] = replace(facts[name], accepted=False, reason=refused[0], message=refused[1], rules=())
            continue
        owners.setdefault(part.port, (part.protocol, name))
        parts.append(part)
    kept, invalid = _valid_subset(parts, settings)
    for name, errors in invalid.items():
        shown = "; ".join(errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
        facts[name] = replace(facts[name], accepted=False, reason=INVALID, rules=(),
                              message=f"rejected by the sidecar config checks: {shown}")
    return Rendered(config=_assemble(kept, settings), routes=dict(sorted(facts.items())))


def _render_route(
    namespace: str, route: Route, services: Mapping[str, ServiceInfo], slices: Mapping[str, Sequence[SliceInfo]]
) -> _Part:
    spec = route["spec"]
    name = route["metadata"]["name"]
    listener = spec["listener"]
    protocol = "tcp" if listener.get("protocol", "HTTP") == "TCP" else "http"
    selector = to_label_selector(spec.get("selector"))
    rules: list[Rule] = []
    backends: list[ResolvedBackend] = []
    for index, rule in enumerate(spec["rules"]):
        lb = LOAD_BALANCERS[(rule.get("loadBalancer") or {}).get("type", "RoundRobin")]
        resolved = [resolve_backend(namespace, ref, lb, services, slices) for ref in rule.get("backendRefs") or ()]
        rules.append(build_rule(f"{namespace}/{name}/{index}", rule, protocol=protocol, selector=selector,
                                hostnames=spec.get("hostnames") or (), clusters=[b.cluster for b in resolved]))
        backends.extend(resolved)
    return _Part(name, int(listener["port"]), protocol, tuple(rules), tuple(backends))


def _listener_refusal(part: _Part, owners: Mapping[int, tuple[str, str]], settings: RenderSettings) -> tuple[str, str] | None:
    if part.port == settings.admin_port:
        return UNSUPPORTED_VALUE, f"listener port {part.port} is the sidecar's admin port"
    held = owners.get(part.port)
    if held is None:
        return None
    protocol, holder = held
    if protocol != part.protocol:
        return LISTENER_CONFLICT, (f"listener port {part.port} is already served as {protocol.upper()} by ProxyRoute "
                                   f"{holder}; the routes of a namespace share one listener per port")
    if protocol == "tcp":
        return LISTENER_CONFLICT, (f"TCP listener port {part.port} is already taken by ProxyRoute {holder}; "
                                   "a TCP listener has exactly one rule")
    return None


def _resolved(part: _Part, generation: int) -> RouteFacts:
    problems = tuple(dict.fromkeys(b.problem for b in part.backends if b.problem))
    distinct = {b.cluster: len(b.endpoints) for b in part.backends}
    return RouteFacts(part.name, generation, True, ACCEPTED, "", True, problems, sum(distinct.values()),
                      tuple(r.name for r in part.rules))


def _assemble(parts: Sequence[_Part], settings: RenderSettings) -> Config:
    listeners: dict[int, tuple[str, list[Rule]]] = {}
    clusters: dict[str, ResolvedBackend] = {}
    for part in parts:
        listeners.setdefault(part.port, (part.protocol, []))[1].extend(part.rules)
        for b in part.backends:
            clusters.setdefault(b.cluster, b)
    return Config(
        generation=0,
        admin=AdminSettings(address=f"0.0.0.0:{settings.admin_port}"),
        listeners=tuple(
            Listener(name=f"p{port}", address=f"0.0.0.0:{port}", protocol=protocol, rules=tuple(rules))  # type: ignore[arg-type]
            for port, (protocol, rules) in sorted(listeners.items())
        ),
        clusters=tuple(
            Cluster(name=name, endpoints=tuple(Endpoint(address=a) for a in b.endpoints),
                    load_balancer=b.load_balancer)  # type: ignore[arg-type]
            for name, b in sorted(clusters.items())
        ),
    )


def _errors(parts: Sequence[_Part], settings: RenderSettings) -> list[str]:
    try:
        parse_config(config_to_dict(_assemble(parts, settings)))
    except ConfigError as exc:
        return list(exc.errors)
    return []


def _valid_subset(parts: Sequence[_Part], settings: RenderSettings) -> tuple[list[_Part], dict[str, list[str]]]:
    """All parts when the whole config is valid (the usual case: one check). Otherwise each part
    is checked alone first (a broken route is found with one small check, not one check of the
    whole namespace per route); then, if the rest still clash with each other, they are added
    oldest first and each one whose addition makes the config invalid is left out."""
    if not _errors(parts, settings):
        return list(parts), {}
    invalid: dict[str, list[str]] = {}
    candidates: list[_Part] = []
    for part in parts:
        errors = _errors([part], settings)
        if errors:
            invalid[part.name] = errors
        else:
            candidates.append(part)
    if not _errors(candidates, settings):
        return candidates, invalid
    kept: list[_Part] = []
    for part in candidates:
        errors = _errors([*kept, part], settings)
        if errors:
            invalid[part.name] = errors
        else:
            kept.append(part)
    return kept, invalid
