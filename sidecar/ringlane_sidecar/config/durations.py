"""Gateway API (GEP-2257) durations: "250ms", "5s", "1m30s" -> integer milliseconds."""
from __future__ import annotations

import json
import re

# The exact GEP-2257 regex; the JSON Schema carries the same pattern.
DURATION_PATTERN = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
DURATION_HINT = "use e.g. 250ms, 5s, 1m30s"

_FULL = re.compile(r"(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}")
_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")  # "ms" before "m" so 5ms is not 5m + "s"
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}


def parse_duration_ms(text: str) -> int:
    """Parse a GEP-2257 duration; components add up like Go's time.ParseDuration."""
    if not isinstance(text, str) or _FULL.fullmatch(text) is None:
        shown = json.dumps(text) if isinstance(text, str) else type(text).__name__
        raise ValueError(f"invalid duration {shown} ({DURATION_HINT})")
    return sum(int(number) * _UNIT_MS[unit] for number, unit in _PART.findall(text))
