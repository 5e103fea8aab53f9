"""The operator's own API calls (the edge): plain dicts in and out, asyncio (kubernetes.aio).

kopf owns watching and its handlers' patches; this module does the writes kopf does not:
the routes ConfigMap, the sidecar RBAC, ProxyRoute status, the webhook configurations, and
the Security Profiles Operator's SeccompProfiles (--seccomp-delivery spo).
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes.aio import client, config

from . import seccomp_spo
from .names import CONFIGMAP, GROUP, PLURAL, VERSION

Body = dict[str, Any]


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


async def _json(call: Awaitable[Any]) -> Body:
    resp = await call
    try:
        raw = await resp.read()
    finally:
        resp.release()
    data = json.loads(raw) if raw else {}
    if resp.status >= 400:
        raise KubeError(resp.status, str(data.get("reason", "")), str(data.get("message", raw[:200])))
    return data


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.rbac = client.RbacAuthorizationV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.admission = client.AdmissionregistrationV1Api(api)
        self.version = client.VersionApi(api)
        self.extensions = client.ApiextensionsV1Api(api)

    @classmethod
    async def connect(cls) -> Kube:
        """In a pod: its ServiceAccount; elsewhere: $KUBECONFIG or ~/.kube/config."""
        try:
            config.load_incluster_config()
        except config.ConfigException:
            await config.load_kube_config()
        return cls(client.ApiClient())

    async def close(self) -> None:
        await self.api.close()

    async def server_minor(self) -> int:
        info = await _json(self.version.get_code_without_preload_content())
        return int("".join(ch for ch in str(info.get("minor", "0")) if ch.isdigit()) or 0)

    # ---- routes ConfigMap ----
    async def read_configmap(self, namespace: str) -> Body | None:
        try:
            return await _json(self.core.read_namespaced_config_map_without_preload_content(CONFIGMAP, namespace))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def write_configmap(self, body: Body, create: bool) -> Body:
        ns = body["metadata"]["namespace"]
        if create:
            return await _json(self.core.create_namespaced_config_map_without_preload_content(ns, body))
        return await _json(self.core.replace_namespaced_config_map_without_preload_content(CONFIGMAP, ns, body))

    # ---- sidecar RBAC ----
    async def ensure_role(self, body: Body) -> None:
        await self._ensure(body, self.rbac.read_namespaced_role_without_preload_content,
                           self.rbac.create_namespaced_role_without_preload_content,
                           self.rbac.replace_namespaced_role_without_preload_content, ("rules",))

    async def ensure_role_binding(self, body: Body) -> None:
        await self._ensure(body, self.rbac.read_namespaced_role_binding_without_preload_content,
                           self.rbac.create_namespaced_role_binding_without_preload_content,
                           self.rbac.replace_namespaced_role_binding_without_preload_content, ("roleRef", "subjects"))

    async def _ensure(self, body: Body, read: Callable[..., Any], create: Callable[..., Any],
                      replace: Callable[..., Any], fields: tuple[str, ...]) -> None:
        name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
        try:
            have = await _json(read(name, ns))
        except KubeError as exc:
            if exc.status != 404:
                raise
            await _json(create(ns, body))
            return
        meta = have.get("metadata") or {}
        if all(have.get(f) == body.get(f) for f in fields) and \
                (meta.get("ownerReferences") or []) == body["metadata"].get("ownerReferences", []):
            return
        if fields == ("roleRef", "subjects") and have.get("roleRef") != body.get("roleRef"):
            raise KubeError(409, "Conflict", f"RoleBinding {ns}/{name} points at another role; delete it to let Ringlane own it")
        fresh = {**body, "metadata": {**body["metadata"], "resourceVersion": meta.get("resourceVersion")}}
        await _json(replace(name, ns, fresh))

    # ---- ProxyRoute status ----
    async def patch_route_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            await _json(self.custom.patch_namespaced_custom_object_status_without_preload_content(
                GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}))
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    # ---- SeccompProfiles (Security Profiles Operator) ----
    async def read_crd(self, name: str) -> Body | None:
        try:
            return await _json(self.extensions.read_custom_resource_definition_without_preload_content(name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def ensure_seccomp_profile(self, body: Body) -> tuple[Body, str]:
        """Create, or replace when our spec or labels differ: (the object now, created|updated|unchanged).
        Strict field validation: a field SPO's schema would drop fails the write instead."""
        g, v, p = seccomp_spo.GROUP, seccomp_spo.VERSION, seccomp_spo.PLURAL
        name, ns = body["metadata"]["name"], body["metadata"].get("namespace")
        kw = {"field_manager": "ringlane-operator", "field_validation": "Strict"}
        try:
            have = await _json(self.custom.get_namespaced_custom_object_without_preload_content(g, v, ns, p, name)
                               if ns else self.custom.get_cluster_custom_object_without_preload_content(g, v, p, name))
        except KubeError as exc:
            if exc.status != 404:
                raise
            created = await _json(
                self.custom.create_namespaced_custom_object_without_preload_content(g, v, ns, p, body, **kw) if ns
                else self.custom.create_cluster_custom_object_without_preload_content(g, v, p, body, **kw))
            return created, "created"
        fresh = seccomp_spo.replacement(have, body)
        if fresh is None:
            return have, "unchanged"
        updated = await _json(
            self.custom.replace_namespaced_custom_object_without_preload_content(g, v, ns, p, name, fresh, **kw) if ns
            else self.custom.replace_cluster_custom_object_without_preload_content(g, v, p, name, fresh, **kw))
        return updated, "updated"

    # ---- Events the operator posts itself (admission time, outside kopf's handlers) ----
    async def create_event(self, body: Body) -> None:
        await _json(self.core.create_namespaced_event_without_preload_content(body["metadata"]["namespace"], body))

    # ---- webhook configurations (dev mode / --manage-webhooks) ----
    async def apply_webhook_configuration(self, body: Body) -> None:
        mutating = body["kind"] == "MutatingWebhookConfiguration"
        name = body["metadata"]["name"]
        read = (self.admission.read_mutating_webhook_configuration_without_preload_content if mutating
                else self.admission.read_validating_webhook_configuration_without_preload_content)
        try:
            have = await _json(read(name))
        except KubeError as exc:
            if exc.status != 404:
                raise
            create = (self.admission.create_mutating_webhook_configuration_without_preload_content if mutating
                      else self.admission.create_validating_webhook_configuration_without_preload_content)
            await _json(create(body))
            return
        replace = (self.admission.replace_mutating_webhook_configuration_without_preload_content if mutating
                   else self.admission.replace_validating_webhook_configuration_without_preload_content)
        fresh = {**body, "metadata": {**body["metadata"], "resourceVersion": have["metadata"]["resourceVersion"]}}
        await _json(replace(name, fresh))

    async def delete_webhook_configuration(self, kind: str, name: str) -> None:
        delete = (self.admission.delete_mutating_webhook_configuration_without_preload_content
                  if kind == "MutatingWebhookConfiguration"
                  else self.admission.delete_validating_webhook_configuration_without_preload_content)
        try:
            await _json(delete(name))
        except KubeError as exc:
            if exc.status != 404:
                raise
