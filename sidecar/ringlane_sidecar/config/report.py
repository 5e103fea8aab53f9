"""Order, format and deduplicate issues into the final error list."""
from __future__ import annotations

from typing import Any

from .errors import Issue, Path, format_issue


def finalize(doc: Any, issues: list[Issue]) -> list[str]:
    """Errors in document order (a stable sort keeps schema before semantic at one path), each once."""
    ordered = sorted(issues, key=lambda issue: _position(doc, issue[0]))
    return list(dict.fromkeys(format_issue(issue) for issue in ordered))


def _position(doc: Any, path: Path) -> tuple[tuple[int, int], ...]:
    """Where path appears in doc; a missing field sorts where its enclosing mapping starts."""
    key: list[tuple[int, int]] = []
    node = doc
    for part in path:
        if isinstance(part, int):
            key.append((0, part))
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        elif isinstance(node, dict) and part in node:
            key.append((0, list(node).index(part)))
            node = node[part]
        else:
            key.append((-1, 0))
            node = None
    return tuple(key)
