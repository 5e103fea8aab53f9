"""Valid sidecar configs: examples, defaults, round trip, hash, durations, selectors."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ringlane_sidecar.check import run_check
from ringlane_sidecar.config import (
    AdminSettings, Backend, Cluster, Config, ConfigError, Endpoint, EngineSettings, Filter,
    Header, HeaderModifier, LabelSelector, LabelSelectorRequirement, Limits, Listener, Match,
    PathMatch, Retry, Rule, Timeouts, UrlRewrite, config_hash, config_to_dict, load_config,
    parse_config, parse_duration_ms, select_for_pod, selector_matches, summarize,
)
from ringlane_sidecar.config.schema import load_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_FILES = sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("*.json")])

MINIMAL: dict[str, Any] = {
    "version": 1,
    "listeners": [{"name": "web", "address": "0.0.0.0:8080", "rules": [{"name": "r", "backends": [{"cluster": "c"}]}]}],
    "clusters": [{"name": "c", "endpoints": [{"address": "10.0.0.1:80"}]}],
}

CANONICAL_MINIMAL = (
    '{"admin":{"address":"0.0.0.0:9901"},"clusters":[{"connectTimeout":"1s","endpoints":[{"address":"10.0.0.1:80"}],'
    '"idleTimeout":"60s","loadBalancer":"round-robin","maxConnections":1024,"name":"c"}],'
    '"engine":{"kind":"auto","pin":true,"workers":"auto"},"generation":0,'
    '"limits":{"drainTimeout":"20s","idleTimeout":"60s","maxRequestHeaderBytes":65536,"maxRequestHeaders":100,'
    '"requestHeaderTimeout":"10s"},"listeners":[{"address":"0.0.0.0:8080","name":"web","protocol":"http",'
    '"rules":[{"backends":[{"cluster":"c","weight":1}],"filters":[],"hostnames":[],'
    '"matches":[{"headers":[],"path":{"type":"PathPrefix","value":"/"}}],"name":"r",'
    '"retry":{"attempts":0,"backoff":"25ms","on":[]},"timeouts":{}}]}],"version":1}'
)


def test_there_are_examples() -> None:
    assert {p.name for p in EXAMPLE_FILES} >= {"http-minimal.yaml", "http-minimal.json", "http-full.yaml", "tcp-relay.yaml"}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_example_loads_and_round_trips(path: Path) -> None:
    cfg = load_config(path)
    rendered = config_to_dict(cfg)
    assert json.loads(json.dumps(rendered)) == rendered  # JSON-ready
    assert parse_config(rendered) == cfg
    assert config_to_dict(parse_config(rendered)) == rendered
    assert config_hash(parse_config(rendered)) == config_hash(cfg)


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_check_accepts_example(path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_check(str(path), out, err) == 0
    assert err.getvalue() == ""
    assert out.getvalue() == summarize(load_config(path)) + "\n"


def test_json_variant_is_the_same_config() -> None:
    assert load_config(EXAMPLES / "http-minimal.json") == load_config(EXAMPLES / "http-minimal.yaml")


def test_summaries() -> None:
    assert summarize(load_config(EXAMPLES / "http-full.yaml")) == (
        "ok: generation 7, 1 listener (web 0.0.0.0:8080 http, 3 rules), 4 clusters, 5 endpoints"
    )
    assert summarize(load_config(EXAMPLES / "tcp-relay.yaml")) == (
        "ok: generation 3, 2 listeners (postgres 127.0.0.1:5432 tcp, 1 rule; redis [::]:6379 tcp, 1 rule), "
        "3 clusters, 3 endpoints"
    )
    assert summarize(parse_config({"version": 1, "listeners": [], "clusters": []})) == (
        "ok: generation 0, 0 listeners, 0 clusters, 0 endpoints"
    )


def test_defaults_applied() -> None:
    cfg = parse_config(MINIMAL)
    assert cfg.generation == 0
    assert cfg.engine == EngineSettings(kind="auto", workers="auto", pin=True)
    assert (cfg.admin.address, cfg.admin.host, cfg.admin.port) == ("0.0.0.0:9901", "0.0.0.0", 9901)
    assert cfg.limits == Limits()
    assert (cfg.limits.max_request_header_bytes, cfg.limits.max_request_headers) == (65536, 100)
    assert cfg.limits.max_request_body_bytes == 0  # unlimited: bodies stream
    assert (cfg.limits.request_header_timeout_ms, cfg.limits.idle_timeout_ms, cfg.limits.drain_timeout_ms) == (
        10_000, 60_000, 20_000)
    assert cfg.limits.tunnel_idle_timeout_ms == 3_600_000
    listener = cfg.listeners[0]
    assert (listener.protocol, listener.host, listener.port) == ("http", "0.0.0.0", 8080)
    rule = listener.rules[0]
    assert rule.selector is None and rule.hostnames == () and rule.filters == ()
    assert rule.matches == (Match(path=PathMatch(type="PathPrefix", value="/"), headers=(), method=None),)
    assert rule.backends == (Backend(cluster="c", weight=1),)
    assert (rule.timeouts.request, rule.timeouts.request_ms, rule.timeouts.backend_request_ms) == (None, None, None)
    assert (rule.retry.attempts, rule.retry.on, rule.retry.backoff, rule.retry.backoff_ms) == (0, (), "25ms", 25)
    cluster = cfg.clusters[0]
    assert (cluster.load_balancer, cluster.connect_timeout_ms, cluster.max_connections, cluster.idle_timeout_ms) == (
        "round-robin", 1000, 1024, 60_000)
    assert (cluster.endpoints[0].host, cluster.endpoints[0].port) == ("10.0.0.1", 80)


def test_tcp_rules_have_no_matches() -> None:
    cfg = load_config(EXAMPLES / "tcp-relay.yaml")
    assert all(rule.matches == () for listener in cfg.listeners for rule in listener.rules)


def test_full_example_fields() -> None:
    cfg = load_config(EXAMPLES / "http-full.yaml")
    rule = cfg.listeners[0].rules[0]
    assert rule.selector == LabelSelector(
        match_labels=(("app", "web"),),
        match_expressions=(
            LabelSelectorRequirement("tier", "In", ("frontend", "edge")),
            LabelSelectorRequirement("ringlane.io/legacy", "DoesNotExist", ()),
        ),
    )
    assert [(b.cluster, b.weight) for b in rule.backends] == [("shop/api:80", 90), ("shop/api-canary:80", 10)]
    assert (rule.timeouts.request_ms, rule.timeouts.backend_request_ms) == (5000, 2000)
    assert rule.retry == Retry(attempts=2, on=("connect-failure", "reset", "503"), backoff="100ms")
    assert rule.filters[0].request_header_modifier == HeaderModifier(
        set=(Header("x-env", "prod"),), add=(Header("x-forwarded-by", "ringlane"),), remove=("x-debug",))
    assert rule.filters[2] == Filter(url_rewrite=UrlRewrite(replace_prefix_match="/"))
    assert cfg.listeners[0].rules[1].matches[0].headers[0].value == "1"
    assert cfg.limits.idle_timeout_ms == 90_000
    assert cfg.clusters[0].endpoints[2].host == "fd00::12"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = {**schema["$defs"][node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _defaults(schema: dict[str, Any], node: dict[str, Any], value: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    node = _resolve(schema, node)
    found = [(path, node["default"], value)] if "default" in node else []
    if isinstance(value, dict):
        for key, sub in node.get("properties", {}).items():
            if key in value:
                found += _defaults(schema, sub, value[key], f"{path}.{key}")
    if isinstance(value, list) and "items" in node:
        for item in value:
            found += _defaults(schema, node["items"], item, f"{path}[]")
    return found


def test_schema_defaults_match_model_defaults() -> None:
    doc = copy.deepcopy(MINIMAL)
    doc["listeners"][0]["rules"][0]["matches"] = [{"path": {}, "headers": [{"name": "a", "value": "b"}]}]
    schema = load_schema()
    found = _defaults(schema, schema, config_to_dict(parse_config(doc)))
    assert len(found) >= 20
    assert [(p, d) for p, d, _ in found] == [(p, v) for p, _, v in found]


def test_schema_has_id_title_and_descriptions() -> None:
    schema = load_schema()
    assert schema["$id"].endswith("sidecar-config-v1.json") and schema["title"]
    for name, node in schema["properties"].items():
        assert node.get("description"), name
    for name, node in schema["$defs"].items():
        assert node.get("description"), name


def test_round_trip_of_hand_built_config() -> None:
    cfg = Config(
        generation=3,
        engine=EngineSettings(kind="epoll", workers=2, pin=False),
        admin=AdminSettings(address="127.0.0.1:9902"),
        listeners=(Listener(name="web", address="[::]:8080", rules=(Rule(
            name="ns/r/0",
            backends=(Backend(cluster="ns/svc:80"),),
            matches=(Match(path=PathMatch("Exact", "/x"), method="POST"),),
            timeouts=Timeouts(request="1m30s"),
            filters=(Filter(response_header_modifier=HeaderModifier(remove=("server",))),
                     Filter(url_rewrite=UrlRewrite(hostname="internal.example"))),
        ),)),),
        clusters=(Cluster(name="ns/svc:80", endpoints=(Endpoint("[fd00::1]:80"),), connect_timeout="250ms"),),
    )
    assert cfg.listeners[0].rules[0].timeouts.request_ms == 90_000
    assert cfg.clusters[0].connect_timeout_ms == 250
    assert parse_config(config_to_dict(cfg)) == cfg


def test_model_is_frozen_and_validates_derived_fields() -> None:
    cfg = parse_config(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.generation = 2  # type: ignore[misc]
    with pytest.raises(ValueError, match="invalid address"):
        Endpoint("example.com:80")
    with pytest.raises(ValueError, match="invalid duration"):
        Timeouts(request="5 sec")
    with pytest.raises(ValueError, match="exactly one"):
        Filter()
    with pytest.raises(ValueError, match="exactly one"):
        Filter(request_header_modifier=HeaderModifier(), url_rewrite=UrlRewrite(hostname="a"))
    assert hash(cfg) == hash(parse_config(copy.deepcopy(MINIMAL)))


def test_tunnel_idle_timeout_zero_means_never_and_only_a_change_is_rendered() -> None:
    for text, ms in (("0s", 0), ("90m", 5_400_000)):
        cfg = parse_config({**MINIMAL, "limits": {"tunnelIdleTimeout": text}})
        assert cfg.limits.tunnel_idle_timeout_ms == ms
        assert config_to_dict(cfg)["limits"]["tunnelIdleTimeout"] == text
        assert parse_config(config_to_dict(cfg)) == cfg
    # The default is left out, like maxRequestBodyBytes: existing configs keep their hash, and
    # sidecars that predate the field still accept what an operator renders.
    explicit = parse_config({**MINIMAL, "limits": {"tunnelIdleTimeout": "1h"}})
    assert "tunnelIdleTimeout" not in config_to_dict(explicit)["limits"]
    assert config_hash(explicit) == config_hash(parse_config(MINIMAL))


def test_hash_is_stable() -> None:
    cfg = parse_config(MINIMAL)
    digest = config_hash(cfg)
    assert len(digest) == 64 and int(digest, 16) >= 0
    # The canonical form is a contract between operator and sidecar: changing it changes every hash.
    assert digest == hashlib.sha256(CANONICAL_MINIMAL.encode()).hexdigest()
    assert digest == "5d5cd2897b5734ce88a617a5dfbef388ac6f6c32c52e67e3a992e8a4db107e12"
    reordered = json.loads(json.dumps(MINIMAL, sort_keys=True))
    assert list(reordered) != list(MINIMAL)
    assert config_hash(parse_config(reordered)) == digest
    assert config_hash(parse_config({**MINIMAL, "generation": 1})) != digest
    assert config_hash(load_config(EXAMPLES / "http-minimal.yaml")) == config_hash(load_config(EXAMPLES / "http-minimal.json"))


def test_integral_floats_and_yaml_12_scalars(tmp_path: Path) -> None:
    assert parse_config({**MINIMAL, "generation": 7.0}).generation == 7
    assert type(parse_config({**MINIMAL, "generation": 7.0}).generation) is int
    path = tmp_path / "c.yaml"
    path.write_text(
        "version: 1\ngeneration: 010\nlisteners:\n- name: web\n  address: 0.0.0.0:8080\n  rules:\n"
        "  - name: r\n    backends: [{cluster: c}]\n    retry: {attempts: 1, on: [reset]}\n"
        "clusters: [{name: c, endpoints: []}]\n"
    )
    cfg = load_config(path)
    assert cfg.generation == 10  # YAML 1.2: decimal, not octal 8
    assert cfg.listeners[0].rules[0].retry.on == ("reset",)  # `on` is a key, not YAML 1.1 True


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0s", 0), ("1ms", 1), ("250ms", 250), ("5s", 5000), ("5m", 300_000), ("1h", 3_600_000),
        ("1m30s", 90_000), ("1h30m30s500ms", 5_430_500), ("01h", 3_600_000), ("00060m", 3_600_000),
        ("1s500ms", 1500), ("1s1s", 2000), ("99999h", 99999 * 3_600_000), ("10ms5s", 5010),
    ],
)
def test_parse_duration_ms(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    "text",
    ["", "5", "s", "5 sec", "5 s", "1.5s", "-1s", "+1s", "1d", "1us", "1ns", "5S", "5Ms", "100000s",
     "1h1m1s1ms1s", " 5s", "5s ", "5s\n", "1h 30m", "P1D"],
)
def test_parse_duration_ms_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"invalid duration .* \(use e\.g\. 250ms, 5s, 1m30s\)"):
        parse_duration_ms(text)


def _sel(labels: dict[str, str] | None = None, *exprs: tuple[str, str, tuple[str, ...]]) -> LabelSelector:
    return LabelSelector(
        match_labels=tuple((labels or {}).items()),
        match_expressions=tuple(LabelSelectorRequirement(k, op, v) for k, op, v in exprs),  # type: ignore[arg-type]
    )


POD = {"app": "web", "tier": "frontend", "zone": "a"}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (None, {}, True),
        (None, POD, True),
        (_sel(), {}, True),  # empty selector: every pod, like Kubernetes
        (_sel({"app": "web"}), POD, True),
        (_sel({"app": "web", "zone": "a"}), POD, True),
        (_sel({"app": "api"}), POD, False),
        (_sel({"missing": ""}), POD, False),
        (_sel(None, ("tier", "In", ("frontend", "edge"))), POD, True),
        (_sel(None, ("tier", "In", ("edge",))), POD, False),
        (_sel(None, ("missing", "In", ("x",))), POD, False),
        (_sel(None, ("tier", "NotIn", ("edge",))), POD, True),
        (_sel(None, ("tier", "NotIn", ("frontend",))), POD, False),
        (_sel(None, ("missing", "NotIn", ("x",))), POD, True),  # absent key satisfies NotIn
        (_sel(None, ("zone", "Exists", ())), POD, True),
        (_sel(None, ("missing", "Exists", ())), POD, False),
        (_sel(None, ("missing", "DoesNotExist", ())), POD, True),
        (_sel(None, ("zone", "DoesNotExist", ())), POD, False),
        (_sel({"app": "web"}, ("zone", "In", ("b",))), POD, False),  # labels AND expressions
        (_sel({"app": "web"}, ("zone", "In", ("a",)), ("tier", "Exists", ())), POD, True),
    ],
)
def test_selector_matches(selector: LabelSelector | None, labels: dict[str, str], expected: bool) -> None:
    assert selector_matches(selector, labels) is expected


def _rule_names(cfg: Config) -> dict[str, list[str]]:
    return {listener.name: [rule.name for rule in listener.rules] for listener in cfg.listeners}


def test_select_for_pod() -> None:
    cfg = load_config(EXAMPLES / "http-full.yaml")
    before = copy.deepcopy(cfg)
    frontend = select_for_pod(cfg, {"app": "web", "tier": "frontend"})
    assert _rule_names(frontend) == {"web": ["shop/api/0", "shop/api/1", "shop/web/0"]}
    legacy = select_for_pod(cfg, {"app": "web", "tier": "frontend", "ringlane.io/legacy": "true"})
    assert _rule_names(legacy) == {"web": ["shop/api/1", "shop/web/0"]}
    assert _rule_names(select_for_pod(cfg, {"app": "batch"})) == {"web": ["shop/web/0"]}
    assert frontend.clusters == cfg.clusters and frontend.generation == cfg.generation
    assert cfg == before  # pure: the input is untouched
    assert parse_config(config_to_dict(frontend)) == frontend  # still a valid config


def test_select_for_pod_drops_listeners_left_without_rules() -> None:
    cfg = load_config(EXAMPLES / "tcp-relay.yaml")
    assert _rule_names(select_for_pod(cfg, {})) == {"postgres": ["db/postgres/0"]}
    assert _rule_names(select_for_pod(cfg, {"cache": ""})) == {"postgres": ["db/postgres/0"], "redis": ["db/redis/0"]}
    empty = parse_config({**MINIMAL, "listeners": [{"name": "idle", "address": "0.0.0.0:81", "rules": []}]})
    assert select_for_pod(empty, {}).listeners == ()


def test_config_package_import_stays_light() -> None:
    code = "import sys, ringlane_sidecar.config; print('jsonschema' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(ROOT / "sidecar")})
    assert result.stdout.strip() == "False"


def test_load_config_accepts_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(MINIMAL).encode())
    assert load_config(path) == parse_config(MINIMAL)


def test_config_error_is_an_exception_with_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({})
    assert caught.value.errors == ["version: required", "listeners: required", "clusters: required"]
    assert str(caught.value) == "\n".join(caught.value.errors)
