"""Loopback helpers: free ports and readiness probes (connect, HTTP GET)."""
from __future__ import annotations

import http.client
import socket

HOST = "127.0.0.1"


def free_ports(count: int, first: int = 20000, last: int = 32000) -> list[int]:
    """count ports that nothing listens on, below the ephemeral range (so clients never take them)."""
    found: list[int] = []
    for port in range(first, last):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError(f"fewer than {count} free ports in {first}..{last}")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_get(port: int, path: str, timeout_s: float = 1.0) -> tuple[int, bytes] | None:
    """(status, body) of one GET, or None when the server is not answering (yet)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def serves(port: int, path: str, body: bytes) -> bool:
    return http_get(port, path) == (200, body)
