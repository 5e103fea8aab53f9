"""Small semantic checks shared by several parts of the config."""
from __future__ import annotations

import json
from collections.abc import Callable

from .durations import parse_duration_ms
from .errors import Issue, Path, format_path
from .view import View


# The core keeps durations as 32-bit milliseconds (about 49.7 days); a whole number of hours
# under that reads better in an error than 4294967295ms.
MAX_DURATION_HOURS = 1193
MAX_DURATION_MS = MAX_DURATION_HOURS * 3_600_000


def checked_duration(v: View, path: Path, out: list[Issue], zero_ok: bool = False) -> int | None:
    """Milliseconds of a clean duration field. Zero is an error unless zero_ok (a zero timeout
    would fire at once), and so is more than the core can hold."""
    text = v.text(path)
    if text is None:
        return None
    try:
        ms = parse_duration_ms(text)
    except ValueError:
        return None  # already reported by the schema pattern
    if ms == 0 and not zero_ok:
        out.append((path, "must be greater than 0"))
        return None
    if ms > MAX_DURATION_MS:
        out.append((path, f"must be at most {MAX_DURATION_HOURS}h (got {text})"))
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
