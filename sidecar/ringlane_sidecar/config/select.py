"""Which rules a given pod serves: Kubernetes label-selector semantics."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .model import Config, LabelSelector, LabelSelectorRequirement


def selector_matches(sel: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """None (no selector) and an empty selector match every pod, as in Kubernetes."""
    if sel is None:
        return True
    return all(labels.get(key) == value for key, value in sel.match_labels) and all(
        _requirement(req, labels) for req in sel.match_expressions
    )


def _requirement(req: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = req.key in labels
    if req.operator == "In":
        return present and labels[req.key] in req.values
    if req.operator == "NotIn":
        return not present or labels[req.key] not in req.values
    if req.operator == "Exists":
        return present
    return not present  # DoesNotExist


def select_for_pod(cfg: Config, labels: Mapping[str, str]) -> Config:
    """The config one pod's sidecar serves: matching rules only, listeners with no rule left dropped."""
    listeners = []
    for listener in cfg.listeners:
        rules = tuple(rule for rule in listener.rules if selector_matches(rule.selector, labels))
        if rules:
            listeners.append(replace(listener, rules=rules))
    return replace(cfg, listeners=tuple(listeners))
