"""RouteFacts -> ProxyRoute status (Gateway API conditions), and the Events worth posting (pure)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .names import CONFIGMAP
from .render import RouteFacts

Status = dict[str, Any]
CONDITION_TYPES = ("Accepted", "ResolvedRefs", "Programmed")


def route_status(facts: RouteFacts, old: Mapping[str, Any] | None, now: str) -> Status:
    """The whole status; lastTransitionTime moves only when a condition's status changes."""
    previous = {c.get("type"): c for c in (old or {}).get("conditions") or ()}
    conditions = []
    for type_, status, reason, message in _conditions(facts):
        before = previous.get(type_) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        conditions.append({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": facts.generation,
            "lastTransitionTime": since or now,
        })
    return {"observedGeneration": facts.generation, "endpoints": facts.endpoints, "conditions": conditions}


def _conditions(f: RouteFacts) -> list[tuple[str, str, str, str]]:
    if f.accepted:
        accepted = ("Accepted", "True", "Accepted", f"{len(f.rules)} rule(s) accepted")
        programmed = ("Programmed", "True", "Programmed", f"rules are in ConfigMap {CONFIGMAP}")
    else:
        accepted = ("Accepted", "False", f.reason, f.message)
        programmed = ("Programmed", "False", "Invalid", f"not programmed: {f.message}")
    if not f.resolved:
        refs = ("ResolvedRefs", "Unknown", "Pending", "backendRefs were not resolved: the route could not be rendered")
    elif f.ref_problems:
        refs = ("ResolvedRefs", "False", "BackendNotFound", "; ".join(f.ref_problems))
    else:
        refs = ("ResolvedRefs", "True", "ResolvedRefs", "all backendRefs resolved")
    return [accepted, refs, programmed]


def status_changed(old: Mapping[str, Any] | None, new: Status) -> bool:
    return dict(old or {}) != new


def transitions(old: Mapping[str, Any] | None, new: Status) -> list[tuple[str, str, str]]:
    """(event type, reason, message) for each condition that changed: Warning when it went bad,
    Normal when it recovered. A route seen for the first time gets events only for problems."""
    previous = {c.get("type"): c for c in (old or {}).get("conditions") or ()}
    out: list[tuple[str, str, str]] = []
    for cond in new["conditions"]:
        before = previous.get(cond["type"])
        same = before is not None and all(before.get(k) == cond[k] for k in ("status", "reason", "message"))
        if same:
            continue
        if cond["status"] == "False":
            out.append(("Warning", cond["reason"], f"{cond['type']}: {cond['message']}"))
        elif cond["status"] == "True" and before is not None and before.get("status") != "True":
            out.append(("Normal", cond["reason"], f"{cond['type']}: {cond['message']}"))
    return out
