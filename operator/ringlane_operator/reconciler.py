"""Per-namespace reconcile: render, write the ConfigMap, RBAC, status, Events (the edge).

Everything it decides comes from the pure modules (render, configmap, rbac, conditions);
this file only reads the kopf indices, calls the API, and debounces.
"""
from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .conditions import route_status, status_changed, transitions
from .configmap import plan_configmap
from .debounce import Debouncer
from .facts import ServiceInfo, SliceInfo
from .kube import Kube, KubeError
from .rbac import sidecar_role, sidecar_role_binding
from .render import RenderSettings, render_namespace

log = logging.getLogger(__name__)
Route = Mapping[str, Any]


class EventSink(Protocol):
    def __call__(self, route: Route, type_: str, reason: str, message: str) -> None: ...


@dataclass(frozen=True)
class Sources:
    """Live views of the kopf indices, per namespace."""

    routes: Callable[[str], Sequence[Route]]
    services: Callable[[str], Mapping[str, ServiceInfo]]
    slices: Callable[[str], Mapping[str, Sequence[SliceInfo]]]


def namespace_terminating(exc: KubeError) -> bool:
    """The API server refuses new objects in a namespace that is being deleted (403)."""
    return exc.status == 403 and "because it is being terminated" in str(exc)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, kube: Kube, sources: Sources, events: EventSink, settings: RenderSettings = RenderSettings(),
                 quiet: float = 0.2, max_wait: float = 0.5, now: Callable[[], str] = utc_now) -> None:
        self.kube = kube
        self.sources = sources
        self.events = events
        self.settings = settings
        self.now = now
        self.debouncer: Debouncer[str] = Debouncer(self.reconcile, quiet=quiet, max_wait=max_wait)
        self._rbac: dict[str, str] = {}  # namespace -> ConfigMap uid the RBAC was made for
        self._written: dict[tuple[str, str, str], Mapping[str, Any]] = {}  # (ns, name, uid) -> status we wrote

    def request(self, namespace: str) -> asyncio.Future[None]:
        return self.debouncer.request(namespace)

    async def close(self) -> None:
        await self.debouncer.close()

    async def reconcile(self, namespace: str) -> None:
        try:
            await self._reconcile(namespace)
        except KubeError as exc:
            if not namespace_terminating(exc):
                raise
            # Nothing to publish: the namespace takes the ConfigMap, the RBAC and the routes with
            # it. Retrying would only hold the routes' finalizers, and the namespace, for longer.
            log.info("namespace %s is being deleted: not rendering it", namespace)

    async def _reconcile(self, namespace: str) -> None:
        routes = list(self.sources.routes(namespace))
        live = [r for r in routes if not r["metadata"].get("deletionTimestamp")]
        # Rendering a large namespace takes hundreds of ms (mostly validating the whole sidecar
        # config): do it off the event loop, which also answers the admission webhooks. The
        # index views are copied here, on the loop, so the thread never sees them change.
        services = dict(self.sources.services(namespace))
        slices = {k: list(v) for k, v in self.sources.slices(namespace).items()}
        rendered = await asyncio.to_thread(render_namespace, namespace, routes, services, slices, self.settings)
        existing = await self.kube.read_configmap(namespace)
        if existing is None and not live:
            return  # never had routes: nothing to clean up
        plan = plan_configmap(namespace, rendered.config, live, existing)
        configmap = existing
        if plan.body is not None:
            configmap = await self.kube.write_configmap(plan.body, plan.create)
            log.info("namespace %s: ConfigMap generation %d (%d listeners, %d clusters)", namespace,
                     plan.generation, len(rendered.config.listeners), len(rendered.config.clusters))
        uid = ((configmap or {}).get("metadata") or {}).get("uid", "")
        if live and self._rbac.get(namespace) != uid:
            await self.kube.ensure_role(sidecar_role(namespace, uid))
            await self.kube.ensure_role_binding(sidecar_role_binding(namespace, uid))
            self._rbac[namespace] = uid
        await self._statuses(namespace, live, rendered.routes)

    async def _statuses(self, namespace: str, live: Sequence[Route], facts: Mapping[str, Any]) -> None:
        now = self.now()
        for route in live:
            meta = route["metadata"]
            key = (namespace, meta["name"], meta.get("uid", ""))
            # What we wrote last wins over the index, whose copy may not have caught up yet.
            old = self._written.get(key, route.get("status"))
            new = route_status(facts[meta["name"]], old, now)
            if not status_changed(old, new):
                continue
            await self.kube.patch_route_status(namespace, meta["name"], new)
            self._written[key] = new
            for type_, reason, message in transitions(old, new):
                self.events(route, type_, reason, message)

    def forget(self, namespace: str, name: str, uid: str) -> None:
        self._written.pop((namespace, name, uid), None)
