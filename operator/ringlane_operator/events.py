"""Events about pods at admission (pure): the pod may have no name yet (generateName is
resolved after admission), so the Event goes to its controller (e.g. its ReplicaSet)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Body = dict[str, Any]
COMPONENT = "ringlane-operator"


def admission_event_target(pod: Mapping[str, Any], namespace: str) -> Body | None:
    """The object an admission-time Event about this pod should be about, or None."""
    meta = pod.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or () if o.get("controller")), None)
    if owner is not None:
        return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["name"],
                "uid": owner["uid"], "namespace": namespace}
    if meta.get("name"):
        return {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": namespace}
    return None


def event_body(target: Mapping[str, Any], type_: str, reason: str, message: str, now: str, instance: str) -> Body:
    """A core/v1 Event (what `kubectl describe` and `kubectl get events` show)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{target['name']}.", "namespace": target["namespace"]},
        "involvedObject": dict(target),
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
