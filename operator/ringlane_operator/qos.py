"""Pod QoS as the kubelet sees it, for the "cannot be pinned" warning (pure)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .names import CONTAINER
from .quantity import parse_quantity


def not_guaranteed_reason(pod: Mapping[str, Any]) -> str | None:
    """Why the pod is not Guaranteed QoS (None when it is), ignoring the injected sidecar.

    Guaranteed: every container (init containers included) has cpu and memory limits and
    requests equal to them; an unset request defaults to the limit, as the API server does.
    """
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        if c.get("name") == CONTAINER:
            continue
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        for resource in ("cpu", "memory"):
            name = c.get("name", "?")
            if resource not in limits:
                return f"container {name} has no {resource} limit"
            if resource in requests and _differ(requests[resource], limits[resource]):
                return f"container {name}: {resource} request {requests[resource]} != limit {limits[resource]}"
    return None


def _differ(a: object, b: object) -> bool:
    try:
        return parse_quantity(a) != parse_quantity(b)
    except ValueError:
        return str(a) != str(b)
