"""Build the typed model from a document that passed validation.

Only called on valid documents, so it trusts types and shapes. Absent fields are
left out of the constructor calls: the dataclass defaults are the only defaults.
"""
from __future__ import annotations

from typing import Any

from .model import (
    AdminSettings, Backend, Cluster, Config, Endpoint, EngineSettings, Filter, Header,
    HeaderMatch, HeaderModifier, LabelSelector, LabelSelectorRequirement, Limits, Listener,
    Match, PathMatch, Retry, Rule, Timeouts, UrlRewrite,
)

Doc = dict[str, Any]


def build_config(doc: Doc) -> Config:
    return Config(
        **_pick(doc, generation="generation"),
        engine=EngineSettings(**_pick(doc.get("engine", {}), kind="kind", workers="workers", pin="pin")),
        admin=AdminSettings(**_pick(doc.get("admin", {}), address="address")),
        limits=Limits(**_pick(
            doc.get("limits", {}),
            max_request_header_bytes="maxRequestHeaderBytes",
            max_request_headers="maxRequestHeaders",
            max_request_body_bytes="maxRequestBodyBytes",
            request_header_timeout="requestHeaderTimeout",
            idle_timeout="idleTimeout",
            drain_timeout="drainTimeout",
            tunnel_idle_timeout="tunnelIdleTimeout",
        )),
        listeners=tuple(_listener(item) for item in doc["listeners"]),
        clusters=tuple(_cluster(item) for item in doc["clusters"]),
    )


def _pick(doc: Doc, **names: str) -> dict[str, Any]:
    """Constructor keywords for the JSON fields present, e.g. max_connections="maxConnections"."""
    return {attr: _number(doc[key]) for attr, key in names.items() if key in doc}


def _number(value: Any) -> Any:
    # JSON Schema counts 1.0 as an integer; every number in this config is an integer
    return int(value) if isinstance(value, float) else value


def _listener(doc: Doc) -> Listener:
    protocol = doc.get("protocol", "http")
    return Listener(
        **_pick(doc, name="name", address="address", protocol="protocol"),
        rules=tuple(_rule(item, protocol) for item in doc["rules"]),
    )


def _rule(doc: Doc, protocol: str) -> Rule:
    matches = tuple(_match(item) for item in doc.get("matches", ()))
    if protocol == "http" and not matches:
        matches = (Match(),)  # Gateway API: no matches means every request
    selector = doc.get("selector")
    return Rule(
        name=doc["name"],
        backends=tuple(Backend(**_pick(b, cluster="cluster", weight="weight")) for b in doc["backends"]),
        selector=None if selector is None else _selector(selector),
        hostnames=tuple(doc.get("hostnames", ())),
        matches=matches,
        timeouts=Timeouts(**_pick(doc.get("timeouts", {}), request="request", backend_request="backendRequest")),
        retry=Retry(
            **_pick(doc.get("retry", {}), attempts="attempts", backoff="backoff"),
            on=tuple(doc.get("retry", {}).get("on", ())),
        ),
        filters=tuple(_filter(item) for item in doc.get("filters", ())),
    )


def _selector(doc: Doc) -> LabelSelector:
    return LabelSelector(
        match_labels=tuple(doc.get("matchLabels", {}).items()),
        match_expressions=tuple(
            LabelSelectorRequirement(key=e["key"], operator=e["operator"], values=tuple(e.get("values", ())))
            for e in doc.get("matchExpressions", ())
        ),
    )


def _match(doc: Doc) -> Match:
    return Match(
        path=PathMatch(**_pick(doc.get("path", {}), type="type", value="value")),
        headers=tuple(HeaderMatch(**_pick(h, name="name", value="value", type="type")) for h in doc.get("headers", ())),
        method=doc.get("method"),
    )


def _filter(doc: Doc) -> Filter:
    if "urlRewrite" in doc:
        rewrite: Doc = doc["urlRewrite"]
        return Filter(url_rewrite=UrlRewrite(
            hostname=rewrite.get("hostname"),
            replace_prefix_match=rewrite.get("path", {}).get("replacePrefixMatch"),
        ))
    if "requestHeaderModifier" in doc:
        return Filter(request_header_modifier=_modifier(doc["requestHeaderModifier"]))
    return Filter(response_header_modifier=_modifier(doc["responseHeaderModifier"]))


def _modifier(doc: Doc) -> HeaderModifier:
    return HeaderModifier(
        set=tuple(Header(name=h["name"], value=h["value"]) for h in doc.get("set", ())),
        add=tuple(Header(name=h["name"], value=h["value"]) for h in doc.get("add", ())),
        remove=tuple(doc.get("remove", ())),
    )


def _cluster(doc: Doc) -> Cluster:
    return Cluster(
        **_pick(
            doc,
            name="name",
            load_balancer="loadBalancer",
            connect_timeout="connectTimeout",
            max_connections="maxConnections",
            idle_timeout="idleTimeout",
        ),
        endpoints=tuple(Endpoint(address=e["address"]) for e in doc["endpoints"]),
    )
