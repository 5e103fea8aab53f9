"""kopf registrations: indices, ProxyRoute handlers, backend events, admission webhooks.

Importing this module registers the handlers with kopf's default registry (cli.py does).
Runtime objects (options, API client, reconciler) travel in kopf's memo.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import shutil
import socket
from collections.abc import Mapping
from typing import Any, NoReturn

import kopf

from .conflicts import listener_conflicts
from .devserver import ManagedWebhookServer, self_signed_certificate
from .facts import SERVICE_NAME_LABEL, ServiceInfo, SliceInfo, service_info, slice_info
from .events import admission_event_target, event_body
from .inject import QOS_WARNING, inject_patch
from .inject_settings import InjectError, InjectSettings
from .kube import Kube, KubeError
from .names import (
    API_VERSION,
    FINALIZER,
    GROUP,
    INJECT_WEBHOOK_ID,
    KIND,
    KOPF_ANNOTATION_PREFIX,
    PLURAL,
    VALIDATE_WEBHOOK_ID,
    VERSION,
)
from .options import Options
from .patchops import apply_patch
from .reconciler import Reconciler, Sources, utc_now
from .render import RenderSettings, referenced_services
from .seccomp_spo import (
    CRD_NAME,
    PLURAL as SPO_PLURAL,
    ProfileError,
    SpoNotReady,
    SpoUnavailable,
    crd_scope,
    delivered_path,
    seccomp_profile_object,
)
from .webhook_config import mutating_configuration, service_client_config, validating_configuration

log = logging.getLogger(__name__)
NATIVE_SIDECAR_MINOR = 29


# ---------------------------------------------------------------- indices
def slim_route(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "generation", "creationTimestamp", "deletionTimestamp")
    return {
        "apiVersion": API_VERSION, "kind": KIND,
        "metadata": {k: meta[k] for k in keep if meta.get(k) is not None},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


@kopf.index(GROUP, VERSION, PLURAL)
def route_index(body: kopf.Body, namespace: str, **_: Any) -> dict[str, Any]:
    return {namespace: slim_route(body)}


@kopf.index("v1", "services")
def service_index(body: kopf.Body, namespace: str, **_: Any) -> dict[str, ServiceInfo]:
    return {namespace: service_info(body)}


@kopf.index("discovery.k8s.io", "v1", "endpointslices")
def slice_index(body: kopf.Body, namespace: str, **_: Any) -> dict[str, SliceInfo] | None:
    info = slice_info(body)
    return None if info is None else {namespace: info}


@kopf.index("v1", "namespaces")
def namespace_index(body: kopf.Body, name: str, **_: Any) -> dict[str, dict[str, str]]:
    return {name: dict(body.get("metadata", {}).get("labels") or {})}


def _sources(route_index: kopf.Index, service_index: kopf.Index, slice_index: kopf.Index) -> Sources:
    def routes(ns: str) -> list[Mapping[str, Any]]:
        return list(route_index.get(ns, ()))

    def services(ns: str) -> dict[str, ServiceInfo]:
        return {s.name: s for s in service_index.get(ns, ())}

    def slices(ns: str) -> dict[str, list[SliceInfo]]:
        out: dict[str, list[SliceInfo]] = {}
        for sl in sorted(slice_index.get(ns, ()), key=lambda s: s.name):
            out.setdefault(sl.service, []).append(sl)
        return out

    return Sources(routes, services, slices)


def _post_event(route: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    try:
        kopf.event(dict(route), type=type_, reason=reason, message=message)
    except LookupError:  # outside kopf's event-posting context: the log still has it
        log.warning("%s/%s: %s %s: %s", route["metadata"].get("namespace"), route["metadata"]["name"],
                    type_, reason, message)


# ---------------------------------------------------------------- start-up
def configure(settings: kopf.OperatorSettings, opts: Options) -> None:
    # Watches that silently stop delivering events are a known failure of long-lived
    # streams; bounded server-side timeouts and an inactivity timeout reconnect them.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 70
    settings.networking.request_timeout = 30
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.peering.standalone = opts.peering is None
    settings.peering.mandatory = opts.peering is not None
    if opts.peering is not None:
        settings.peering.name = opts.peering
        settings.peering.priority = opts.priority
    settings.posting.level = logging.INFO


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, route_index: kopf.Index,
                  service_index: kopf.Index, slice_index: kopf.Index, **_: Any) -> None:
    opts: Options = memo.options
    configure(settings, opts)
    kube = await Kube.connect()
    memo.kube = kube
    inject = opts.inject
    if opts.native_sidecar == "auto":
        inject = dataclasses.replace(inject, native_sidecar=await kube.server_minor() >= NATIVE_SIDECAR_MINOR)
    memo.inject = inject
    memo.warned_owners = set()
    memo.background = set()
    memo.reconciler = Reconciler(kube, _sources(route_index, service_index, slice_index), _post_event,
                                 RenderSettings(admin_port=opts.inject.admin_port),
                                 quiet=opts.debounce_ms / 1000, max_wait=opts.max_delay_ms / 1000)
    memo.started = True


def _after_startup(memo: kopf.Memo) -> None:
    """kopf runs the start-up handlers in order but retries only the failed ones."""
    if not getattr(memo, "started", False):
        raise kopf.TemporaryError("waiting for the start-up handler", delay=1)


@kopf.on.startup(id="seccomp-profiles")
async def seccomp_profiles(memo: kopf.Memo, **_: Any) -> None:
    """--seccomp-delivery spo: create or update the SeccompProfiles, then inject their paths.
    Runs after `startup` (kopf runs start-up handlers in order) and before any webhook serves."""
    opts: Options = memo.options
    if opts.seccomp_delivery != "spo":
        return
    _after_startup(memo)
    try:
        memo.inject = await deliver_spo_profiles(memo.kube, opts, memo.inject)
    except SpoNotReady as exc:
        raise kopf.TemporaryError(str(exc), delay=5) from exc
    except (SpoUnavailable, ProfileError) as exc:
        await _fatal(memo, str(exc))
    except KubeError as exc:
        if exc.status in (401, 403):
            await _fatal(memo, f"--seccomp-delivery spo: not allowed to write {SPO_PLURAL}: {exc} (the chart "
                               "grants get/create/update on them with seccomp.securityProfilesOperator=true)")
        if exc.status in (400, 422):  # schema or strict field validation: retrying cannot help
            await _fatal(memo, f"--seccomp-delivery spo: the API server refused a SeccompProfile: {exc}")
        raise kopf.TemporaryError(f"writing the SeccompProfiles failed: {exc}", delay=5) from exc


async def _fatal(memo: kopf.Memo, message: str) -> NoReturn:
    """A start-up failure that waiting cannot fix: kopf logs it, cli.py exits with it (no cleanup
    handlers run after a failed start-up, so the clients are closed here)."""
    memo.fatal = message
    await cleanup(memo)
    memo.reconciler = memo.kube = None
    raise kopf.PermanentError(message)


def sidecar_profiles() -> dict[str, dict[str, Any]]:
    """The OCI profiles `ringlane-sidecar seccomp-profile --engine io_uring|epoll` prints (same image)."""
    from ringlane_sidecar.confine import uring_ops
    from ringlane_sidecar.confine.profile import seccomp_profile

    try:
        uring = uring_ops.from_core()
    except Exception as exc:  # the C core is part of the image; without it there is no allowlist
        raise SpoUnavailable(f"cannot build the io_uring seccomp profile (the sidecar's core did not load: {exc})") from exc
    return {"io_uring": seccomp_profile("io_uring", uring), "epoll": seccomp_profile("epoll", None)}


async def deliver_spo_profiles(kube: Kube, opts: Options, inject: InjectSettings) -> InjectSettings:
    namespaced = crd_scope(await kube.read_crd(CRD_NAME))
    namespace = None
    if namespaced:
        if not opts.spo_namespace:
            raise SpoUnavailable(f"--seccomp-delivery spo: this SPO's {CRD_NAME} is namespaced (a release from "
                                 "before SeccompProfiles became cluster-scoped): pass --spo-namespace NS "
                                 "(the chart passes its namespace), or upgrade SPO")
        namespace = opts.spo_namespace
    paths: dict[str, str] = {}
    for engine, oci in sidecar_profiles().items():
        obj, what = await kube.ensure_seccomp_profile(seccomp_profile_object(engine, oci, namespace))
        paths[engine] = delivered_path(obj)
        where = f"{namespace}/" if namespace else ""
        log.info("SeccompProfile %s%s %s; sidecars with engine %s reference Localhost %s", where,
                 obj["metadata"]["name"], what, "epoll" if engine == "epoll" else "auto/io_uring", paths[engine])
    return dataclasses.replace(inject, seccomp_profile=paths["io_uring"], seccomp_profile_epoll=paths["epoll"])


@kopf.on.startup(id="webhook-server")
async def webhook_server(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Last: kopf serves admission only once every start-up handler succeeded, and a failed
    start-up leaves no --dev certificate behind."""
    if getattr(memo, "fatal", None) is not None:
        return  # the operator is exiting
    _after_startup(memo)
    settings.admission.server = _webhook_server(memo.options, memo.kube)
    settings.admission.managed = None  # kopf cannot set namespaceSelector: we manage them


def _webhook_server(opts: Options, kube: Kube) -> kopf.WebhookServer:
    cert, key = opts.tls_cert, opts.tls_key
    if cert is None:  # --dev: a throwaway certificate, removed at exit
        cert, key = self_signed_certificate(opts.webhook_host or opts.webhook_addr)

    async def publish(client_config: dict[str, Any]) -> None:
        base = service_client_config(client_config, opts.webhook_service) if opts.webhook_service else client_config
        await kube.apply_webhook_configuration(
            mutating_configuration(base, opts.webhook_name, opts.inject_failure_policy, opts.namespaces))
        await kube.apply_webhook_configuration(
            validating_configuration(base, opts.webhook_name, opts.validate_failure_policy, opts.namespaces))

    async def withdraw() -> None:
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            await kube.delete_webhook_configuration(kind, opts.webhook_name)
        if opts.tls_cert is None:
            shutil.rmtree(os.path.dirname(cert), ignore_errors=True)

    manage = opts.manage_webhooks
    return ManagedWebhookServer(
        publish=publish if manage else None, withdraw=withdraw if opts.dev else None,
        addr=opts.webhook_addr, port=opts.webhook_port or None, host=opts.webhook_host,
        certfile=cert, pkeyfile=key)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "reconciler", None) is not None:
        await memo.reconciler.close()
    if getattr(memo, "kube", None) is not None:
        await memo.kube.close()


# ---------------------------------------------------------------- ProxyRoutes
async def _render(namespace: str, memo: kopf.Memo) -> None:
    try:
        await memo.reconciler.request(namespace)
    except Exception as exc:
        raise kopf.TemporaryError(f"rendering namespace {namespace} failed: {exc}", delay=5) from exc


@kopf.on.resume(GROUP, VERSION, PLURAL, id="render-on-resume")
async def route_resumed(namespace: str, memo: kopf.Memo, **_: Any) -> None:
    await _render(namespace, memo)


@kopf.on.create(GROUP, VERSION, PLURAL, id="render-on-create")
async def route_created(namespace: str, memo: kopf.Memo, **_: Any) -> None:
    await _render(namespace, memo)


@kopf.on.update(GROUP, VERSION, PLURAL, id="render-on-update")
async def route_updated(namespace: str, memo: kopf.Memo, **_: Any) -> None:
    await _render(namespace, memo)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="render-on-delete")
async def route_deleted(namespace: str, name: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Runs under our finalizer: the rules leave the ConfigMap before the route disappears."""
    await _render(namespace, memo)
    memo.reconciler.forget(namespace, name, uid)


# ---------------------------------------------------------------- backends
@kopf.on.event("v1", "services")
async def service_event(name: str, namespace: str, memo: kopf.Memo, route_index: kopf.Index, **_: Any) -> None:
    if name in referenced_services(route_index.get(namespace, ())):
        memo.reconciler.request(namespace)


@kopf.on.event("discovery.k8s.io", "v1", "endpointslices")
async def slice_event(labels: Mapping[str, str], namespace: str, memo: kopf.Memo, route_index: kopf.Index,
                **_: Any) -> None:
    if labels.get(SERVICE_NAME_LABEL) in referenced_services(route_index.get(namespace, ())):
        memo.reconciler.request(namespace)


# ---------------------------------------------------------------- admission
@kopf.on.mutate("v1", "pods", operations=["CREATE"], id=INJECT_WEBHOOK_ID)
async def inject(body: kopf.Body, patch: kopf.Patch, warnings: list[str], memo: kopf.Memo, namespace: str | None,
                 namespace_index: kopf.Index, dryrun: bool, **_: Any) -> None:
    pod = copy.deepcopy(dict(body))
    labels = next(iter(namespace_index.get(namespace, ())), None) if namespace else None
    try:
        ops, notes = inject_patch(pod, memo.inject, labels)
    except InjectError as exc:
        raise kopf.AdmissionError(str(exc), code=400) from exc
    warnings.extend(notes)
    qos = next((n for n in notes if n.startswith(QOS_WARNING)), None)
    if qos is not None and namespace and not dryrun:
        _warn_in_background(memo, admission_event_target(pod, namespace), qos)
    if ops:
        def apply(raw: dict[str, Any]) -> None:
            patched = apply_patch(raw, ops)
            raw.clear()
            raw.update(patched)

        patch.fns.append(apply)


def _warn_in_background(memo: kopf.Memo, target: dict[str, Any] | None, message: str) -> None:
    """An Event about the pod (its owner), once per owner: admission does not wait for it."""
    warned: set[str] = memo.warned_owners
    if target is None or target.get("uid", target["name"]) in warned:
        return
    if len(warned) > 4096:
        warned.clear()
    warned.add(target.get("uid", target["name"]))
    body = event_body(target, "Warning", "NotGuaranteedQoS", message, utc_now(), socket.gethostname())

    async def post() -> None:
        try:
            await memo.kube.create_event(body)
        except Exception as exc:  # an Event is best effort; the admission warning was given
            log.warning("cannot post the QoS Event on %s/%s: %s", target["kind"], target["name"], exc)

    task = asyncio.get_running_loop().create_task(post())
    memo.background.add(task)
    task.add_done_callback(memo.background.discard)


@kopf.on.validate(GROUP, VERSION, PLURAL, operations=["CREATE", "UPDATE"], id=VALIDATE_WEBHOOK_ID)
def validate_route(body: kopf.Body, namespace: str, memo: kopf.Memo, route_index: kopf.Index, **_: Any) -> None:
    problems = listener_conflicts(dict(body), list(route_index.get(namespace, ())), memo.options.inject.admin_port)
    if problems:
        raise kopf.AdmissionError("; ".join(problems), code=422)
