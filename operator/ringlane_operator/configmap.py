"""The routes ConfigMap of a namespace: its desired body, generation and owners (pure).

The generation is a counter kept in the ConfigMap itself (annotation, and the config's own
`generation`), bumped only when the rendered content changes, so restarts of the operator
and no-op renders do not make every sidecar reload. Its ownerReferences list every live
ProxyRoute of the namespace (none is the controller), so the garbage collector removes the
ConfigMap when the last route goes away while the operator is not there to do it; while the
operator runs, deleting the last route leaves an empty config with no owners, which tells
the sidecars to stop serving instead of keeping their last rules.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ringlane_sidecar.config import Config, config_hash, config_to_dict

from .names import API_VERSION, CONFIG_KEY, CONFIGMAP, GENERATION_ANNOTATION, HASH_ANNOTATION, KIND, MANAGED_BY

Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConfigMapPlan:
    generation: int
    body: Body | None  # the full object to create or replace; None: already as desired
    create: bool = False


def content_hash(cfg: Config) -> str:
    """The config's hash with the generation left out: equal content, equal hash."""
    return config_hash(replace(cfg, generation=0))


def config_text(cfg: Config) -> str:
    return json.dumps(config_to_dict(cfg), separators=(",", ":"))


def owner_references(routes: Sequence[Mapping[str, Any]]) -> list[Body]:
    refs = [
        {"apiVersion": API_VERSION, "kind": KIND, "name": r["metadata"]["name"], "uid": r["metadata"]["uid"],
         "controller": False, "blockOwnerDeletion": False}
        for r in routes
        if (r.get("metadata") or {}).get("uid") and not r["metadata"].get("deletionTimestamp")
    ]
    return sorted(refs, key=lambda ref: (ref["name"], ref["uid"]))


def current_generation(existing: Mapping[str, Any] | None) -> int:
    if not existing:
        return 0
    text = ((existing.get("metadata") or {}).get("annotations") or {}).get(GENERATION_ANNOTATION)
    if text is not None and text.isdigit():
        return int(text)
    try:  # hand-made or older: fall back to the config's own field
        return int(json.loads((existing.get("data") or {}).get(CONFIG_KEY) or "{}").get("generation", 0))
    except (ValueError, TypeError, AttributeError):
        return 0


def plan_configmap(
    namespace: str,
    cfg: Config,
    routes: Sequence[Mapping[str, Any]],
    existing: Mapping[str, Any] | None,
) -> ConfigMapPlan:
    old_gen = current_generation(existing)
    digest = content_hash(cfg)
    owners = owner_references(routes)
    meta = dict((existing or {}).get("metadata") or {})
    old_text = ((existing or {}).get("data") or {}).get(CONFIG_KEY)
    old_hash = (meta.get("annotations") or {}).get(HASH_ANNOTATION)
    same_content = existing is not None and old_hash == digest and old_text == config_text(replace(cfg, generation=old_gen))
    generation = old_gen if same_content else old_gen + 1
    labels = {**(meta.get("labels") or {}), **MANAGED_BY}
    annotations = {**(meta.get("annotations") or {}), HASH_ANNOTATION: digest, GENERATION_ANNOTATION: str(generation)}
    body: Body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": owners,
        },
        "data": {CONFIG_KEY: config_text(replace(cfg, generation=generation))},
    }
    if existing is None:
        return ConfigMapPlan(generation, body, create=True)
    if same_content and meta.get("labels") == labels and meta.get("annotations") == annotations \
            and (meta.get("ownerReferences") or []) == owners:
        return ConfigMapPlan(generation, None)
    if meta.get("resourceVersion"):
        body["metadata"]["resourceVersion"] = meta["resourceVersion"]  # replace only what we read
    return ConfigMapPlan(generation, body)
