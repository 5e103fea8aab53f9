"""The validation pipeline: sanitize, schema, semantic checks, one ordered error list."""
from __future__ import annotations

from typing import Any

from .describe import type_name
from .errors import ROOT, format_issue
from .report import finalize
from .schema import schema_issues
from .semantic import semantic_issues
from .tree import UnusableDocument, json_tree


def validate_document(data: object) -> tuple[dict[str, Any] | None, list[str]]:
    """(plain document, errors); the document is only safe to build from when errors is empty."""
    try:
        tree, issues = json_tree(data)
    except UnusableDocument as exc:
        return None, [format_issue(exc.issue)]
    if not isinstance(tree, dict):
        return None, [f"{ROOT}: expected a mapping at the top level, got {type_name(tree)}"]
    issues += schema_issues(tree)
    # Semantic checks skip every part with a structural error, so nothing cascades.
    issues += semantic_issues(tree, [path for path, _ in issues])
    return tree, finalize(tree, issues)
