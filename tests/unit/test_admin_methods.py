"""admin.py's method handling over a real socket: HEAD is a GET without the body (RFC 9110
9.3.2), a known path with another method is 405 with Allow (15.5.6), an unknown path 404; the
handler sees only the (method, path) pairs it serves."""
from __future__ import annotations

import asyncio

from ringlane_sidecar.admin import allowed_methods, start_admin

METHODS = {"/metrics": ("GET",), "/drain": ("POST",)}


async def _exchange(request: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    async def handler(method: str, path: str) -> tuple[int, str, bytes]:
        seen.append((method, path))
        return 200, "text/plain", b"twelve bytes"

    server = await start_admin("127.0.0.1", 0, handler, METHODS)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)  # Connection: close -> EOF
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    return data, seen


def exchange(method: str, path: str) -> tuple[str, dict[str, str], bytes, list[tuple[str, str]]]:
    data, seen = asyncio.run(_exchange(f"{method} {path} HTTP/1.1\r\nConnection: close\r\n\r\n".encode()))
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return lines[0], fields, body, seen


def test_head_is_a_get_without_the_body() -> None:
    status, fields, body, seen = exchange("HEAD", "/metrics")
    assert status == "HTTP/1.1 200 OK"
    assert fields["content-length"] == "12"  # what the GET would send
    assert body == b""
    assert seen == [("GET", "/metrics")]


def test_get_is_answered_with_its_body() -> None:
    status, fields, body, seen = exchange("GET", "/metrics?name=x")
    assert (status, body, seen) == ("HTTP/1.1 200 OK", b"twelve bytes", [("GET", "/metrics")])


def test_another_method_on_a_known_path_is_405_with_allow() -> None:
    status, fields, body, seen = exchange("POST", "/metrics")
    assert status == "HTTP/1.1 405 Method Not Allowed"
    assert fields["allow"] == "GET, HEAD"
    assert seen == []
    status, fields, _, seen = exchange("GET", "/drain")
    assert (status, fields["allow"], seen) == ("HTTP/1.1 405 Method Not Allowed", "POST", [])


def test_unknown_path_is_404_whatever_the_method() -> None:
    for method in ("GET", "HEAD", "POST"):
        status, fields, _, seen = exchange(method, "/nope")
        assert status == "HTTP/1.1 404 Not Found" and "allow" not in fields and seen == []


def test_allowed_methods() -> None:
    assert allowed_methods(METHODS, "/metrics") == ("GET", "HEAD")
    assert allowed_methods(METHODS, "/drain") == ("POST",)
    assert allowed_methods({"/x": ("GET", "HEAD")}, "/x") == ("GET", "HEAD")
    assert allowed_methods(METHODS, "/other") == ()
