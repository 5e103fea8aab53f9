"""The sidecar config contract (version 1): typed model, validation, loading, rendering.

The operator renders this config and the sidecar loads it; both import this
package. Structure is checked by the shipped JSON Schema
(ringlane_sidecar/schema/config-v1.json), cross-field rules in Python; every
error is one "path.to.field: message" string.
"""
from __future__ import annotations

from .durations import parse_duration_ms
from .errors import ConfigError
from .load import load_config
from .model import (
    AdminSettings,
    Backend,
    Cluster,
    Config,
    Endpoint,
    EngineSettings,
    Filter,
    Header,
    HeaderMatch,
    HeaderModifier,
    LabelSelector,
    LabelSelectorRequirement,
    Limits,
    Listener,
    Match,
    PathMatch,
    Retry,
    Rule,
    Timeouts,
    UrlRewrite,
)
from .parse import parse_config
from .render import config_hash, config_to_dict
from .select import select_for_pod, selector_matches
from .summary import summarize

__all__ = [
    "AdminSettings",
    "Backend",
    "Cluster",
    "Config",
    "ConfigError",
    "Endpoint",
    "EngineSettings",
    "Filter",
    "Header",
    "HeaderMatch",
    "HeaderModifier",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Limits",
    "Listener",
    "Match",
    "PathMatch",
    "Retry",
    "Rule",
    "Timeouts",
    "UrlRewrite",
    "config_hash",
    "config_to_dict",
    "load_config",
    "parse_config",
    "parse_duration_ms",
    "select_for_pod",
    "selector_matches",
    "summarize",
]
