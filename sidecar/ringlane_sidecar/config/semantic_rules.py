"""Semantic checks of one routing rule (selector, hostnames, backends, timeouts, filters)."""
from __future__ import annotations

import json

from .addresses import is_ip_literal
from .errors import Issue, Path, format_path
from .semantic_common import checked_duration, unique
from .view import View

_NEED_VALUES = ("In", "NotIn")
_NO_VALUES = ("Exists", "DoesNotExist")
_HEADER_MODIFIERS = ("requestHeaderModifier", "responseHeaderModifier")
_CASE_NOTE = "; names are case-insensitive"


def check_rule(v: View, path: Path, protocol: str | None, clusters: set[str] | None, out: list[Issue]) -> None:
    if protocol == "tcp":
        _tcp_only(v, path, out)
    _selector(v, path + ("selector", "matchExpressions"), out)
    _hostnames(v, path + ("hostnames",), out)
    for match_path, _ in v.items(path + ("matches",)):
        headers = v.items(match_path + ("headers",))
        names = [(p + ("name",), n) for p, _ in headers if (n := v.text(p + ("name",)))]
        unique(names, "header", out, key=str.lower, note=_CASE_NOTE)
    _backends(v, path + ("backends",), clusters, out)
    _timeouts(v, path + ("timeouts",), out)
    unique(v.strings(path + ("retry", "on")), "retry condition", out)
    checked_duration(v, path + ("retry", "backoff"), out, zero_ok=True)
    _filters(v, path, out)


def _tcp_only(v: View, path: Path, out: list[Issue]) -> None:
    """An L4 relay sees no requests: nothing HTTP-shaped may be configured."""
    for key in ("hostnames", "matches", "filters"):
        if v.intact(path + (key,)) and v.get(path + (key,)):
            out.append((path + (key,), "not allowed on a tcp listener"))
    for item_path, condition in v.strings(path + ("retry", "on")):
        if condition != "connect-failure":
            out.append((item_path, f'{json.dumps(condition)} is not allowed on a tcp listener (only "connect-failure")'))


def _selector(v: View, path: Path, out: list[Issue]) -> None:
    """Kubernetes LabelSelector rules: In/NotIn need values, Exists/DoesNotExist take none."""
    for expr_path, _ in v.items(path):
        operator = v.text(expr_path + ("operator",))
        values_path = expr_path + ("values",)
        values = v.get(values_path)
        if operator is None or not v.intact(values_path):
            continue
        if operator in _NEED_VALUES and values is None:
            out.append((values_path, f"required for operator {operator}"))
        elif operator in _NEED_VALUES and not values:
            out.append((values_path, f"must not be empty for operator {operator}"))
        elif operator in _NO_VALUES and values:
            out.append((values_path, f"must be empty for operator {operator}"))


def _hostnames(v: View, path: Path, out: list[Issue]) -> None:
    names = v.strings(path)
    for item_path, name in names:
        if is_ip_literal(name):
            out.append((item_path, f"{json.dumps(name)} is an IP address; hostnames must be DNS names"))
    unique(names, "hostname", out)


def _backends(v: View, path: Path, clusters: set[str] | None, out: list[Issue]) -> None:
    items = v.items(path)
    if clusters is not None:
        for backend_path, _ in items:
            name = v.text(backend_path + ("cluster",))
            if name is not None and name not in clusters:
                out.append((backend_path + ("cluster",), f"unknown cluster {json.dumps(name)}"))
    if items and all(v.clean(p + ("weight",)) for p, _ in items) and len(items) == len(v.get(path)):
        if sum(int(b.get("weight", 1)) for _, b in items) == 0:
            out.append((path, "total weight must be greater than 0"))


def _timeouts(v: View, path: Path, out: list[Issue]) -> None:
    request = checked_duration(v, path + ("request",), out)
    backend = checked_duration(v, path + ("backendRequest",), out)
    if request is not None and backend is not None and backend > request:
        shown = f"{v.get(path + ('backendRequest',))} > {v.get(path + ('request',))}"
        out.append((path + ("backendRequest",), f"must not exceed timeouts.request ({shown})"))


def _filters(v: View, rule_path: Path, out: list[Issue]) -> None:
    kinds: list[tuple[Path, str]] = []
    for filter_path, flt in v.items(rule_path + ("filters",)):
        if not v.intact(filter_path) or len(flt) != 1:
            continue  # min/maxProperties already said "exactly one"
        kind = next(iter(flt))
        kinds.append((filter_path, kind))
        if kind in _HEADER_MODIFIERS:
            _modifier_names(v, filter_path + (kind,), out)
            _proxy_owned_names(v, filter_path + (kind,), kind, out)
            if kind == "requestHeaderModifier":
                _host_set_only(v, filter_path + (kind,), out)
        elif kind == "urlRewrite":
            _rewrite_needs_prefix(v, rule_path, filter_path + (kind, "path"), out)
    _host_rewritten_once(v, kinds, out)
    for path, kind in kinds:  # Gateway API: each filter kind at most once per rule
        first = next(p for p, k in kinds if k == kind)
        if first != path:
            out.append((path, f"duplicate {kind} filter (first at {format_path(first)}; one of each kind per rule)"))


def _modifier_names(v: View, path: Path, out: list[Issue]) -> None:
    """set and remove of the same header contradict each other; so do two sets."""
    names = [(p + ("name",), n) for p, _ in v.items(path + ("set",)) if (n := v.text(p + ("name",)))]
    names += v.strings(path + ("remove",))
    unique(names, "header", out, key=str.lower, note="; set and remove may name a header once, case-insensitively")


# Bodies stream through untouched, so what frames them (and the per-connection headers the proxy
# writes itself) cannot be edited, in either direction: an edited request Content-Length would let
# a client smuggle a second request past the proxy. The C core refuses these names too.
_PROXY_OWNED_HEADERS = frozenset(
    ("content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "upgrade", "te", "trailer"))


def _proxy_owned_names(v: View, path: Path, kind: str, out: list[Issue]) -> None:
    names = [(p + ("name",), n) for key in ("set", "add") for p, _ in v.items(path + (key,))
             if (n := v.text(p + ("name",)))]
    names += v.strings(path + ("remove",))
    for name_path, name in names:
        if name.lower() in _PROXY_OWNED_HEADERS:
            out.append((name_path, f"{json.dumps(name)} frames the body or the connection: the proxy manages it "
                                   f"and a {kind} cannot change it"))


def _host_set_only(v: View, path: Path, out: list[Issue]) -> None:
    """RFC 9112 3.2: a request carries exactly one Host. An added one makes two lines (the
    upstream could serve one and log the other) and a removed one leaves an invalid request."""
    names = [(p + ("name",), n) for p, _ in v.items(path + ("add",)) if (n := v.text(p + ("name",)))]
    for name_path, name in names + v.strings(path + ("remove",)):
        if name.lower() == "host":
            out.append((name_path, f"{json.dumps(name)}: a request has exactly one Host; a requestHeaderModifier "
                                   "can set it, not add or remove it"))


def _host_rewritten_once(v: View, kinds: list[tuple[Path, str]], out: list[Issue]) -> None:
    """urlRewrite.hostname replaces the Host header: a requestHeaderModifier may not also edit it."""
    if not any(k == "urlRewrite" and v.text(p + (k, "hostname")) for p, k in kinds):
        return
    for p, kind in kinds:
        if kind != "requestHeaderModifier":
            continue
        names = [(q + ("name",), n) for key in ("set", "add") for q, _ in v.items(p + (kind, key))
                 if (n := v.text(q + ("name",)))]
        for name_path, name in names + v.strings(p + (kind, "remove")):
            if name.lower() == "host":
                out.append((name_path, "the rule's urlRewrite.hostname sets Host: a requestHeaderModifier cannot "
                                       "also edit it"))


def _rewrite_needs_prefix(v: View, rule_path: Path, rewrite_path: Path, out: list[Issue]) -> None:
    """replacePrefixMatch replaces the matched prefix, so every match must be a prefix match."""
    if not v.intact(rewrite_path) or v.get(rewrite_path) is None or not v.intact(rule_path + ("matches",)):
        return
    for match_path, _ in v.items(rule_path + ("matches",)):
        type_path = match_path + ("path", "type")
        kind = v.text(type_path, "PathPrefix")
        if kind is None:
            return  # unknown: the schema reported it
        if kind != "PathPrefix":
            where = format_path(type_path[len(rule_path):])
            out.append((rewrite_path, f"replacePrefixMatch requires every match to be a PathPrefix, but {where} is {kind}"))
            return
