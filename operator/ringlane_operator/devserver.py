"""The webhook server with its configurations managed by the operator (the edge).

In --dev mode it also makes a throwaway self-signed certificate with the openssl command
(kopf's own generator needs the certbuilder package, which Ringlane does not depend on).
"""
from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kopf

log = logging.getLogger(__name__)
ClientConfig = dict[str, Any]


def self_signed_certificate(host: str, directory: str | None = None) -> tuple[str, str]:
    """(cert file, key file) for host (an IP or a DNS name), valid 30 days, its own CA."""
    where = Path(directory or tempfile.mkdtemp(prefix="ringlane-webhook-"))
    cert, key = where / "tls.crt", where / "tls.key"
    san = f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
         "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={host}",
         "-addext", f"subjectAltName={san}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
         "-addext", "extendedKeyUsage=serverAuth"],
        check=True, capture_output=True)
    key.chmod(0o600)
    return str(cert), str(key)


class ManagedWebhookServer(kopf.WebhookServer):
    """kopf's HTTPS server; each client config it yields goes to `publish` (our webhook
    configurations), and `withdraw` runs when the server stops (--dev: delete them)."""

    def __init__(self, *, publish: Callable[[ClientConfig], Awaitable[None]] | None = None,
                 withdraw: Callable[[], Awaitable[None]] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.publish = publish
        self.withdraw = withdraw

    async def __call__(self, fn: Any) -> AsyncIterator[ClientConfig]:  # type: ignore[override]
        try:
            async for client_config in super().__call__(fn):
                if self.publish is not None:
                    await self.publish(dict(client_config))
                    log.info("webhook configurations point at %s", client_config.get("url"))
                yield client_config
        finally:
            if self.withdraw is not None:
                await self.withdraw()
