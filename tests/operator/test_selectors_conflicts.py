"""Selector overlap (exact for the four operators) and listener conflicts between routes."""
from __future__ import annotations

from typing import Any

import pytest
from operator_builders import route

from ringlane_operator.conflicts import listener_conflicts
from ringlane_operator.selectors import selectors_may_overlap, to_label_selector
from ringlane_sidecar.config import selector_matches


def sel(labels: dict[str, str] | None = None, *exprs: tuple[str, str, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {"matchLabels": labels or {}}
    out["matchExpressions"] = [{"key": k, "operator": op, "values": v} for k, op, v in exprs]
    return out


OVERLAP = [
    ("both empty", sel(), sel(), True),
    ("same labels", sel({"app": "web"}), sel({"app": "web"}), True),
    ("different values", sel({"app": "web"}), sel({"app": "db"}), False),
    ("different keys", sel({"app": "web"}), sel({"tier": "edge"}), True),
    ("label vs NotIn same value", sel({"app": "web"}), sel(None, ("app", "NotIn", ["web"])), False),
    ("label vs NotIn other value", sel({"app": "web"}), sel(None, ("app", "NotIn", ["db"])), True),
    ("In sets disjoint", sel(None, ("app", "In", ["a", "b"])), sel(None, ("app", "In", ["c"])), False),
    ("In sets meet", sel(None, ("app", "In", ["a", "b"])), sel(None, ("app", "In", ["b", "c"])), True),
    ("In minus NotIn empty", sel(None, ("app", "In", ["a"])), sel(None, ("app", "NotIn", ["a"])), False),
    ("Exists vs DoesNotExist", sel(None, ("app", "Exists", [])), sel(None, ("app", "DoesNotExist", [])), False),
    ("label vs DoesNotExist", sel({"app": "web"}), sel(None, ("app", "DoesNotExist", [])), False),
    ("NotIn vs DoesNotExist (no label)", sel(None, ("app", "NotIn", ["x"])), sel(None, ("app", "DoesNotExist", [])), True),
    ("Exists vs NotIn", sel(None, ("app", "Exists", [])), sel(None, ("app", "NotIn", ["a", "b"])), True),
]


@pytest.mark.parametrize("a,b,expected", [c[1:] for c in OVERLAP], ids=[c[0] for c in OVERLAP])
def test_overlap(a: dict[str, Any], b: dict[str, Any], expected: bool) -> None:
    sa, sb = to_label_selector(a), to_label_selector(b)
    assert selectors_may_overlap(sa, sb) is expected
    assert selectors_may_overlap(sb, sa) is expected


@pytest.mark.parametrize("a,b,expected", [c[1:] for c in OVERLAP if c[3]], ids=[c[0] for c in OVERLAP if c[3]])
def test_overlap_has_a_witness(a: dict[str, Any], b: dict[str, Any], expected: bool) -> None:
    """When they overlap, some label set (from the values they mention, or a fresh one) matches both."""
    sa, sb = to_label_selector(a), to_label_selector(b)
    keys = {k for s in (sa, sb) for k, _ in s.match_labels} | {r.key for s in (sa, sb) for r in s.match_expressions}
    values = {v for s in (sa, sb) for _, v in s.match_labels} | {v for s in (sa, sb) for r in s.match_expressions for v in r.values}
    candidates: list[dict[str, str]] = [{}]
    for key in sorted(keys):
        candidates = [c for base in candidates for c in (base, *({**base, key: v} for v in [*values, "fresh"]))]
    assert any(selector_matches(sa, c) and selector_matches(sb, c) for c in candidates)


def others(*routes: dict[str, Any]) -> list[dict[str, Any]]:
    return list(routes)


def test_http_routes_share_a_port() -> None:
    assert listener_conflicts(route("b"), others(route("a")), 9901) == []


def test_http_vs_tcp_on_overlapping_pods() -> None:
    problems = listener_conflicts(route("b", protocol="TCP"), others(route("a")), 9901)
    assert problems == ["spec.listener.port: 8080 is served as HTTP by ProxyRoute a, whose selector can select the same pods"]


def test_two_tcp_routes_on_overlapping_pods() -> None:
    (problem,) = listener_conflicts(route("b", protocol="TCP"), others(route("a", protocol="TCP")), 9901)
    assert "already relayed by TCP ProxyRoute a" in problem


def test_disjoint_selectors_do_not_clash_here() -> None:
    b = route("b", protocol="TCP", selector={"matchLabels": {"app": "db"}})
    assert listener_conflicts(b, others(route("a")), 9901) == []


def test_other_ports_itself_and_deleting_routes_are_ignored() -> None:
    b = route("b", protocol="TCP")
    assert listener_conflicts(b, others(b, route("a", port=81), route("c", deleting=True)), 9901) == []


def test_admin_port() -> None:
    assert listener_conflicts(route("a", port=9901), [], 9901) == ["spec.listener.port: 9901 is the sidecars' admin port"]
