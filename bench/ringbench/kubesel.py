"""Which admission webhooks of a shared cluster would see our objects (pure).

bench/operator_scale.py runs its own operator in its own namespaces; another Ringlane installed
cluster-wide (the Helm chart of an e2e run) would inject its pods too and reconcile its
ProxyRoutes. Its webhook configurations give it away: they select our namespaces.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against labels; an absent or empty selector matches everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or ()
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _covers(rules: Iterable[Mapping[str, Any]], groups: Sequence[str], resource: str) -> bool:
    for rule in rules:
        api_groups, resources = rule.get("apiGroups") or (), rule.get("resources") or ()
        if any(g in api_groups for g in (*groups, "*")) and any(r in resources for r in (resource, "*")):
            return True
    return False


def foreign_webhooks(configs: Iterable[Mapping[str, Any]], ours: str,
                     namespaces: Mapping[str, Mapping[str, str]]) -> list[str]:
    """`Kind/config/webhook` of every webhook not in our configurations (named `ours`) that
    would be called for pods or ProxyRoutes in one of our namespaces (name -> labels)."""
    found = []
    for cfg in configs:
        name = cfg["metadata"]["name"]
        if name == ours:
            continue
        for hook in cfg.get("webhooks") or ():
            rules = hook.get("rules") or ()
            if not (_covers(rules, ("",), "pods") or _covers(rules, ("ringlane.io",), "proxyroutes")):
                continue
            if any(selector_matches(hook.get("namespaceSelector"), labels) for labels in namespaces.values()):
                found.append(f"{cfg.get('kind', 'WebhookConfiguration')}/{name}/{hook['name']}")
    return found
