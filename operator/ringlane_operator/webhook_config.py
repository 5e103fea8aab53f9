"""Mutating and validating webhook configurations for a kopf webhook client config (pure).

kopf can manage these objects itself but cannot set a namespaceSelector or a
reinvocationPolicy, both of which injection needs, so the operator builds them here.
"""
from __future__ import annotations

import copy
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from .names import (
    GROUP,
    INJECT_LABEL,
    INJECT_WEBHOOK_ID,
    MANAGED_BY,
    NAMESPACE_LABEL,
    PLURAL,
    VALIDATE_WEBHOOK_ID,
    VERSION,
)

Body = dict[str, Any]


def client_config_for(base: Mapping[str, Any], handler_id: str) -> Body:
    """kopf's webhook server routes <root>/<handler id> to that handler (as kopf itself does)."""
    cc = copy.deepcopy(dict(base))
    suffix = urllib.parse.quote(handler_id)
    if "url" in cc:
        cc["url"] = f"{cc['url'].rstrip('/')}/{suffix}"
    if "service" in cc:
        cc["service"]["path"] = f"{cc['service'].get('path', '').rstrip('/')}/{suffix}"
    return cc


def service_client_config(base: Mapping[str, Any], service: str, port: int = 443) -> Body:
    """Point at a Service (NAMESPACE/NAME) instead of the URL the server reported."""
    namespace, _, name = service.partition("/")
    cc: Body = {"service": {"namespace": namespace, "name": name, "port": port}}
    if base.get("caBundle"):
        cc["caBundle"] = base["caBundle"]
    return cc


def _only(namespaces: Sequence[str]) -> list[Body]:
    """Limit a webhook to the operator's namespaces (when it watches only some)."""
    if not namespaces:
        return []
    return [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": sorted(namespaces)}]


def mutating_configuration(base: Mapping[str, Any], name: str = "ringlane", failure_policy: str = "Fail",
                           namespaces: Sequence[str] = ()) -> Body:
    selector: Body = {"matchLabels": {NAMESPACE_LABEL: "enabled"}}
    if namespaces:
        selector["matchExpressions"] = _only(namespaces)
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "webhooks": [{
            "name": "inject.ringlane.io",
            "clientConfig": client_config_for(base, INJECT_WEBHOOK_ID),
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                       "operations": ["CREATE"], "scope": "Namespaced"}],
            "namespaceSelector": selector,
            "objectSelector": {"matchExpressions": [{"key": INJECT_LABEL, "operator": "NotIn", "values": ["false"]}]},
            "failurePolicy": failure_policy,
            # Run again if a later webhook changes the pod; in-tree plugins (the ServiceAccount
            # token mount for the new container) are re-run after a mutation too.
            "reinvocationPolicy": "IfNeeded",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
        }],
    }


SPEC_CHANGED = {"name": "spec-changed", "expression": "request.operation != 'UPDATE' || object.spec != oldObject.spec"}


def validating_configuration(base: Mapping[str, Any], name: str = "ringlane", failure_policy: str = "Ignore",
                             namespaces: Sequence[str] = ()) -> Body:
    """Ignore by default: the render resolves listener conflicts anyway (oldest route wins)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "webhooks": [{
            "name": "proxyroutes.ringlane.io",
            "namespaceSelector": {"matchExpressions": _only(namespaces)},
            "clientConfig": client_config_for(base, VALIDATE_WEBHOOK_ID),
            "rules": [{"apiGroups": [GROUP], "apiVersions": [VERSION], "resources": [PLURAL],
                       "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}],
            # kopf's own finalizer/annotation patches (two per route) leave spec alone: skip them.
            "matchConditions": [SPEC_CHANGED],
            "failurePolicy": failure_policy,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "matchPolicy": "Equivalent",
            "timeoutSeconds": 10,
        }],
    }
