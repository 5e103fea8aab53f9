"""Small semantic checks shared by several parts of the config."""
from __future__ import annotations

import json
from collections.abc import Callable

from .durations import parse_duration_ms
from .errors import Issue, Path, format_path
from .view import View


def positive_duration(v: View, path: Path, out: list[Issue]) -> int | None:
    """Milliseconds of a clean duration field; a zero timeout is an error (it would fire at once)."""
    text = v.text(path)
    if text is None:
        return None
    try:
        ms = parse_duration_ms(text)
    except ValueError:
        return None  # already reported by the schema pattern
    if ms == 0:
        out.append((path, "must be greater than 0"))
        return None
    return ms


def unique(
    entries: list[tuple[Path, str]],
    what: str,
    out: list[Issue],
    key: Callable[[str], object] = lambda s: s,
    note: str = "",
) -> None:
    """Report every repeat of an earlier entry, pointing at the first one."""
    first: dict[object, Path] = {}
    for path, value in entries:
        k = key(value)
        if k in first:
            out.append((path, f"duplicate {what} {json.dumps(value)} (first at {format_path(first[k])}{note})"))
        else:
            first[k] = path
