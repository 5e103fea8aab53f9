"""Invalid sidecar configs: every case asserts the exact "path: message" errors."""
from __future__ import annotations

import copy
import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ringlane_sidecar.check import run_check
from ringlane_sidecar.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

Doc = dict[str, Any]

BASE: Doc = {
    "version": 1,
    "generation": 7,
    "engine": {"kind": "auto", "workers": "auto", "pin": True},
    "admin": {"address": "0.0.0.0:9901"},
    "listeners": [
        {
            "name": "web",
            "address": "0.0.0.0:8080",
            "protocol": "http",
            "rules": [
                {
                    "name": "shop/api/0",
                    "selector": {
                        "matchLabels": {"app": "web"},
                        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}],
                    },
                    "hostnames": ["shop.example.com", "*.example.com"],
                    "matches": [
                        {
                            "path": {"type": "PathPrefix", "value": "/api"},
                            "headers": [{"name": "x-canary", "value": "1"}],
                            "method": "GET",
                        }
                    ],
                    "backends": [{"cluster": "shop/api:80", "weight": 90}, {"cluster": "shop/api-canary:80", "weight": 10}],
                    "timeouts": {"request": "5s", "backendRequest": "2s"},
                    "retry": {"attempts": 2, "on": ["connect-failure", "503"], "backoff": "100ms"},
                    "filters": [
                        {"requestHeaderModifier": {"set": [{"name": "x-env", "value": "prod"}], "remove": ["x-debug"]}},
                        {"urlRewrite": {"path": {"replacePrefixMatch": "/"}}},
                    ],
                },
                {"name": "shop/web/0", "backends": [{"cluster": "shop/api:80"}]},
            ],
        },
        {
            "name": "db",
            "address": "127.0.0.1:5432",
            "protocol": "tcp",
            "rules": [{"name": "db/pg/0", "backends": [{"cluster": "db/pg:5432"}], "retry": {"attempts": 1, "on": ["connect-failure"]}}],
        },
    ],
    "clusters": [
        {"name": "shop/api:80", "endpoints": [{"address": "10.1.2.3:8080"}, {"address": "10.1.2.4:8080"}]},
        {"name": "shop/api-canary:80", "endpoints": [{"address": "10.1.3.1:8080"}]},
        {"name": "db/pg:5432", "endpoints": [{"address": "[fd00::5]:5432"}]},
    ],
}

L0 = "listeners[0]"
R0 = "listeners[0].rules[0]"
TCP = "listeners[1].rules[0]"


def web(d: Doc) -> Doc:
    return d["listeners"][0]


def rule(d: Doc) -> Doc:
    return d["listeners"][0]["rules"][0]


def tcp_rule(d: Doc) -> Doc:
    return d["listeners"][1]["rules"][0]


def case(name: str, mutate: Callable[[Doc], object], *errors: str) -> Any:
    return pytest.param(mutate, list(errors), id=name)


def _set(target: Callable[[Doc], Doc], **fields: Any) -> Callable[[Doc], object]:
    return lambda d: target(d).update(fields)


def _pop(target: Callable[[Doc], Doc], key: str) -> Callable[[Doc], object]:
    return lambda d: target(d).pop(key)


def _modifier(d: Doc) -> Doc:
    return rule(d)["filters"][0]["requestHeaderModifier"]


CASES = [
    # unknown fields and required fields
    case("unknown-field", _set(web, colour="red"), f"{L0}.colour: unknown field"),
    case("unknown-top-level-field", lambda d: d.update(listener=[]), "listener: unknown field"),
    case("unknown-nested-field", _set(_modifier, replace=[]), f"{R0}.filters[0].requestHeaderModifier.replace: unknown field"),
    case("missing-address", _pop(web, "address"), f"{L0}.address: required"),
    case("missing-version", lambda d: d.pop("version"), "version: required"),
    case("missing-endpoints", lambda d: d["clusters"][1].pop("endpoints"), "clusters[1].endpoints: required"),
    case("missing-header-value", lambda d: rule(d)["matches"][0]["headers"][0].pop("value"),
         f"{R0}.matches[0].headers[0].value: required"),
    # types, enums, ranges
    case("generation-string", lambda d: d.update(generation="7"), "generation: expected integer, got string"),
    case("generation-negative", lambda d: d.update(generation=-1), "generation: must be at least 0, got -1"),
    case("generation-bool", lambda d: d.update(generation=True), "generation: expected integer, got boolean"),
    case("version-2", lambda d: d.update(version=2), "version: unsupported version 2 (this sidecar reads version 1)"),
    case("engine-kind", lambda d: d["engine"].update(kind="fast"),
         'engine.kind: must be one of auto, io_uring, epoll, got "fast"'),
    case("workers-zero", lambda d: d["engine"].update(workers=0), "engine.workers: must be at least 1, got 0"),
    case("workers-too-many", lambda d: d["engine"].update(workers=300), "engine.workers: must be at most 256, got 300"),
    case("workers-word", lambda d: d["engine"].update(workers="many"),
         'engine.workers: expected "auto" or an integer from 1 to 256, got "many"'),
    case("pin-yes", lambda d: d["engine"].update(pin="yes"), "engine.pin: expected boolean, got string"),
    case("engine-not-mapping", lambda d: d.update(engine=["auto"]), "engine: expected mapping, got list"),
    case("listeners-not-list", lambda d: d.update(listeners={"web": {}}), "listeners: expected list, got mapping"),
    case("protocol-udp", _set(web, protocol="udp"), f'{L0}.protocol: must be one of http, tcp, got "udp"'),
    case("limits-out-of-range", lambda d: d.update(limits={"maxRequestHeaderBytes": 512, "maxRequestHeaders": 1001}),
         "limits.maxRequestHeaderBytes: must be at least 1024, got 512",
         "limits.maxRequestHeaders: must be at most 1000, got 1001"),
    case("max-connections-zero", lambda d: d["clusters"][0].update(maxConnections=0),
         "clusters[0].maxConnections: must be at least 1, got 0"),
    case("load-balancer", lambda d: d["clusters"][0].update(loadBalancer="ring-hash"),
         'clusters[0].loadBalancer: must be one of round-robin, least-request, random, got "ring-hash"'),
    # names
    case("listener-name-pattern", _set(web, name="Web_1"),
         f'{L0}.name: invalid listener name "Web_1" (up to 63 lowercase letters, digits and \'-\', '
         "starting and ending with a letter or digit)"),
    case("listener-name-trailing-newline", _set(web, name="web\n"),
         f'{L0}.name: invalid listener name "web\\n" (up to 63 lowercase letters, digits and \'-\', '
         "starting and ending with a letter or digit)"),
    case("rule-name-empty", _set(rule, name=""), f"{R0}.name: must not be empty"),
    case("rule-name-control-char", _set(rule, name="a\tb"), f'{R0}.name: invalid name "a\\tb" (printable ASCII characters only)'),
    case("duplicate-listener-name", lambda d: d["listeners"][1].update(name="web"),
         'listeners[1].name: duplicate listener name "web" (first at listeners[0].name)'),
    case("duplicate-rule-name", lambda d: web(d)["rules"][1].update(name="shop/api/0"),
         f'{L0}.rules[1].name: duplicate rule name "shop/api/0" (first at {R0}.name)'),
    case("duplicate-cluster-name", lambda d: d["clusters"].append({"name": "shop/api:80", "endpoints": []}),
         'clusters[3].name: duplicate cluster name "shop/api:80" (first at clusters[0].name)'),
    # addresses
    case("duplicate-listener-address", lambda d: d["listeners"][1].update(address="0.0.0.0:8080"),
         'listeners[1].address: duplicate address "0.0.0.0:8080" (already used by listeners[0].address)'),
    case("overlapping-wildcard-address", lambda d: d["listeners"][1].update(address="10.0.0.1:8080"),
         'listeners[1].address: address "10.0.0.1:8080" overlaps "0.0.0.0:8080" of listeners[0].address '
         "(a wildcard address takes the port on every interface)"),
    case("ipv6-wildcard-overlaps-ipv4", lambda d: d["listeners"][1].update(address="[::]:8080"),
         'listeners[1].address: address "[::]:8080" overlaps "0.0.0.0:8080" of listeners[0].address '
         "(a wildcard address takes the port on every interface)"),
    case("listener-on-admin-port", _set(web, address="0.0.0.0:9901"),
         f'{L0}.address: duplicate address "0.0.0.0:9901" (already used by admin.address)'),
    case("address-hostname", _set(web, address="localhost:8080"),
         f'{L0}.address: invalid address "localhost:8080" (use an IP and a port, e.g. 10.0.0.1:8080 or [::1]:8080)'),
    case("address-port-0", _set(web, address="0.0.0.0:0"),
         f'{L0}.address: invalid address "0.0.0.0:0": port must be 1..65535, got 0'),
    case("address-port-70000", _set(web, address="0.0.0.0:70000"),
         f'{L0}.address: invalid address "0.0.0.0:70000": port must be 1..65535, got 70000'),
    case("address-no-port", lambda d: d.update(admin={"address": "127.0.0.1"}),
         'admin.address: invalid address "127.0.0.1" (use an IP and a port, e.g. 10.0.0.1:8080 or [::1]:8080)'),
    case("address-bad-ipv4", _set(web, address="256.0.0.1:80"),
         f'{L0}.address: invalid address "256.0.0.1:80": 256.0.0.1 is not a valid IPv4 address'),
    case("ipv6-without-brackets", _set(web, address="::1:8080"),
         f'{L0}.address: invalid address "::1:8080" (use an IP and a port, e.g. 10.0.0.1:8080 or [::1]:8080)'),
    case("ipv6-unclosed-bracket", _set(web, address="[::1:8080"),
         f'{L0}.address: invalid address "[::1:8080" (use an IP and a port, e.g. 10.0.0.1:8080 or [::1]:8080)'),
    case("ipv6-invalid", _set(web, address="[::1::2]:80"),
         f'{L0}.address: invalid address "[::1::2]:80": ::1::2 is not a valid IPv6 address'),
    case("ipv4-in-brackets", lambda d: d["clusters"][0]["endpoints"][0].update(address="[10.1.2.3]:8080"),
         'clusters[0].endpoints[0].address: invalid address "[10.1.2.3]:8080": 10.1.2.3 is not a valid IPv6 address'),
    case("duplicate-endpoint", lambda d: d["clusters"][2]["endpoints"].append({"address": "[fd00:0::5]:5432"}),
         'clusters[2].endpoints[1].address: duplicate endpoint "[fd00:0::5]:5432" (first at clusters[2].endpoints[0].address)'),
    # backends
    case("unknown-cluster", lambda d: web(d)["rules"][1]["backends"][0].update(cluster="shop/api:81"),
         f'{L0}.rules[1].backends[0].cluster: unknown cluster "shop/api:81"'),
    case("zero-total-weight", lambda d: [b.update(weight=0) for b in rule(d)["backends"]],
         f"{R0}.backends: total weight must be greater than 0"),
    case("weight-too-big", lambda d: rule(d)["backends"][0].update(weight=1_000_001),
         f"{R0}.backends[0].weight: must be at most 1000000, got 1000001"),
    case("no-backends", _set(rule, backends=[]), f"{R0}.backends: must not be empty"),
    # durations and timeouts
    case("bad-duration", lambda d: rule(d)["timeouts"].update(request="5 sec"),
         f'{R0}.timeouts.request: invalid duration "5 sec" (use e.g. 250ms, 5s, 1m30s)'),
    case("fractional-duration", lambda d: d["clusters"][0].update(connectTimeout="1.5s"),
         'clusters[0].connectTimeout: invalid duration "1.5s" (use e.g. 250ms, 5s, 1m30s)'),
    case("duration-number", lambda d: d.update(limits={"drainTimeout": 20}),
         "limits.drainTimeout: expected string, got integer (put it in quotes)"),
    case("zero-timeout", lambda d: rule(d)["timeouts"].update(request="0s"), f"{R0}.timeouts.request: must be greater than 0"),
    case("zero-connect-timeout", lambda d: d["clusters"][0].update(connectTimeout="0ms"),
         "clusters[0].connectTimeout: must be greater than 0"),
    case("duration-past-32-bit-ms", lambda d: d.update(limits={"idleTimeout": "1194h"}),
         "limits.idleTimeout: must be at most 1193h (got 1194h)"),
    case("tunnel-idle-timeout-past-32-bit-ms", lambda d: d.update(limits={"tunnelIdleTimeout": "1194h"}),
         "limits.tunnelIdleTimeout: must be at most 1193h (got 1194h)"),
    case("drain-timeout-past-32-bit-ms", lambda d: d.update(limits={"drainTimeout": "99999h"}),
         "limits.drainTimeout: must be at most 1193h (got 99999h)"),
    case("cluster-timeouts-past-32-bit-ms", lambda d: d["clusters"][0].update(connectTimeout="1193h1m", idleTimeout="5000h"),
         "clusters[0].connectTimeout: must be at most 1193h (got 1193h1m)",
         "clusters[0].idleTimeout: must be at most 1193h (got 5000h)"),
    case("rule-timeouts-past-32-bit-ms", lambda d: rule(d)["timeouts"].update(request="2000h", backendRequest="2000h"),
         f"{R0}.timeouts.request: must be at most 1193h (got 2000h)",
         f"{R0}.timeouts.backendRequest: must be at most 1193h (got 2000h)"),
    case("retry-backoff-past-32-bit-ms", lambda d: rule(d)["retry"].update(backoff="99999h99999h"),
         f"{R0}.retry.backoff: must be at most 1193h (got 99999h99999h)"),
    case("backend-request-longer", lambda d: rule(d)["timeouts"].update(request="1s", backendRequest="1500ms"),
         f"{R0}.timeouts.backendRequest: must not exceed timeouts.request (1500ms > 1s)"),
    # tcp listeners
    case("tcp-two-rules", lambda d: d["listeners"][1]["rules"].append({"name": "db/pg/1", "backends": [{"cluster": "db/pg:5432"}]}),
         "listeners[1].rules: a tcp listener takes exactly one rule, got 2"),
    case("tcp-no-rules", lambda d: d["listeners"][1].update(rules=[]), "listeners[1].rules: a tcp listener takes exactly one rule, got 0"),
    case("tcp-matches", _set(tcp_rule, matches=[{"path": {"value": "/"}}]), f"{TCP}.matches: not allowed on a tcp listener"),
    case("tcp-http-only-fields", _set(tcp_rule, hostnames=["db.example.com"], filters=[{"urlRewrite": {"hostname": "x"}}]),
         f"{TCP}.hostnames: not allowed on a tcp listener", f"{TCP}.filters: not allowed on a tcp listener"),
    case("tcp-retry-on-status", lambda d: tcp_rule(d)["retry"].update(on=["connect-failure", "503"]),
         f'{TCP}.retry.on[1]: "503" is not allowed on a tcp listener (only "connect-failure")'),
    # matches and headers
    case("rewrite-needs-path-prefix", lambda d: rule(d)["matches"][0]["path"].update(type="Exact"),
         f"{R0}.filters[1].urlRewrite.path: replacePrefixMatch requires every match to be a PathPrefix, "
         "but matches[0].path.type is Exact"),
    case("path-without-slash", lambda d: rule(d)["matches"][0]["path"].update(value="api"),
         f'{R0}.matches[0].path.value: invalid path "api" (must start with "/" and use only URL path characters)'),
    case("path-type", lambda d: rule(d)["matches"][0]["path"].update(type="RegularExpression"),
         f'{R0}.matches[0].path.type: must be one of Exact, PathPrefix, got "RegularExpression"'),
    case("header-match-regex", lambda d: rule(d)["matches"][0]["headers"][0].update(type="RegularExpression"),
         f'{R0}.matches[0].headers[0].type: must be one of Exact, got "RegularExpression"'),
    case("bad-header-name", lambda d: rule(d)["matches"][0]["headers"][0].update(name="x canary"),
         f"{R0}.matches[0].headers[0].name: invalid header name \"x canary\" (letters, digits and !#$%&'*+-.^_`|~ only)"),
    case("header-value-crlf", lambda d: rule(d)["matches"][0]["headers"][0].update(value="1\r\nx-evil: 1"),
         f'{R0}.matches[0].headers[0].value: invalid header value "1\\r\\nx-evil: 1" (no CR, LF, other control characters or unpaired surrogates)'),
    case("header-value-number", lambda d: rule(d)["matches"][0]["headers"][0].update(value=1),
         f"{R0}.matches[0].headers[0].value: expected string, got integer (put it in quotes)"),
    case("duplicate-header-match", lambda d: rule(d)["matches"][0]["headers"].append({"name": "X-Canary", "value": "2"}),
         f'{R0}.matches[0].headers[1].name: duplicate header "X-Canary" '
         f"(first at {R0}.matches[0].headers[0].name; names are case-insensitive)"),
    case("method", lambda d: rule(d)["matches"][0].update(method="FETCH"),
         f'{R0}.matches[0].method: must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH, got "FETCH"'),
    # filters
    case("duplicate-header-in-modifier", lambda d: _modifier(d)["remove"].append("X-Env"),
         f'{R0}.filters[0].requestHeaderModifier.remove[1]: duplicate header "X-Env" '
         f"(first at {R0}.filters[0].requestHeaderModifier.set[0].name; "
         "set and remove may name a header once, case-insensitively)"),
    case("two-kinds-in-one-filter", lambda d: rule(d)["filters"][1].update(responseHeaderModifier={"remove": ["server"]}),
         f"{R0}.filters[1]: set exactly one of requestHeaderModifier, responseHeaderModifier, urlRewrite"),
    case("response-modifier-framing-headers",
         lambda d: rule(d)["filters"].append({"responseHeaderModifier": {
             "set": [{"name": "Content-Length", "value": "0"}], "add": [{"name": "x-ok", "value": "1"}],
             "remove": ["transfer-encoding", "Connection"]}}),
         f'{R0}.filters[2].responseHeaderModifier.set[0].name: "Content-Length" frames the body or the connection: '
         "the proxy manages it and a responseHeaderModifier cannot change it",
         f'{R0}.filters[2].responseHeaderModifier.remove[0]: "transfer-encoding" frames the body or the connection: '
         "the proxy manages it and a responseHeaderModifier cannot change it",
         f'{R0}.filters[2].responseHeaderModifier.remove[1]: "Connection" frames the body or the connection: '
         "the proxy manages it and a responseHeaderModifier cannot change it"),
    case("request-modifier-framing-headers",
         lambda d: _modifier(d)["set"].append({"name": "Transfer-Encoding", "value": "chunked"}),
         f'{R0}.filters[0].requestHeaderModifier.set[1].name: "Transfer-Encoding" frames the body or the '
         "connection: the proxy manages it and a requestHeaderModifier cannot change it"),
    case("hostname-rewrite-and-host-edit",
         lambda d: (rule(d)["filters"][1]["urlRewrite"].update(hostname="internal"),
                    _modifier(d)["set"].append({"name": "Host", "value": "x"})),
         f"{R0}.filters[0].requestHeaderModifier.set[1].name: the rule's urlRewrite.hostname sets Host: "
         "a requestHeaderModifier cannot also edit it"),
    case("request-modifier-adds-or-removes-host",
         lambda d: (_modifier(d).setdefault("add", []).append({"name": "HOST", "value": "x"}),
                    _modifier(d)["remove"].append("host")),
         f'{R0}.filters[0].requestHeaderModifier.remove[1]: "host": a request has exactly one Host; a '
         "requestHeaderModifier can set it, not add or remove it",
         f'{R0}.filters[0].requestHeaderModifier.add[0].name: "HOST": a request has exactly one Host; a '
         "requestHeaderModifier can set it, not add or remove it"),
    case("limits-body-negative", lambda d: d.update(limits={"maxRequestBodyBytes": -1}),
         "limits.maxRequestBodyBytes: must be at least 0, got -1"),
    case("empty-filter", lambda d: rule(d)["filters"].append({}),
         f"{R0}.filters[2]: set exactly one of requestHeaderModifier, responseHeaderModifier, urlRewrite"),
    case("duplicate-filter-kind", lambda d: rule(d)["filters"].append({"urlRewrite": {"hostname": "internal"}}),
         f"{R0}.filters[2]: duplicate urlRewrite filter (first at {R0}.filters[1]; one of each kind per rule)"),
    case("empty-url-rewrite", lambda d: rule(d)["filters"][1].update(urlRewrite={}), f"{R0}.filters[1].urlRewrite: set hostname, path or both"),
    case("rewrite-hostname-wildcard", lambda d: rule(d)["filters"][1]["urlRewrite"].update(hostname="*.example.com"),
         f'{R0}.filters[1].urlRewrite.hostname: invalid hostname "*.example.com" (a lowercase DNS name; no wildcard, no port)'),
    # selectors
    case("selector-operator", lambda d: rule(d)["selector"]["matchExpressions"][0].update(operator="Equals"),
         f'{R0}.selector.matchExpressions[0].operator: must be one of In, NotIn, Exists, DoesNotExist, got "Equals"'),
    case("selector-in-without-values", lambda d: rule(d)["selector"]["matchExpressions"][0].pop("values"),
         f"{R0}.selector.matchExpressions[0].values: required for operator In"),
    case("selector-notin-empty-values", lambda d: rule(d)["selector"]["matchExpressions"][0].update(operator="NotIn", values=[]),
         f"{R0}.selector.matchExpressions[0].values: must not be empty for operator NotIn"),
    case("selector-exists-with-values", lambda d: rule(d)["selector"]["matchExpressions"][0].update(operator="Exists"),
         f"{R0}.selector.matchExpressions[0].values: must be empty for operator Exists"),
    case("selector-bad-label-key", lambda d: rule(d)["selector"]["matchLabels"].update({"Bad Key": "x"}),
         f'{R0}.selector.matchLabels["Bad Key"]: invalid label key "Bad Key" (e.g. app or app.kubernetes.io/name)'),
    case("selector-bad-label-value", lambda d: rule(d)["selector"]["matchLabels"].update({"app.kubernetes.io/name": "-x"}),
         f'{R0}.selector.matchLabels["app.kubernetes.io/name"]: invalid label value "-x" '
         "(up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"),
    # hostnames
    case("hostname-wildcard-in-middle", _set(rule, hostnames=["shop.*.com"]),
         f'{R0}.hostnames[0]: invalid hostname "shop.*.com" (a lowercase DNS name, optionally starting with "*."; no port)'),
    case("hostname-with-port", _set(rule, hostnames=["shop.example.com:8080"]),
         f'{R0}.hostnames[0]: invalid hostname "shop.example.com:8080" (a lowercase DNS name, optionally starting with "*."; no port)'),
    case("hostname-ip", _set(rule, hostnames=["10.0.0.1"]), f'{R0}.hostnames[0]: "10.0.0.1" is an IP address; hostnames must be DNS names'),
    case("duplicate-hostname", _set(rule, hostnames=["a.example.com", "a.example.com"]),
         f'{R0}.hostnames[1]: duplicate hostname "a.example.com" (first at {R0}.hostnames[0])'),
    # retries
    case("retry-code-out-of-range", lambda d: rule(d)["retry"].update(on=["404", "600"]),
         f'{R0}.retry.on[0]: must be "connect-failure", "reset" or a status code from "500" to "599", got "404"',
         f'{R0}.retry.on[1]: must be "connect-failure", "reset" or a status code from "500" to "599", got "600"'),
    case("retry-code-unquoted", lambda d: rule(d)["retry"].update(on=[503]),
         f'{R0}.retry.on[0]: expected string, got integer (quote status codes, e.g. "503")'),
    case("retry-attempts", lambda d: rule(d)["retry"].update(attempts=11), f"{R0}.retry.attempts: must be at most 10, got 11"),
    case("retry-duplicate", lambda d: rule(d)["retry"].update(on=["503", "503"]),
         f'{R0}.retry.on[1]: duplicate retry condition "503" (first at {R0}.retry.on[0])'),
    # collecting: every error at once, in document order, nothing cascades
    case(
        "many-errors-at-once",
        lambda d: (
            d.update(generation="7"),
            web(d).update(colour="red"),
            web(d).pop("address"),
            rule(d)["timeouts"].update(request="5 sec"),
            web(d)["rules"][1]["backends"][0].update(cluster="shop/api:81"),
            d["clusters"][0].update(loadBalancer="fastest"),
        ),
        "generation: expected integer, got string",
        f"{L0}.address: required",
        f'{R0}.timeouts.request: invalid duration "5 sec" (use e.g. 250ms, 5s, 1m30s)',
        f'{L0}.rules[1].backends[0].cluster: unknown cluster "shop/api:81"',
        f"{L0}.colour: unknown field",
        'clusters[0].loadBalancer: must be one of round-robin, least-request, random, got "fastest"',
    ),
    case(
        "no-cascade-from-bad-cluster-name",  # backends naming it must not also say "unknown cluster"
        lambda d: d["clusters"][0].update(name=80),
        "clusters[0].name: expected string, got integer (put it in quotes)",
    ),
    case(
        "no-cascade-from-bad-duration",  # backendRequest vs an unparsable request: one error only
        lambda d: rule(d)["timeouts"].update(request="soon", backendRequest="1h"),
        f'{R0}.timeouts.request: invalid duration "soon" (use e.g. 250ms, 5s, 1m30s)',
    ),
    case("non-string-key", lambda d: d["engine"].update({1: "x"}), "engine: field names must be strings, got integer 1"),
]


def _errors(mutate: Callable[[Doc], object]) -> list[str]:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    with pytest.raises(ConfigError) as caught:
        parse_config(doc)
    return caught.value.errors


def test_base_is_valid() -> None:
    parse_config(copy.deepcopy(BASE))


def test_the_table_is_big_and_distinct() -> None:
    assert len(CASES) >= 30
    assert len({tuple(c.values[1]) for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("mutate", "expected"), CASES)
def test_invalid(mutate: Callable[[Doc], object], expected: list[str]) -> None:
    assert _errors(mutate) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, 2], "config: expected a mapping at the top level, got list"),
        ("version: 1", "config: expected a mapping at the top level, got string"),
        (None, "config: expected a mapping at the top level, got null"),
    ],
)
def test_top_level_must_be_a_mapping(data: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.errors == [expected]


def test_recursive_document() -> None:
    doc = copy.deepcopy(BASE)
    doc["listeners"].append(doc["listeners"])
    with pytest.raises(ConfigError) as caught:
        parse_config(doc)
    assert caught.value.errors == ["listeners[2]: recursive YAML alias (a value contains itself)"]


def _paths(node: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, path + (index,))
    return found


JUNK: list[object] = [None, True, -1, 1.5, "", "x\n", [], [None], {}, {"?": 1}]


def test_never_crashes_and_never_leaks_python_reprs() -> None:
    """Put junk at every path of BASE: always a clean ConfigError (or a valid config), never a repr."""
    checked = 0
    for path in _paths(BASE):
        for junk in JUNK:
            doc = copy.deepcopy(BASE)
            parent: Any = doc
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = copy.deepcopy(junk)
            try:
                parse_config(doc)
            except ConfigError as exc:
                assert exc.errors, path
                for error in exc.errors:
                    assert ": " in error and not error.startswith(":"), error
                    assert "{'" not in error and "['" not in error and "is not valid under" not in error, error
                    assert "is not of type" not in error and "does not match" not in error, error
                checked += 1
    assert checked > 500


# ---- files and the check command ----


def _check(path: str | os.PathLike[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_check(str(path), out, err)
    return code, out.getvalue(), err.getvalue()


def _load_errors(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.errors


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("empty.yaml", b"", "config: file is empty"),
        ("blank.yaml", b"\n  \n", "config: file is empty"),
        ("comments.yaml", b"# nothing here\n", "config: no config in file (it holds only comments or null)"),
        ("list.yaml", b"- version: 1\n", "config: expected a mapping at the top level, got list"),
        ("bad.yaml", b"version: 1\nlisteners:\n  - name: web\n   address: 0.0.0.0:80\n",
         "config: invalid YAML at line 4, column 4: expected <block end>, but found '<block mapping start>'"),
        ("colon.yaml", b"version: 1\nlisteners: [a: b: c]\n",
         "config: invalid YAML at line 2, column 17: expected ',' or ']', but got ':'"),
        ("tabs.yaml", b"version: 1\n\tclusters: []\n",
         "config: invalid YAML at line 2, column 1: found character '\\t' that cannot start any token"),
        ("dup.yaml", b"version: 1\nlisteners: []\nclusters: []\nlisteners: []\n",
         'config: invalid YAML at line 4, column 1: duplicate key "listeners"'),
        ("two-docs.yaml", b"version: 1\n---\nversion: 1\n",
         "config: invalid YAML at line 2, column 1: expected a single document in the stream, but found another document"),
        ("latin1.yaml", b"version: 1\n# caf\xe9\n", "config: not valid UTF-8 (byte 0xe9 at offset 16)"),
        ("bad.json", b'{"version": 1,\n "listeners": [,]}', "config: invalid JSON at line 2, column 16: Expecting value"),
        ("dup.json", b'{"version": 1, "version": 1}', 'config: invalid JSON: duplicate key "version"'),
        ("digits.json", b'{"version": 1, "generation": ' + b"9" * 5000 + b"}",
         "config: invalid JSON: a number has too many digits"),
        ("alias-bomb.yaml",
         b"a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
         b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
         b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
         "config: document is too large (more than 1000000 values; YAML aliases expanded)"),
        ("deep.json", b"[" * 100_000 + b"]" * 100_000, "config: nested too deeply"),
        ("yes.yaml", b"version: 1\nlisteners: []\nclusters: []\nengine: {pin: yes}\n", "engine.pin: expected boolean, got string"),
        ("date.yaml", b"version: 1\nlisteners: []\nclusters: [{name: 2024-01-01, endpoints: []}]\n",
         "clusters[0].name: expected string, got date (put it in quotes)"),
    ],
)
def test_file_errors(tmp_path: Path, name: str, data: bytes, expected: str) -> None:
    path = _write(tmp_path, name, data)
    assert _load_errors(path) == [expected]
    assert _check(path) == (2, "", f"{path}: {expected}\n")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert _load_errors(path) == ["config: cannot read file: no such file or directory"]
    assert _check(path) == (2, "", f"{path}: config: cannot read file: no such file or directory\n")


def test_directory(tmp_path: Path) -> None:
    assert _load_errors(tmp_path) == ["config: is a directory, expected a file"]
    assert _check(tmp_path) == (2, "", f"{tmp_path}: config: is a directory, expected a file\n")


def test_unreadable_file() -> None:
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)
        path = _write(folder, "secret.yaml", b"version: 1\n")
        path.chmod(0)
        if os.geteuid() != 0:
            assert _load_errors(path) == ["config: cannot read file: permission denied"]
            return
        os.seteuid(65534)  # root reads every file: ask as nobody, and let the kernel refuse
        try:
            errors = _load_errors(path)
        finally:
            os.seteuid(0)
        assert errors == ["config: cannot read file: permission denied"]
    finally:
        shutil.rmtree(folder)


def test_oversized_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.yaml", b"#" * (4 * 1024 * 1024 + 1))
    assert _load_errors(path) == ["config: file is larger than 4 MiB"]


def test_check_lists_every_error_of_the_bad_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    name = "examples/invalid/bad.yaml"
    code, out, err = _check(name)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{name}: listeners[0].address: required",
        f'{name}: listeners[0].rules[0].backends[0].cluster: unknown cluster "shop/api:81"',
        f'{name}: listeners[0].rules[0].timeouts.request: invalid duration "5 sec" (use e.g. 250ms, 5s, 1m30s)',
        f"{name}: clusters[0].colour: unknown field",
    ]


def test_check_reports_internal_errors_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import ringlane_sidecar.config as config

    def broken(_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(config, "load_config", broken)
    assert _check("whatever.yaml") == (70, "", "internal error: RuntimeError: boom\n")
