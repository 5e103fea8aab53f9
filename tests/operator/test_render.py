"""ProxyRoutes + Services + EndpointSlices -> sidecar Config and route facts (table-driven).

Every rendered config is checked against the sidecar's own contract: it must survive
parse_config(config_to_dict(cfg)) unchanged, or no sidecar of the namespace would load it.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from operator_builders import route, service, slice_

from ringlane_operator.facts import ServiceInfo, SliceInfo, slice_info
from ringlane_operator.render import RenderSettings, Rendered, referenced_services, render_namespace
from ringlane_sidecar.config import (
    Config,
    LabelSelector,
    LabelSelectorRequirement,
    config_hash,
    config_to_dict,
    parse_config,
    select_for_pod,
)

API = service("api", (80, "http", "web"))
API_SLICE = slice_("api", {"http": 8080}, ready=["10.1.0.2", "10.1.0.1"])


def render(routes: list[dict[str, Any]], services: list[ServiceInfo] = (API,),
           slices: list[SliceInfo] = (API_SLICE,), settings: RenderSettings = RenderSettings()) -> Rendered:
    by_service: dict[str, list[SliceInfo]] = {}
    for s in slices:
        by_service.setdefault(s.service, []).append(s)
    out = render_namespace("shop", routes, {s.name: s for s in services}, by_service, settings)
    assert parse_config(config_to_dict(out.config)) == out.config  # the sidecar reads it as rendered
    return out


def summary(r: Rendered) -> dict[str, Any]:
    return {
        "listeners": {lst.name: (lst.protocol, [rule.name for rule in lst.rules]) for lst in r.config.listeners},
        "clusters": {c.name: [e.address for e in c.endpoints] for c in r.config.clusters},
        "routes": {n: (f.accepted, f.reason, f.endpoints) for n, f in r.routes.items()},
    }


def rule(*refs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"backendRefs": list(refs), **extra}


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("empty namespace", dict(routes=[]), {"listeners": {}, "clusters": {}, "routes": {}}),
    ("one service backend", dict(routes=[route("a")]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"a": (True, "Accepted", 2)}}),
    ("named target port resolved through the slice port name", dict(
        routes=[route("a", rules=[rule({"name": "api", "port": 80})])],
        services=[service("api", (80, "http", "web-port"))],
        slices=[slice_("api", {"http": 9090}, ready=["10.1.0.9"])]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.9:9090"]},
        "routes": {"a": (True, "Accepted", 1)}}),
    ("numeric target port when the slice lacks the port name", dict(
        routes=[route("a")], services=[service("api", (80, "http", 8081))],
        slices=[slice_("api", {"other": 1234}, ready=["10.1.0.3"])]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.3:8081"]},
        "routes": {"a": (True, "Accepted", 1)}}),
    ("not-ready endpoints excluded, unknown readiness counts as ready", dict(
        routes=[route("a")],
        slices=[slice_("api", {"http": 8080}, ready=["10.1.0.1"], not_ready=["10.1.0.5"], unknown=["10.1.0.6"])]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.6:8080"]},
        "routes": {"a": (True, "Accepted", 2)}}),
    ("slices of one service merged, duplicates removed, IPv6 bracketed, FQDN ignored", dict(
        routes=[route("a")],
        slices=[slice_("api", {"http": 8080}, ready=["10.1.0.2", "10.1.0.1"], name="api-1"),
                slice_("api", {"http": 8080}, ready=["10.1.0.1"], name="api-2"),
                slice_("api", {"http": 8080}, ready=["fd00::2", "fd00::1"], address_type="IPv6", name="api-3"),
                slice_("api", {"http": 8080}, ready=["db.example.com"], address_type="FQDN", name="api-4")]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080", "[fd00::1]:8080", "[fd00::2]:8080"]},
        "routes": {"a": (True, "Accepted", 4)}}),
    ("service without slices: empty cluster, refs resolved", dict(routes=[route("a")], slices=[]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": []},
        "routes": {"a": (True, "Accepted", 0)}}),
    ("missing service: empty cluster (503 for its share), still accepted", dict(
        routes=[route("a", rules=[rule({"name": "api", "port": 80, "weight": 3}, {"name": "gone", "port": 80})])]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"], "shop/gone:80": []},
        "routes": {"a": (True, "Accepted", 2)}}),
    ("service port not found", dict(routes=[route("a", rules=[rule({"name": "api", "port": 81})])]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:81": []},
        "routes": {"a": (True, "Accepted", 0)}}),
    ("ExternalName service is not resolved", dict(
        routes=[route("a", rules=[rule({"name": "ext", "port": 80})])],
        services=[service("ext", (80, "", None), type_="ExternalName")]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"shop/ext:80": []},
        "routes": {"a": (True, "Accepted", 0)}}),
    ("Local backend is the pod's own app", dict(routes=[route("a", rules=[rule({"kind": "Local", "port": 9000})])]), {
        "listeners": {"p8080": ("http", ["shop/a/0"])},
        "clusters": {"local:9000": ["127.0.0.1:9000"]},
        "routes": {"a": (True, "Accepted", 1)}}),
    ("two routes share a port with different selectors", dict(routes=[
        route("a", selector={"matchLabels": {"app": "web"}}),
        route("b", selector={"matchLabels": {"app": "admin"}}, created="2026-01-02T00:00:00Z",
              rules=[rule({"kind": "Local", "port": 9000})])]), {
        "listeners": {"p8080": ("http", ["shop/a/0", "shop/b/0"])},
        "clusters": {"local:9000": ["127.0.0.1:9000"], "shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"a": (True, "Accepted", 2), "b": (True, "Accepted", 1)}}),
    ("listeners per distinct port, sorted", dict(routes=[route("a", port=9090), route("b", port=80)]), {
        "listeners": {"p80": ("http", ["shop/b/0"]), "p9090": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"a": (True, "Accepted", 2), "b": (True, "Accepted", 2)}}),
    ("TCP route", dict(routes=[route("db", port=5432, protocol="TCP",
                                     rules=[rule({"name": "api", "port": 80}, retry={"attempts": 1})])]), {
        "listeners": {"p5432": ("tcp", ["shop/db/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"db": (True, "Accepted", 2)}}),
    ("HTTP and TCP on one port: the older route keeps it", dict(routes=[
        route("new", protocol="TCP", created="2026-01-05T00:00:00Z"),
        route("old", created="2026-01-01T00:00:00Z")]), {
        "listeners": {"p8080": ("http", ["shop/old/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"new": (False, "ListenerConflict", 2), "old": (True, "Accepted", 2)}}),
    ("two TCP routes on one port: one rule per TCP listener", dict(routes=[
        route("a", port=5432, protocol="TCP", selector={"matchLabels": {"app": "x"}}),
        route("b", port=5432, protocol="TCP", selector={"matchLabels": {"app": "y"}})]), {
        "listeners": {"p5432": ("tcp", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"a": (True, "Accepted", 2), "b": (False, "ListenerConflict", 2)}}),
    ("same creation time: name breaks the tie", dict(routes=[
        route("zz", protocol="TCP"), route("aa")]), {
        "listeners": {"p8080": ("http", ["shop/aa/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"aa": (True, "Accepted", 2), "zz": (False, "ListenerConflict", 2)}}),
    ("the admin port is not available", dict(routes=[route("a", port=9901)]), {
        "listeners": {}, "clusters": {}, "routes": {"a": (False, "UnsupportedValue", 2)}}),
    ("a custom admin port moves the reservation", dict(routes=[route("a", port=9901)],
                                                       settings=RenderSettings(admin_port=15000)), {
        "listeners": {"p9901": ("http", ["shop/a/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"a": (True, "Accepted", 2)}}),
    ("a route being deleted is left out", dict(routes=[route("a", deleting=True), route("b", port=81)]), {
        "listeners": {"p81": ("http", ["shop/b/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"b": (True, "Accepted", 2)}}),
    ("load balancers get their own clusters", dict(routes=[route("a", rules=[
        rule({"name": "api", "port": 80}, loadBalancer={"type": "LeastRequest"}),
        rule({"name": "api", "port": 80}),
        rule({"name": "api", "port": 80}, loadBalancer={"type": "Random"})])]), {
        "listeners": {"p8080": ("http", ["shop/a/0", "shop/a/1", "shop/a/2"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"],
                     "shop/api:80@least-request": ["10.1.0.1:8080", "10.1.0.2:8080"],
                     "shop/api:80@random": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"a": (True, "Accepted", 6)}}),
    ("a rule the sidecar would reject leaves its route out, not the others", dict(routes=[
        route("ok", port=81),
        route("dup", rules=[rule({"name": "api", "port": 80},
                                 matches=[{"headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]}])])]), {
        "listeners": {"p81": ("http", ["shop/ok/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"dup": (False, "Invalid", 2), "ok": (True, "Accepted", 2)}}),
    ("a route that cannot be rendered at all", dict(routes=[route("bad", rules=[{"matches": []}]), route("ok", port=81)]), {
        "listeners": {"p81": ("http", ["shop/ok/0"])},
        "clusters": {"shop/api:80": ["10.1.0.1:8080", "10.1.0.2:8080"]},
        "routes": {"bad": (False, "Invalid", 0), "ok": (True, "Accepted", 2)}}),
]


@pytest.mark.parametrize("inputs,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_render_table(inputs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert summary(render(**inputs)) == expected


def test_weights_and_route_fields_reach_the_rule() -> None:
    r = render([route("a", hostnames=["shop.example.com", "*.example.com"], rules=[rule(
        {"name": "api", "port": 80, "weight": 90}, {"name": "api", "port": 80, "weight": 0},
        {"kind": "Local", "port": 9000, "weight": 10},
        matches=[{"path": {"type": "Exact", "value": "/x"}, "method": "POST",
                  "headers": [{"name": "x-canary", "value": "1", "type": "Exact"}]}],
        timeouts={"request": "1m30s", "backendRequest": "250ms"})])])
    (rl,) = r.config.listeners[0].rules
    assert [(b.cluster, b.weight) for b in rl.backends] == [("shop/api:80", 90), ("shop/api:80", 0), ("local:9000", 10)]
    assert rl.hostnames == ("shop.example.com", "*.example.com")
    assert rl.selector == LabelSelector(match_labels=(("app", "web"),))
    (m,) = rl.matches
    assert (m.path.type, m.path.value, m.method, m.headers[0].name) == ("Exact", "/x", "POST", "x-canary")
    assert (rl.timeouts.request_ms, rl.timeouts.backend_request_ms) == (90_000, 250)


def test_selector_expressions_are_carried() -> None:
    sel = {"matchLabels": {"tier": "edge", "app": "web"},
           "matchExpressions": [{"key": "track", "operator": "In", "values": ["canary", "stable"]},
                                {"key": "legacy", "operator": "DoesNotExist"}]}
    rl = render([route("a", selector=sel)]).config.listeners[0].rules[0]
    assert rl.selector == LabelSelector(
        match_labels=(("app", "web"), ("tier", "edge")),
        match_expressions=(LabelSelectorRequirement("track", "In", ("canary", "stable")),
                           LabelSelectorRequirement("legacy", "DoesNotExist")))


def test_each_pod_gets_the_rules_of_its_selector() -> None:
    cfg = render([route("a", selector={"matchLabels": {"app": "web"}}),
                  route("b", selector={"matchLabels": {"app": "admin"}}, port=81)]).config
    web = select_for_pod(cfg, {"app": "web"})
    assert [(lst.name, [r.name for r in lst.rules]) for lst in web.listeners] == [("p8080", ["shop/a/0"])]
    assert select_for_pod(cfg, {"app": "other"}).listeners == ()


@pytest.mark.parametrize("retry,expected", [
    ({"attempts": 2, "codes": [503, 502], "backoff": "100ms"}, (2, ("connect-failure", "reset", "503", "502"), "100ms")),
    ({"attempts": 1}, (1, ("connect-failure", "reset"), "25ms")),
    ({"attempts": 0, "codes": [503]}, (0, (), "25ms")),
    ({}, (0, (), "25ms")),
])
def test_retry_translation(retry: dict[str, Any], expected: tuple[Any, ...]) -> None:
    rl = render([route("a", rules=[rule({"name": "api", "port": 80}, retry=retry)])]).config.listeners[0].rules[0]
    assert (rl.retry.attempts, rl.retry.on, rl.retry.backoff) == expected


def test_tcp_rule_has_no_http_parts() -> None:
    rl = render([route("db", port=5432, protocol="TCP", hostnames=[],
                       rules=[rule({"name": "api", "port": 80}, retry={"attempts": 3})])]).config.listeners[0].rules[0]
    assert (rl.matches, rl.hostnames, rl.filters, rl.retry.on) == ((), (), (), ("connect-failure",))


def test_zero_timeouts_mean_no_timeout() -> None:
    rl = render([route("a", rules=[rule({"name": "api", "port": 80},
                                        timeouts={"request": "0s", "backendRequest": "2s"})])]).config.listeners[0].rules[0]
    assert (rl.timeouts.request, rl.timeouts.backend_request) == (None, "2s")


def test_filters() -> None:
    rl = render([route("a", rules=[rule({"name": "api", "port": 80},
        matches=[{"path": {"type": "PathPrefix", "value": "/api"}}],
        filters=[
            {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                "set": [{"name": "x-env", "value": "prod"}], "add": [{"name": "x-by", "value": "rl"}], "remove": ["x-debug"]}},
            {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["server"]}},
            {"type": "URLRewrite", "urlRewrite": {"hostname": "internal.example",
                                                  "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}},
        ])])]).config.listeners[0].rules[0]
    req, resp, rw = rl.filters
    assert [(h.name, h.value) for h in req.request_header_modifier.set] == [("x-env", "prod")]
    assert [(h.name, h.value) for h in req.request_header_modifier.add] == [("x-by", "rl")]
    assert req.request_header_modifier.remove == ("x-debug",)
    assert resp.response_header_modifier.remove == ("server",)
    assert (rw.url_rewrite.hostname, rw.url_rewrite.replace_prefix_match) == ("internal.example", "/")


def test_rewrite_with_exact_match_is_refused_by_the_sidecar_checks() -> None:
    r = render([route("a", rules=[rule({"name": "api", "port": 80}, matches=[{"path": {"type": "Exact", "value": "/x"}}],
        filters=[{"type": "URLRewrite", "urlRewrite": {"path": {"replacePrefixMatch": "/"}}}])])])
    facts = r.routes["a"]
    assert (facts.accepted, facts.reason) == (False, "Invalid")
    assert "replacePrefixMatch requires every match to be a PathPrefix" in facts.message
    assert r.config.listeners == ()


def test_ref_problems_are_reported_per_backend() -> None:
    r = render([route("a", rules=[rule({"name": "gone", "port": 80}), rule({"name": "api", "port": 81})])],
               services=[API, service("ext", (80, "", None), type_="ExternalName")])
    assert r.routes["a"].ref_problems == (
        "Service shop/gone not found",
        "port 81 not found on Service shop/api (ports: 80/TCP)",
    )
    assert r.routes["a"].resolved


def test_conflicting_routes_carry_the_holder_in_their_message() -> None:
    r = render([route("old"), route("new", protocol="TCP", created="2026-03-01T00:00:00Z")])
    assert "already served as HTTP by ProxyRoute old" in r.routes["new"].message
    assert r.routes["new"].rules == ()


def test_output_is_deterministic_whatever_the_input_order() -> None:
    routes = [route(f"r{i}", port=8000 + i % 3, created=f"2026-01-0{1 + i % 5}T00:00:00Z",
                    selector={"matchLabels": {"app": f"a{i}"}},
                    rules=[rule({"name": "api", "port": 80}), rule({"kind": "Local", "port": 9000 + i})])
              for i in range(9)]
    slices = [slice_("api", {"http": 8080}, ready=[f"10.1.0.{n}" for n in (5, 3, 9)], name="s1"),
              slice_("api", {"http": 8080}, ready=["10.1.0.1"], name="s2")]
    first = render(routes, slices=slices)
    for seed in range(5):
        shuffled = routes[:]
        random.Random(seed).shuffle(shuffled)
        again = render(shuffled, slices=list(reversed(slices)))
        assert again.config == first.config
        assert config_hash(again.config) == config_hash(first.config)
        assert list(again.routes) == list(first.routes)


def test_generation_is_left_to_the_configmap_step() -> None:
    assert render([route("a")]).config.generation == 0


def test_unready_slice_without_label_is_ignored() -> None:
    assert slice_info({"metadata": {"name": "x"}, "addressType": "IPv4", "endpoints": []}) is None


def test_referenced_services() -> None:
    routes = [route("a", rules=[rule({"name": "api", "port": 80}, {"kind": "Local", "port": 1})]),
              route("b", rules=[rule({"name": "db", "port": 5432, "kind": "Service"})])]
    assert referenced_services(routes) == {"api", "db"}


def test_config_fields_outside_routes_are_defaults() -> None:
    cfg = render([route("a")]).config
    assert dataclasses.replace(cfg, listeners=(), clusters=()) == Config()


def test_one_broken_route_among_many_costs_checks_linear_in_the_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken route is found by checking routes alone, not by re-checking the whole namespace
    once per route (quadratic: 100 routes took 20 s of the operator's event loop)."""
    import ringlane_operator.render as render_module

    checked: list[int] = []
    real = render_module._errors
    monkeypatch.setattr(render_module, "_errors", lambda parts, settings: (checked.append(len(parts)), real(parts, settings))[1])
    bad = route("bad", created="2025-06-01T00:00:00Z", rules=[rule({"name": "api", "port": 80}, matches=[
        {"headers": [{"name": "X-A", "value": "1"}, {"name": "x-a", "value": "2"}]}])])
    routes = [bad] + [route(f"r{i:02d}", port=1000 + i) for i in range(40)]
    r = render(routes)
    assert not r.routes["bad"].accepted and all(r.routes[f"r{i:02d}"].accepted for i in range(40))
    assert sum(checked) <= 3 * len(routes), sum(checked)  # all + each alone + the rest
