"""IP-literal socket addresses ("10.0.0.1:8080", "[::1]:8080") and hostname helpers."""
from __future__ import annotations

import ipaddress
import json
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Shape only (the JSON Schema carries the same pattern); octet ranges, IPv6 syntax
# and the port range are checked by parse_address, which can say precisely what is wrong.
ADDRESS_PATTERN = r"^(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]+\]):(?:0|[1-9][0-9]{0,4})$"
ADDRESS_HINT = "use an IP and a port, e.g. 10.0.0.1:8080 or [::1]:8080"

_ADDRESS = re.compile(r"(?:(?P<v4>[0-9.]+)|\[(?P<v6>[0-9A-Fa-f:.]+)\]):(?P<port>0|[1-9][0-9]{0,4})")


def parse_address(text: str) -> tuple[str, int]:
    """Split "IP:port" into (host without brackets, port); ValueError says what is wrong."""
    shown = json.dumps(text) if isinstance(text, str) else type(text).__name__
    match = _ADDRESS.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid address {shown} ({ADDRESS_HINT})")
    host = match["v4"] or match["v6"]
    try:
        ipaddress.IPv4Address(host) if match["v4"] else ipaddress.IPv6Address(host)
    except ValueError:
        family = "IPv4" if match["v4"] else "IPv6"
        raise ValueError(f"invalid address {shown}: {host} is not a valid {family} address") from None
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"invalid address {shown}: port must be 1..65535, got {port}")
    return host, port


def is_ip_literal(text: str) -> bool:
    """True for "10.0.0.1" or "::1" (hostnames must be names, as in Gateway API)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def addresses_overlap(a: IPAddress, b: IPAddress) -> bool:
    """Whether binding the same port on both would collide (Linux, dual-stack [::])."""
    if a == b:
        return True
    for wildcard, other in ((a, b), (b, a)):
        if wildcard.is_unspecified and (wildcard.version == 6 or other.version == 4):
            return True
    return False
