"""Checks the JSON Schema cannot express: uniqueness, address conflicts, zero timeouts."""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..slots import SLOTS_PER_TABLE
from .addresses import IPAddress, addresses_overlap, parse_address
from .errors import Issue, Path, format_path
from .model import AdminSettings
from .semantic_common import checked_duration, unique
from .semantic_rules import check_rule
from .view import View

DEFAULT_ADMIN_ADDRESS = AdminSettings().address


def semantic_issues(doc: Mapping[str, Any], bad: Iterable[Path]) -> list[Issue]:
    """Cross-field errors in the parts of doc that passed the schema (bad: failed paths)."""
    v = View(doc, bad)
    out: list[Issue] = []
    for name in ("requestHeaderTimeout", "idleTimeout", "drainTimeout"):
        checked_duration(v, ("limits", name), out)
    checked_duration(v, ("limits", "tunnelIdleTimeout"), out, zero_ok=True)
    _addresses(v, out)
    listeners = v.items(("listeners",))
    unique([(p + ("name",), n) for p, _ in listeners if (n := v.text(p + ("name",)))], "listener name", out)
    clusters = _cluster_names(v)
    for path, _ in listeners:
        _listener(v, path, clusters, out)
    _clusters(v, out)
    _capacity(v, out)
    return out


def _capacity(v: View, out: list[Issue]) -> None:
    """The data plane counts each listener, rule (and one per listener for its unrouted
    requests) and cluster in a stats slot: a config needing more cannot be applied."""
    listeners = v.items(("listeners",))
    counts = [(("listeners",), "listeners", len(listeners)),
              (("listeners",), "rules (with one more per listener)",
               sum(len(v.items(p + ("rules",))) + 1 for p, _ in listeners)),
              (("clusters",), "clusters", len(v.items(("clusters",))))]
    for path, what, n in counts:
        if n > SLOTS_PER_TABLE:
            out.append((path, f"{n} {what}: at most {SLOTS_PER_TABLE}"))


def _addresses(v: View, out: list[Issue]) -> None:
    """Listener and admin sockets must be bindable together."""
    entries: list[tuple[Path, str | None]] = [(("admin", "address"), v.text(("admin", "address"), DEFAULT_ADMIN_ADDRESS))]
    entries += [(p + ("address",), v.text(p + ("address",))) for p, _ in v.items(("listeners",))]
    bound: list[tuple[Path, str, IPAddress, int]] = []
    for path, text in entries:
        if text is None:
            continue
        try:
            host, port = parse_address(text)
        except ValueError as exc:
            out.append((path, str(exc)))
            continue
        ip = ipaddress.ip_address(host)
        for other_path, other_text, other_ip, other_port in bound:
            if port == other_port and addresses_overlap(ip, other_ip):
                out.append((path, _conflict(text, ip, other_path, other_text, other_ip)))
                break
        else:
            bound.append((path, text, ip, port))


def _conflict(text: str, ip: IPAddress, other_path: Path, other_text: str, other_ip: IPAddress) -> str:
    if ip == other_ip:
        return f"duplicate address {json.dumps(text)} (already used by {format_path(other_path)})"
    return (
        f"address {json.dumps(text)} overlaps {json.dumps(other_text)} of {format_path(other_path)}"
        " (a wildcard address takes the port on every interface)"
    )


def _cluster_names(v: View) -> set[str] | None:
    """Names of all clusters, or None when some are malformed (then skip unknown-cluster checks)."""
    raw = v.get(("clusters",))
    if not v.intact(("clusters",)) or not isinstance(raw, list):
        return None
    names = [v.text(("clusters", i, "name")) for i in range(len(raw))]
    return None if any(n is None for n in names) else {n for n in names if n is not None}


def _listener(v: View, path: Path, clusters: set[str] | None, out: list[Issue]) -> None:
    protocol = v.text(path + ("protocol",), "http")
    rules_path = path + ("rules",)
    rules = v.get(rules_path)
    if protocol == "tcp" and v.intact(rules_path) and isinstance(rules, list) and len(rules) != 1:
        out.append((rules_path, f"a tcp listener takes exactly one rule, got {len(rules)}"))
    items = v.items(rules_path)
    unique([(p + ("name",), n) for p, _ in items if (n := v.text(p + ("name",)))], "rule name", out)
    for rule_path, _ in items:
        check_rule(v, rule_path, protocol, clusters, out)


def _clusters(v: View, out: list[Issue]) -> None:
    items = v.items(("clusters",))
    unique([(p + ("name",), n) for p, _ in items if (n := v.text(p + ("name",)))], "cluster name", out)
    for path, _ in items:
        checked_duration(v, path + ("connectTimeout",), out)
        checked_duration(v, path + ("idleTimeout",), out)
        seen: list[tuple[Path, str]] = []
        for endpoint_path, _ in v.items(path + ("endpoints",)):
            address_path = endpoint_path + ("address",)
            text = v.text(address_path)
            if text is None:
                continue
            try:
                parse_address(text)
            except ValueError as exc:
                out.append((address_path, str(exc)))
                continue
            seen.append((address_path, text))
        unique(seen, "endpoint", out, key=_socket_key)


def _socket_key(text: str) -> tuple[IPAddress, int]:
    """[::1]:80 and [0::1]:80 are the same endpoint."""
    host, port = parse_address(text)
    return ipaddress.ip_address(host), port
