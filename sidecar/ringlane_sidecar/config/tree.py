"""Turn any decoded document into a plain JSON-like tree the validators can trust.

YAML can produce things JSON cannot: non-string keys, recursive aliases, and
"billion laughs" alias bombs. Those are reported here instead of crashing or
hanging the validators. Other odd scalars (dates, bytes) pass through; the
schema reports them as wrong types.
"""
from __future__ import annotations

from collections.abc import Mapping

from .describe import describe, type_name
from .errors import Issue, Path

MAX_DEPTH = 32  # valid configs nest about 10 deep
MAX_NODES = 1_000_000  # ~50x the largest sane config; stops alias bombs


class UnusableDocument(Exception):
    """A document that cannot be validated at all (cycle, depth, size)."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.issue: Issue = (path, message)


def json_tree(data: object) -> tuple[object, list[Issue]]:
    """Copy data as dicts, lists and scalars; return (tree, issues). Raises UnusableDocument."""
    issues: list[Issue] = []
    return _copy(data, (), set(), [MAX_NODES], issues), issues


def _copy(node: object, path: Path, active: set[int], budget: list[int], issues: list[Issue]) -> object:
    budget[0] -= 1
    if budget[0] < 0:
        raise UnusableDocument((), f"document is too large (more than {MAX_NODES} values; YAML aliases expanded)")
    if not isinstance(node, Mapping | list | tuple):
        return node
    if len(path) > MAX_DEPTH:
        raise UnusableDocument(path, f"nested too deeply (more than {MAX_DEPTH} levels)")
    if id(node) in active:
        raise UnusableDocument(path, "recursive YAML alias (a value contains itself)")
    active.add(id(node))
    try:
        if isinstance(node, Mapping):
            out: dict[str, object] = {}
            for key, value in node.items():
                if isinstance(key, str):
                    out[key] = _copy(value, path + (key,), active, budget, issues)
                else:
                    issues.append((path, f"field names must be strings, got {_key_text(key)}"))
            return out
        return [_copy(item, path + (index,), active, budget, issues) for index, item in enumerate(node)]
    finally:
        active.discard(id(node))


def _key_text(key: object) -> str:
    if isinstance(key, bool | int | float):
        return f"{type_name(key)} {describe(key)}"
    return describe(key)
