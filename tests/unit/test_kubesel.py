"""bench/ringbench/kubesel.py: label selectors, and which webhooks of a shared cluster see our namespaces."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from ringbench.kubesel import foreign_webhooks, selector_matches  # noqa: E402

INJ = {"kubernetes.io/metadata.name": "rlscale-x-inj", "ringlane.io/injection": "enabled"}
ROUTES = {"kubernetes.io/metadata.name": "rlscale-x-r00"}


def test_selector_operators() -> None:
    assert selector_matches(None, {}) and selector_matches({}, {"a": "b"})
    assert selector_matches({"matchLabels": {"ringlane.io/injection": "enabled"}}, INJ)
    assert not selector_matches({"matchLabels": {"ringlane.io/injection": "enabled"}}, ROUTES)
    name_in = {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["other"]}]}
    assert not selector_matches(name_in, ROUTES)
    assert selector_matches({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["1"]}]}, ROUTES)
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["1"]}]}, {"x": "1"})
    assert selector_matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {"x": ""})
    assert not selector_matches({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {"x": ""})


def config(kind: str, name: str, hook: str, rules: list[dict], selector: dict | None) -> dict:
    return {"kind": kind, "metadata": {"name": name},
            "webhooks": [{"name": hook, "rules": rules, **({"namespaceSelector": selector} if selector is not None else {})}]}


PODS = [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE"]}]
ROUTE_RULES = [{"apiGroups": ["ringlane.io"], "apiVersions": ["v1alpha1"], "resources": ["proxyroutes"]}]


def test_foreign_webhooks_are_those_that_select_our_namespaces() -> None:
    ns = {"rlscale-x-inj": INJ, "rlscale-x-r00": ROUTES}
    configs = [
        config("MutatingWebhookConfiguration", "rlscale-x", "inject.ringlane.io", PODS,
               {"matchLabels": {"ringlane.io/injection": "enabled"}}),  # ours
        config("MutatingWebhookConfiguration", "ringlane", "inject.ringlane.io", PODS,
               {"matchLabels": {"ringlane.io/injection": "enabled"}}),  # the chart: cluster-wide
        config("ValidatingWebhookConfiguration", "ringlane", "validate.proxyroutes.ringlane.io", ROUTE_RULES, {}),
        config("MutatingWebhookConfiguration", "rlop-abc-a", "inject.ringlane.io", PODS,  # a test's, elsewhere
               {"matchLabels": {"ringlane.io/injection": "enabled"},
                "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["rlop-abc-a"]}]}),
        config("MutatingWebhookConfiguration", "cert-thing", "certs.example.com",  # other resources
               [{"apiGroups": ["cert.example.com"], "resources": ["certificates"]}], None),
        config("MutatingWebhookConfiguration", "everything", "all.example.com",
               [{"apiGroups": ["*"], "resources": ["*"]}], None),
    ]
    assert foreign_webhooks(configs, "rlscale-x", ns) == [
        "MutatingWebhookConfiguration/ringlane/inject.ringlane.io",
        "ValidatingWebhookConfiguration/ringlane/validate.proxyroutes.ringlane.io",
        "MutatingWebhookConfiguration/everything/all.example.com",
    ]
    assert foreign_webhooks(configs[:1] + configs[3:5], "rlscale-x", ns) == []
