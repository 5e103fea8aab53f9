"""The admin port: /metrics, /healthz, /ready, /config, POST /drain.

A deliberately small HTTP/1.1 server on the agent's asyncio loop (never on a worker), so
scrapes cost the data plane nothing but the counter reads.
"""
from __future__ import annotations

import asyncio
import json
import re
from typing import Awaitable, Callable, Mapping

Handler = Callable[[str, str], Awaitable[tuple[int, str, bytes]]]
Methods = Mapping[str, tuple[str, ...]]  # path -> the methods it takes (GET implies HEAD)

REASONS = {200: "OK", 202: "Accepted", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
           413: "Content Too Large", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}
MAX_BODY = 1 << 20  # no admin endpoint takes a body; this only bounds what is read and dropped
IO_TIMEOUT_S = 30  # a client that stalls (in a line, a body, or not reading) is closed after this


class _Refused(Exception):
    """A request the admin port answers with an error and then closes."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def json_body(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await asyncio.wait_for(reader.readline(), timeout=IO_TIMEOUT_S)
    except ValueError:  # longer than the stream's 64 KiB limit
        raise _Refused(431, "request line or header too long") from None


async def _read_request(reader: asyncio.StreamReader) -> tuple[list[str], bool] | None:
    """The request line's parts and whether to keep the connection; None at EOF."""
    line = await _line(reader)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    http10 = len(parts) == 3 and parts[2] == "HTTP/1.0"
    keep, length = not http10, 0  # RFC 9112 9.3: HTTP/1.0 persists only when asked to
    while True:  # headers
        h = await _line(reader)
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        if name == "connection":
            options = {o.strip().lower() for o in value.split(",")}
            keep = "close" not in options and (keep or "keep-alive" in options)
        if name == "content-length":
            # ASCII digits only ("²".isdigit() is true), and few: int() refuses 4300 digits
            if not re.fullmatch(r"[0-9]{1,18}", value):
                raise _Refused(400, f"invalid Content-Length {value[:40]!r}")
            length = int(value)
        if name == "transfer-encoding":
            raise _Refused(400, "Transfer-Encoding is not accepted here")
    if length > MAX_BODY:
        raise _Refused(413, f"body over {MAX_BODY} bytes")
    if length:
        await asyncio.wait_for(reader.readexactly(length), timeout=IO_TIMEOUT_S)
    if len(parts) != 3:
        raise _Refused(400, "malformed request line")
    return parts, keep


def allowed_methods(methods: Methods, path: str) -> tuple[str, ...]:
    """What the path takes; empty when there is no such path (RFC 9110 9.3.2: GET implies HEAD)."""
    allowed = methods.get(path, ())
    return allowed + ("HEAD",) if "GET" in allowed and "HEAD" not in allowed else allowed


def _response(status: int, ctype: str, body: bytes, keep: bool, *, head_only: bool = False,
              allow: tuple[str, ...] = ()) -> bytes:
    fields = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"Content-Type: {ctype}",
              f"Content-Length: {len(body)}"]  # a HEAD is told the length a GET would get
    if allow:
        fields.append(f"Allow: {', '.join(allow)}")
    if not keep:
        fields.append("Connection: close")
    return "\r\n".join(fields + ["", ""]).encode() + (b"" if head_only else body)


async def _answer(handler: Handler, methods: Methods, method: str, path: str, keep: bool) -> bytes:
    allowed = allowed_methods(methods, path)
    if not allowed:
        return _response(404, "text/plain", b"not found\n", keep)
    if method not in allowed:
        return _response(405, "text/plain", f"{path} takes {', '.join(allowed)}\n".encode(), keep, allow=allowed)
    status, ctype, body = await handler("GET" if method == "HEAD" else method, path)
    return _response(status, ctype, body, keep, head_only=method == "HEAD")


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler,
                     methods: Methods) -> None:
    try:
        while True:
            try:
                request = await _read_request(reader)
            except _Refused as exc:
                writer.write(_response(exc.status, "text/plain", f"{exc}\n".encode(), keep=False))
                await asyncio.wait_for(writer.drain(), timeout=IO_TIMEOUT_S)
                return
            if request is None:
                return
            parts, keep = request
            writer.write(await _answer(handler, methods, parts[0], parts[1].split("?", 1)[0], keep))
            await asyncio.wait_for(writer.drain(), timeout=IO_TIMEOUT_S)
            if not keep:
                return
    # CancelledError: the server closes at exit with clients still connected (a slow one mid-
    # request); asyncio would print each as a traceback.
    except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
        return
    finally:
        writer.close()


async def start_admin(host: str, port: int, handler: Handler, methods: Methods) -> asyncio.base_events.Server:
    """Serve `methods`' paths through `handler`; unknown paths are 404, other methods 405 with
    Allow, HEAD is a GET without the body."""
    return await asyncio.start_server(lambda r, w: _serve_one(r, w, handler, methods), host, port)
