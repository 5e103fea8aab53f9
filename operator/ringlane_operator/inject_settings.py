"""Injection settings (operator-wide) and the per-pod override annotations (pure).

A bad override raises InjectError naming the annotation; the webhook turns it into an
admission rejection, so the user sees the problem at `kubectl apply` time rather than as a
crash-looping sidecar.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .names import CONTAINER
from .quantity import parse_quantity

CPU_ANNOTATION = "ringlane.io/proxy-cpu"
MEMORY_ANNOTATION = "ringlane.io/proxy-memory"
ENGINE_ANNOTATION = "ringlane.io/engine"
LOG_LEVEL_ANNOTATION = "ringlane.io/log-level"
ADMIN_PORT_ANNOTATION = "ringlane.io/admin-port"

ENGINES = ("auto", "io_uring", "epoll")
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_MEMORY = parse_quantity("64Mi")  # the Python agent alone needs ~40 MiB
MAX_CPU = 256  # the sidecar's worker limit (RL_MAX_WORKERS)


class InjectError(ValueError):
    """A pod the webhook must refuse; the message names the annotation and the fix."""

    def __init__(self, annotation: str, value: object, problem: str) -> None:
        super().__init__(f"annotation {annotation}={value!r}: {problem}")
        self.annotation = annotation


@dataclass(frozen=True, slots=True)
class InjectSettings:
    image: str = "localhost/ringlane:dev"
    image_pull_policy: str = "IfNotPresent"
    command: tuple[str, ...] = ("ringlane-sidecar",)
    cpu: int = 1  # whole CPUs, requests == limits: the static CPU manager pins it
    memory: str = "128Mi"
    admin_port: int = 9901
    engine: str = "auto"
    log_level: str = "info"
    seccomp_profile: str = "ringlane/proxy-io_uring.json"  # Localhost, relative to the kubelet's seccomp dir
    seccomp_profile_epoll: str | None = None  # for sidecars whose engine is epoll (None: seccomp_profile)
    prestop_sleep: int = 5  # seconds before SIGTERM (0: no preStop hook)
    drain_seconds: int = 20  # the sidecar's default limits.drainTimeout, for the grace-period check
    native_sidecar: bool = True  # init container with restartPolicy Always (Kubernetes >= 1.29)
    run_as_user: int = 65532


@dataclass(frozen=True, slots=True)
class ProxyParams:
    """The effective values for one pod: settings overridden by its annotations."""

    cpu: int
    memory: str
    engine: str
    log_level: str
    admin_port: int
    prestop_sleep: int  # seconds; the API server wants it below terminationGracePeriodSeconds


DEFAULT_GRACE_SECONDS = 30


def grace_seconds(pod: Mapping[str, Any]) -> int:
    grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
    return DEFAULT_GRACE_SECONDS if grace is None else int(grace)


def proxy_params(pod: Mapping[str, Any], settings: InjectSettings) -> ProxyParams:
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    return ProxyParams(
        cpu=_cpu(ann.get(CPU_ANNOTATION), settings.cpu),
        memory=_memory(ann.get(MEMORY_ANNOTATION), settings.memory),
        engine=_choice(ENGINE_ANNOTATION, ann.get(ENGINE_ANNOTATION), ENGINES, settings.engine),
        log_level=_choice(LOG_LEVEL_ANNOTATION, ann.get(LOG_LEVEL_ANNOTATION), LOG_LEVELS, settings.log_level),
        admin_port=_admin_port(pod, ann.get(ADMIN_PORT_ANNOTATION), settings.admin_port),
        prestop_sleep=max(0, min(settings.prestop_sleep, grace_seconds(pod) - 1)),
    )


def _cpu(value: str | None, default: int) -> int:
    if value is None:
        return default
    if not re.fullmatch(r"[1-9][0-9]{0,3}", value.strip()) or int(value) > MAX_CPU:
        raise InjectError(CPU_ANNOTATION, value, f"must be a whole number of CPUs from 1 to {MAX_CPU} "
                          "(the static CPU manager pins only integer CPU requests), e.g. \"2\"")
    return int(value)


def _memory(value: str | None, default: str) -> str:
    if value is None:
        return default
    try:
        amount = parse_quantity(value)
    except ValueError:
        raise InjectError(MEMORY_ANNOTATION, value, "is not a Kubernetes quantity (e.g. 128Mi, 1Gi)") from None
    if amount != amount.to_integral_value():
        raise InjectError(MEMORY_ANNOTATION, value, "must be a whole number of bytes (e.g. 128Mi, 1Gi)")
    if amount < MIN_MEMORY:
        raise InjectError(MEMORY_ANNOTATION, value, "must be at least 64Mi")
    return value.strip()


def _choice(annotation: str, value: str | None, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise InjectError(annotation, value, f"must be one of {', '.join(allowed)}")
    return value


def container_ports(pod: Mapping[str, Any]) -> dict[int, str]:
    """Declared container ports of the pod's own containers -> container name."""
    spec = pod.get("spec") or {}
    out: dict[int, str] = {}
    for c in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        if c.get("name") == CONTAINER:
            continue
        for p in c.get("ports") or ():
            if p.get("containerPort") is not None:
                out.setdefault(int(p["containerPort"]), c.get("name", "?"))
    return out


def _admin_port(pod: Mapping[str, Any], value: str | None, default: int) -> int:
    if value is None:
        port = default
    elif not re.fullmatch(r"[0-9]{1,5}", value.strip()) or not 1 <= int(value) <= 65535:
        raise InjectError(ADMIN_PORT_ANNOTATION, value, "must be a port number from 1 to 65535")
    else:
        port = int(value)
    clash = container_ports(pod).get(port)
    if clash is not None:
        shown = value if value is not None else "(default)"
        raise InjectError(ADMIN_PORT_ANNOTATION, shown, f"the sidecar's admin port {port} is container {clash}'s "
                          "port; choose another with this annotation")
    return port
