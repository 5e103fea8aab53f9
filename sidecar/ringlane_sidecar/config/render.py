"""Config -> canonical JSON-ready dict (every default explicit), and its hash.

The inverse of build.py: parse_config(config_to_dict(c)) == c. Optional
scalars that are unset (a timeout, a method, a selector, a body limit of 0)
are left out.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from .model import Cluster, Config, Filter, HeaderModifier, LabelSelector, Limits, Listener, Match, Rule

Doc = dict[str, Any]


def config_to_dict(cfg: Config) -> Doc:
    return {
        "version": cfg.version,
        "generation": cfg.generation,
        "engine": {"kind": cfg.engine.kind, "workers": cfg.engine.workers, "pin": cfg.engine.pin},
        "admin": {"address": cfg.admin.address},
        "limits": _limits(cfg),
        "listeners": [_listener(item) for item in cfg.listeners],
        "clusters": [_cluster(item) for item in cfg.clusters],
    }


def _limits(cfg: Config) -> Doc:
    out: Doc = {
        "maxRequestHeaderBytes": cfg.limits.max_request_header_bytes,
        "maxRequestHeaders": cfg.limits.max_request_headers,
        "requestHeaderTimeout": cfg.limits.request_header_timeout,
        "idleTimeout": cfg.limits.idle_timeout,
        "drainTimeout": cfg.limits.drain_timeout,
    }
    # Unlimited (0) is left out like an unset timeout: configs that do not use the limit keep
    # their hash, and sidecars that predate the field still accept them.
    if cfg.limits.max_request_body_bytes:
        out["maxRequestBodyBytes"] = cfg.limits.max_request_body_bytes
    if cfg.limits.tunnel_idle_timeout_ms != Limits().tunnel_idle_timeout_ms:  # the same reasons
        out["tunnelIdleTimeout"] = cfg.limits.tunnel_idle_timeout
    return out


def config_hash(cfg: Config) -> str:
    """sha256 of the canonical JSON: equal configs hash equal however they were written."""
    text = json.dumps(config_to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _listener(listener: Listener) -> Doc:
    return {
        "name": listener.name,
        "address": listener.address,
        "protocol": listener.protocol,
        "rules": [_rule(rule) for rule in listener.rules],
    }


def _rule(rule: Rule) -> Doc:
    out: Doc = {"name": rule.name}
    if rule.selector is not None:
        out["selector"] = _selector(rule.selector)
    timeouts: Doc = {}
    if rule.timeouts.request is not None:
        timeouts["request"] = rule.timeouts.request
    if rule.timeouts.backend_request is not None:
        timeouts["backendRequest"] = rule.timeouts.backend_request
    out.update(
        hostnames=list(rule.hostnames),
        matches=[_match(match) for match in rule.matches],
        backends=[{"cluster": b.cluster, "weight": b.weight} for b in rule.backends],
        timeouts=timeouts,
        retry={"attempts": rule.retry.attempts, "on": list(rule.retry.on), "backoff": rule.retry.backoff},
        filters=[_filter(f) for f in rule.filters],
    )
    return out


def _selector(selector: LabelSelector) -> Doc:
    return {
        "matchLabels": dict(selector.match_labels),
        "matchExpressions": [
            {"key": e.key, "operator": e.operator, "values": list(e.values)} for e in selector.match_expressions
        ],
    }


def _match(match: Match) -> Doc:
    out: Doc = {
        "path": {"type": match.path.type, "value": match.path.value},
        "headers": [{"type": h.type, "name": h.name, "value": h.value} for h in match.headers],
    }
    if match.method is not None:
        out["method"] = match.method
    return out


def _filter(flt: Filter) -> Doc:
    if flt.url_rewrite is not None:
        rewrite: Doc = {}
        if flt.url_rewrite.hostname is not None:
            rewrite["hostname"] = flt.url_rewrite.hostname
        if flt.url_rewrite.replace_prefix_match is not None:
            rewrite["path"] = {"replacePrefixMatch": flt.url_rewrite.replace_prefix_match}
        return {"urlRewrite": rewrite}
    if flt.request_header_modifier is not None:
        return {"requestHeaderModifier": _modifier(flt.request_header_modifier)}
    if flt.response_header_modifier is not None:
        return {"responseHeaderModifier": _modifier(flt.response_header_modifier)}
    raise ValueError("a Filter must set one of its fields")


def _modifier(mod: HeaderModifier) -> Doc:
    return {
        "set": [{"name": h.name, "value": h.value} for h in mod.set],
        "add": [{"name": h.name, "value": h.value} for h in mod.add],
        "remove": list(mod.remove),
    }


def _cluster(cluster: Cluster) -> Doc:
    return {
        "name": cluster.name,
        "loadBalancer": cluster.load_balancer,
        "connectTimeout": cluster.connect_timeout,
        "maxConnections": cluster.max_connections,
        "idleTimeout": cluster.idle_timeout,
        "endpoints": [{"address": e.address} for e in cluster.endpoints],
    }
