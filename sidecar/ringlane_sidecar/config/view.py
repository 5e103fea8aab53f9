"""Read-only access to a schema-checked document that knows which parts failed.

Semantic checks read only parts without structural errors, so a bad value is
reported once (by the schema) and never trips a second, confusing error.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import Path


class View:
    def __init__(self, doc: Mapping[str, Any], bad: Iterable[Path]) -> None:
        self.doc = doc
        self.bad = tuple(set(bad))

    def clean(self, path: Path) -> bool:
        """No structural error at, above or below path."""
        return not any(b[: len(path)] == path[: len(b)] for b in self.bad)

    def intact(self, path: Path) -> bool:
        """No structural error at or above path (errors inside it are allowed)."""
        return not any(len(b) <= len(path) and path[: len(b)] == b for b in self.bad)

    def get(self, path: Path, default: Any = None) -> Any:
        node: Any = self.doc
        for part in path:
            if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
            elif isinstance(part, str) and isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return default
        return node

    def text(self, path: Path, default: str | None = None) -> str | None:
        """A clean string field (or default when absent), else None."""
        if not self.clean(path):
            return None
        value = self.get(path, default)
        return value if isinstance(value, str) else None

    def items(self, path: Path) -> list[tuple[Path, dict[str, Any]]]:
        """(path, mapping) for each mapping in the list at path, if the list itself is sound."""
        value = self.get(path)
        if not self.intact(path) or not isinstance(value, list):
            return []
        return [(path + (i,), item) for i, item in enumerate(value) if isinstance(item, dict)]

    def strings(self, path: Path) -> list[tuple[Path, str]]:
        """(path, string) for each clean string in the list at path."""
        value = self.get(path)
        if not self.intact(path) or not isinstance(value, list):
            return []
        return [(path + (i,), s) for i, s in enumerate(value) if isinstance(s, str) and self.clean(path + (i,))]
