"""ProxyRoute label selectors: conversion to the sidecar model, and whether two can select one pod."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ringlane_sidecar.config import LabelSelector, LabelSelectorRequirement


def to_label_selector(spec: Mapping[str, Any] | None) -> LabelSelector:
    """A Kubernetes LabelSelector dict -> the sidecar's LabelSelector (keys sorted: deterministic)."""
    spec = spec or {}
    labels = tuple(sorted((str(k), str(v)) for k, v in (spec.get("matchLabels") or {}).items()))
    exprs = tuple(
        LabelSelectorRequirement(key=e["key"], operator=e["operator"], values=tuple(e.get("values") or ()))
        for e in spec.get("matchExpressions") or ()
    )
    return LabelSelector(match_labels=labels, match_expressions=exprs)


@dataclass
class _KeyConstraint:
    present: bool = False  # some requirement needs the label
    absent: bool = False  # some requirement forbids it
    allowed: set[str] | None = None  # None: any value
    excluded: set[str] = field(default_factory=set)

    def satisfiable(self) -> bool:
        if self.present and self.absent:
            return False
        if self.absent or not self.present:
            return True  # a pod without the label satisfies NotIn and nothing else was asked
        return self.allowed is None or bool(self.allowed - self.excluded)


def _requirements(sel: LabelSelector) -> Iterable[tuple[str, str, tuple[str, ...]]]:
    for key, value in sel.match_labels:
        yield key, "In", (value,)
    for req in sel.match_expressions:
        yield req.key, req.operator, req.values


def selectors_may_overlap(a: LabelSelector, b: LabelSelector) -> bool:
    """False only when no label set can satisfy both selectors (exact for these operators)."""
    keys: dict[str, _KeyConstraint] = {}
    for sel in (a, b):
        for key, op, values in _requirements(sel):
            c = keys.setdefault(key, _KeyConstraint())
            if op == "In":
                c.present = True
                c.allowed = set(values) if c.allowed is None else c.allowed & set(values)
            elif op == "NotIn":
                c.excluded |= set(values)
            elif op == "Exists":
                c.present = True
            else:  # DoesNotExist
                c.absent = True
    return all(c.satisfiable() for c in keys.values())
