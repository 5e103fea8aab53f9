"""The admin port: /metrics, /healthz, /ready, /config, POST /drain.

A deliberately small HTTP/1.1 server on the agent's asyncio loop (never on a worker), so
scrapes cost the data plane nothing but the counter reads.
"""
from __future__ import annotations

import asyncio
import json
from typing import Awaitable, Callable

Handler = Callable[[str, str], Awaitable[tuple[int, str, bytes]]]

REASONS = {200: "OK", 202: "Accepted", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
           503: "Service Unavailable"}


def json_body(obj: object) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler) -> None:
    try:
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout=30)
            if not line:
                return
            parts = line.decode("latin-1").split()
            keep = True
            length = 0
            while True:  # headers
                h = await asyncio.wait_for(reader.readline(), timeout=30)
                if h in (b"\r\n", b"\n", b""):
                    break
                name, _, value = h.decode("latin-1").partition(":")
                if name.strip().lower() == "connection" and value.strip().lower() == "close":
                    keep = False
                if name.strip().lower() == "content-length":
                    length = int(value.strip() or 0)
            if length:
                await reader.readexactly(min(length, 1 << 20))
            if len(parts) != 3:
                status, ctype, body = 400, "text/plain", b"bad request\n"
                keep = False
            else:
                status, ctype, body = await handler(parts[0], parts[1].split("?", 1)[0])
            head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\n{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
            if not keep:
                return
    except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()


async def start_admin(host: str, port: int, handler: Handler) -> asyncio.base_events.Server:
    return await asyncio.start_server(lambda r, w: _serve_one(r, w, handler), host, port)
