"""ringlane-operator: entry point (the kopf operator lands with the operator issue)."""
from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("ringlane-operator: not built yet (see the operator issue)", file=sys.stderr)
    return 1
