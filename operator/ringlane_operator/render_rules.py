"""One ProxyRoute rule (CRD shape, Gateway API names) -> one sidecar Rule (pure).

Raises ValueError/KeyError/TypeError on shapes the CRD schema should have rejected;
render.py turns that into Accepted=False on the route instead of a broken config.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ringlane_sidecar.config import (
    Backend,
    Filter,
    Header,
    HeaderMatch,
    HeaderModifier,
    LabelSelector,
    Match,
    PathMatch,
    Retry,
    Rule,
    Timeouts,
    UrlRewrite,
    parse_duration_ms,
)

Spec = Mapping[str, Any]


def build_rule(
    name: str,
    rule: Spec,
    *,
    protocol: str,
    selector: LabelSelector,
    hostnames: Sequence[str],
    clusters: Sequence[str],
) -> Rule:
    """protocol is the sidecar's ("http"/"tcp"); clusters[i] is the cluster of backendRefs[i]."""
    refs = rule.get("backendRefs") or ()
    if len(refs) != len(clusters) or not refs:
        raise ValueError("every rule needs backendRefs")
    backends = tuple(Backend(cluster=c, weight=int(ref.get("weight", 1))) for c, ref in zip(clusters, refs))
    http = protocol == "http"
    return Rule(
        name=name,
        backends=backends,
        selector=selector,
        hostnames=tuple(hostnames) if http else (),
        # The sidecar reads "no matches" on an http rule as one match-all; say so explicitly
        # so the rendered Config equals what parse_config makes of it.
        matches=(tuple(_match(m) for m in rule.get("matches") or ()) or (Match(),)) if http else (),
        timeouts=_timeouts(rule.get("timeouts") or {}),
        retry=_retry(rule.get("retry") or {}, http),
        filters=tuple(_filter(f) for f in rule.get("filters") or ()) if http else (),
    )


def _match(m: Spec) -> Match:
    path = m.get("path") or {}
    return Match(
        path=PathMatch(type=path.get("type", "PathPrefix"), value=path.get("value", "/")),
        headers=tuple(HeaderMatch(name=h["name"], value=h["value"], type=h.get("type", "Exact"))
                      for h in m.get("headers") or ()),
        method=m.get("method"),
    )


def _duration(text: str | None) -> str | None:
    """Gateway API: a zero duration disables the timeout; the sidecar spells that as unset."""
    if text is None or parse_duration_ms(text) == 0:
        return None
    return text


def _timeouts(t: Spec) -> Timeouts:
    return Timeouts(request=_duration(t.get("request")), backend_request=_duration(t.get("backendRequest")))


def _retry(r: Spec, http: bool) -> Retry:
    """GEP-1731 -> sidecar: connect failures (and for HTTP, resets before any response byte:
    the sidecar retries those only for idempotent requests) are retried; codes become "503"."""
    attempts = int(r.get("attempts", 0))
    if attempts <= 0:
        return Retry()
    on = ["connect-failure"]
    if http:
        on.append("reset")
        for code in r.get("codes") or ():
            if str(int(code)) not in on:
                on.append(str(int(code)))
    return Retry(attempts=attempts, on=tuple(on), backoff=r.get("backoff") or Retry().backoff)


def _headers(items: Sequence[Spec] | None) -> tuple[Header, ...]:
    return tuple(Header(name=h["name"], value=h["value"]) for h in items or ())


def _modifier(m: Spec) -> HeaderModifier:
    return HeaderModifier(set=_headers(m.get("set")), add=_headers(m.get("add")),
                          remove=tuple(m.get("remove") or ()))


def _filter(f: Spec) -> Filter:
    kind = f["type"]
    if kind == "RequestHeaderModifier":
        return Filter(request_header_modifier=_modifier(f["requestHeaderModifier"]))
    if kind == "ResponseHeaderModifier":
        return Filter(response_header_modifier=_modifier(f["responseHeaderModifier"]))
    if kind == "URLRewrite":
        rw = f["urlRewrite"]
        path = rw.get("path") or {}
        if path and path.get("type", "ReplacePrefixMatch") != "ReplacePrefixMatch":
            raise ValueError(f"urlRewrite.path.type {path.get('type')!r} is not supported")
        return Filter(url_rewrite=UrlRewrite(hostname=rw.get("hostname"),
                                             replace_prefix_match=path.get("replacePrefixMatch")))
    raise ValueError(f"unknown filter type {kind!r}")
