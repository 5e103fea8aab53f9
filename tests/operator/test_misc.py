"""Quantities, command-line options, webhook configurations."""
from __future__ import annotations

from decimal import Decimal

import pytest

from ringlane_operator.options import parse_options
from ringlane_operator.quantity import parse_quantity
from ringlane_operator.webhook_config import (
    client_config_for,
    mutating_configuration,
    service_client_config,
    validating_configuration,
)


@pytest.mark.parametrize("text,value", [
    ("1", 1), ("500m", Decimal("0.5")), ("128Mi", 128 * 2**20), ("1Gi", 2**30), ("1G", 10**9),
    ("1.5", Decimal("1.5")), ("1e3", 1000), ("2E-3", Decimal("0.002")), ("1E", 10**18), (".5Ki", 512), (3, 3),
])
def test_quantities(text: object, value: object) -> None:
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "Mi", "1 Mi", "1mi", "1KiB", "--1", "1.2.3", None])
def test_bad_quantities(text: object) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_dev_defaults_and_env() -> None:
    o = parse_options(["--dev"], {"RINGLANE_SIDECAR_IMAGE": "img:1", "RINGLANE_PROXY_CPU": "2",
                                  "RINGLANE_NAMESPACES": "a,b"})
    assert (o.dev, o.webhook_addr, o.webhook_port, o.manage_webhooks) == (True, "127.0.0.1", 0, True)
    assert (o.inject.image, o.inject.cpu, o.inject.memory, o.inject.admin_port) == ("img:1", 2, "128Mi", 9901)
    assert o.namespaces == ("a", "b") and o.peering is None


def test_flags_win_over_env() -> None:
    o = parse_options(["--dev", "--sidecar-image", "x:2", "-n", "shop", "--peering", "ha", "--admin-port", "15000"],
                      {"RINGLANE_SIDECAR_IMAGE": "img:1", "RINGLANE_NAMESPACES": "a"})
    assert (o.inject.image, o.namespaces, o.peering, o.inject.admin_port) == ("x:2", ("shop",), "ha", 15000)


@pytest.mark.parametrize("argv", [
    [],  # in a cluster without certificates
    ["--dev", "--tls-cert", "c.pem"],
    ["--dev", "--proxy-cpu", "500m"],
    ["--dev", "--proxy-memory", "lots"],
    ["--dev", "--debounce-ms", "900", "--max-delay-ms", "1500"],
    ["--dev", "--admin-port", "0"],
    ["--tls-cert", "c", "--tls-key", "k", "--manage-webhooks"],  # where would the API server call?
])
def test_bad_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(argv, {})


def test_in_cluster_options() -> None:
    o = parse_options(["--tls-cert", "c", "--tls-key", "k", "--manage-webhooks", "--webhook-service", "ringlane/op"], {})
    assert (o.webhook_addr, o.webhook_port, o.manage_webhooks, o.dev) == ("0.0.0.0", 9443, True, False)


BASE = {"url": "https://127.0.0.1:4443", "caBundle": "Q0E="}


def test_mutating_configuration() -> None:
    (hook,) = mutating_configuration(BASE)["webhooks"]
    assert hook["clientConfig"] == {"url": "https://127.0.0.1:4443/inject-ringlane", "caBundle": "Q0E="}
    assert hook["namespaceSelector"] == {"matchLabels": {"ringlane.io/injection": "enabled"}}
    assert hook["objectSelector"]["matchExpressions"] == [{"key": "ringlane.io/inject", "operator": "NotIn", "values": ["false"]}]
    assert (hook["failurePolicy"], hook["reinvocationPolicy"], hook["sideEffects"]) == ("Fail", "IfNeeded", "None")
    assert hook["rules"][0]["resources"] == ["pods"] and hook["rules"][0]["operations"] == ["CREATE"]


def test_validating_configuration() -> None:
    (hook,) = validating_configuration(BASE)["webhooks"]
    assert hook["clientConfig"]["url"].endswith("/validate-proxyroute")
    assert hook["rules"][0] == {"apiGroups": ["ringlane.io"], "apiVersions": ["v1alpha1"], "resources": ["proxyroutes"],
                                "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}
    assert hook["failurePolicy"] == "Ignore"


def test_service_client_config() -> None:
    cc = client_config_for(service_client_config(BASE, "ringlane-system/ringlane-operator"), "inject-ringlane")
    assert cc == {"service": {"namespace": "ringlane-system", "name": "ringlane-operator", "port": 443,
                              "path": "/inject-ringlane"}, "caBundle": "Q0E="}


def test_webhooks_limited_to_watched_namespaces() -> None:
    only = [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["a", "b"]}]
    (m,) = mutating_configuration(BASE, namespaces=["b", "a"])["webhooks"]
    assert m["namespaceSelector"] == {"matchLabels": {"ringlane.io/injection": "enabled"}, "matchExpressions": only}
    (v,) = validating_configuration(BASE, namespaces=["a", "b"])["webhooks"]
    assert v["namespaceSelector"] == {"matchExpressions": only}
    assert validating_configuration(BASE)["webhooks"][0]["namespaceSelector"] == {"matchExpressions": []}


def test_admission_events_go_to_the_controller_or_the_named_pod() -> None:
    from ringlane_operator.events import admission_event_target, event_body

    owned = {"metadata": {"generateName": "web-5d9f-", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f", "uid": "u1", "controller": True}]}}
    target = admission_event_target(owned, "shop")
    assert target == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9f", "uid": "u1", "namespace": "shop"}
    assert admission_event_target({"metadata": {"name": "p"}}, "shop")["kind"] == "Pod"
    assert admission_event_target({"metadata": {"generateName": "p-"}}, "shop") is None
    ev = event_body(target, "Warning", "NotGuaranteedQoS", "x" * 2000, "2026-01-01T00:00:00Z", "op-1")
    assert ev["involvedObject"] == target and ev["metadata"] == {"generateName": "web-5d9f.", "namespace": "shop"}
    assert len(ev["message"]) == 1024 and ev["type"] == "Warning"
