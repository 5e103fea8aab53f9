"""RBAC objects: what sidecars may read in their namespace, and what the operator needs (pure)."""
from __future__ import annotations

from typing import Any

from . import seccomp_spo
from .names import CONFIGMAP, MANAGED_BY, SIDECAR_ROLE

Body = dict[str, Any]


def _owned_by(configmap_uid: str | None) -> list[Body]:
    """Owned by the routes ConfigMap: they go away together."""
    if not configmap_uid:
        return []
    return [{"apiVersion": "v1", "kind": "ConfigMap", "name": CONFIGMAP, "uid": configmap_uid,
             "controller": False, "blockOwnerDeletion": False}]


def sidecar_role(namespace: str, configmap_uid: str | None = None) -> Body:
    """get/list/watch of the routes ConfigMap only. resourceNames applies to list and watch
    only when the client asks with fieldSelector metadata.name=<name>, which the sidecar does."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": SIDECAR_ROLE, "namespace": namespace, "labels": dict(MANAGED_BY),
                     "ownerReferences": _owned_by(configmap_uid)},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [CONFIGMAP],
                   "verbs": ["get", "list", "watch"]}],
    }


def sidecar_role_binding(namespace: str, configmap_uid: str | None = None) -> Body:
    """Bound to every ServiceAccount of the namespace: an injected pod may run as any of them."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": SIDECAR_ROLE, "namespace": namespace, "labels": dict(MANAGED_BY),
                     "ownerReferences": _owned_by(configmap_uid)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SIDECAR_ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                      "name": f"system:serviceaccounts:{namespace}"}],
    }


def operator_cluster_role(name: str = "ringlane-operator", *, peering: bool = True, spo: bool = True) -> Body:
    """What the operator itself needs (the chart's ClusterRole is built from this list).
    peering: kopf's peering objects (--peering); spo: the Security Profiles Operator's SeccompProfiles, which
    --seccomp-delivery spo reads, creates and replaces (kube.ensure_seccomp_profile)."""
    rules = [
        ({"ringlane.io"}, ["proxyroutes"], ["get", "list", "watch", "patch", "update"]),
        ({"ringlane.io"}, ["proxyroutes/status"], ["get", "patch", "update"]),
        ({""}, ["services", "namespaces"], ["get", "list", "watch"]),
        ({"discovery.k8s.io"}, ["endpointslices"], ["get", "list", "watch"]),
        # The sidecar Role grants get/list/watch on configmaps: RBAC lets us grant only what we hold.
        ({""}, ["configmaps"], ["get", "list", "watch", "create", "update", "patch", "delete"]),
        ({""}, ["events"], ["create", "patch"]),
        ({"events.k8s.io"}, ["events"], ["create", "patch"]),
        ({"rbac.authorization.k8s.io"}, ["roles", "rolebindings"], ["get", "create", "update", "patch"]),
        ({"apiextensions.k8s.io"}, ["customresourcedefinitions"], ["get", "list", "watch"]),
        ({"admissionregistration.k8s.io"}, ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
         ["get", "create", "update", "patch", "delete"]),
    ]
    if peering:
        rules.append(({"kopf.dev"}, ["clusterkopfpeerings", "kopfpeerings"], ["get", "list", "watch", "patch"]))
    if spo:
        rules.append(({seccomp_spo.GROUP}, [seccomp_spo.PLURAL], ["get", "create", "update"]))
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "rules": [{"apiGroups": sorted(groups), "resources": res, "verbs": verbs} for groups, res, verbs in rules],
    }
