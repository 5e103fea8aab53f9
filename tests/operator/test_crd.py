"""The ProxyRoute CRD file: structural, documented, bounded; the examples fit it and render.

What CEL rejects needs a real API server: tests/operator/test_operator_api.py (e2e).
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ringlane_operator.render import render_namespace
from ringlane_sidecar.config import config_to_dict, parse_config

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "proxyroutes.ringlane.io.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
EXAMPLES = sorted((ROOT / "examples" / "proxyroutes").glob("*.yaml"))
INVALID = sorted((ROOT / "examples" / "proxyroutes" / "invalid").glob("*.yaml"))


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_identity() -> None:
    assert CRD["metadata"]["name"] == "proxyroutes.ringlane.io"
    assert (CRD["spec"]["group"], CRD["spec"]["scope"]) == ("ringlane.io", "Namespaced")
    assert CRD["spec"]["names"]["kind"] == "ProxyRoute" and CRD["spec"]["names"]["shortNames"] == ["pr"]
    assert VERSION["name"] == "v1alpha1" and VERSION["storage"] and VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    cols = {c["name"]: c for c in VERSION["additionalPrinterColumns"] if c.get("priority", 0) == 0}
    assert list(cols) == ["Accepted", "Programmed", "Endpoints", "Age"]
    assert cols["Accepted"]["jsonPath"] == '.status.conditions[?(@.type=="Accepted")].status'


def test_every_field_is_described() -> None:
    missing = [p for parent, node in walk(SCHEMA) for name, child in (node.get("properties") or {}).items()
               if name != "metadata" for p in [f"{parent}.{name}"] if not child.get("description")]
    assert missing == []


def test_every_array_is_bounded_for_cel_cost() -> None:
    assert [p for p, node in walk(SCHEMA) if node.get("type") == "array" and "maxItems" not in node] == []


def test_every_cel_rule_has_a_message() -> None:
    rules = [(p, r) for p, node in walk(SCHEMA) for r in node.get("x-kubernetes-validations") or ()]
    assert len(rules) >= 15
    assert all(r.get("message") for _, r in rules)


def test_structural_everything_typed() -> None:
    untyped = [p for p, node in walk(SCHEMA) if p and "type" not in node and p != ".metadata"]
    assert untyped == []


@pytest.mark.parametrize("path", EXAMPLES + INVALID, ids=lambda p: p.name)
def test_examples_fit_the_schema(path: Path) -> None:
    """The invalid examples break only CEL rules, which this structural check cannot see."""
    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(path.read_text()))


def test_structural_schema_rejects_a_bad_route() -> None:
    bad = yaml.safe_load(EXAMPLES[0].read_text())
    bad["spec"]["listener"]["protocol"] = "UDP"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SCHEMA).validate(bad)


def test_examples_render_to_a_valid_config() -> None:
    routes = [yaml.safe_load(p.read_text()) for p in EXAMPLES]
    for r in routes:
        r["metadata"].update(uid=r["metadata"]["name"], generation=1, creationTimestamp="2026-01-01T00:00:00Z")
    out = render_namespace("shop", routes, {}, {})
    assert all(f.accepted for f in out.routes.values()), out.routes
    assert parse_config(config_to_dict(out.config)) == out.config
    assert [lst.name for lst in out.config.listeners] == ["p5432", "p8080"]
