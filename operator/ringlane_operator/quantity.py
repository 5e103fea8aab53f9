"""Kubernetes resource quantities ("128Mi", "1", "500m", "1e3") as exact Decimals (pure)."""
from __future__ import annotations

import re
from decimal import Decimal

_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?")
_FACTORS = {
    None: Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}


def parse_quantity(text: object) -> Decimal:
    """ValueError when text is not a Kubernetes quantity."""
    match = _QUANTITY.fullmatch(str(text).strip()) if isinstance(text, (str, int)) else None
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 128Mi, 1Gi, 500M)")
    number, suffix = Decimal(match[1]), match[2]
    if suffix is not None and suffix[0] in "eE" and len(suffix) > 1:
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _FACTORS[suffix]
