"""Where config comes from: a file (reloaded on change, including the kubelet's ..data
symlink swap for mounted ConfigMaps) and, in Kubernetes, a watch of the routes ConfigMap."""
from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from typing import Awaitable, Callable


@dataclass(frozen=True)
class FileStamp:
    real: str
    ino: int
    mtime_ns: int
    ctime_ns: int  # an in-place rewrite that keeps the mtime (cp -p, rsync -t --inplace) changes it
    size: int


def file_stamp(path: str) -> FileStamp | None:
    """Identity of the file behind path: a symlink swap or an in-place rewrite both change it."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return FileStamp(real, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


async def watch_file(path: str, on_change: Callable[[], Awaitable[None]], since: FileStamp | None,
                     interval: float = 0.2) -> None:
    """Awaits on_change whenever the file's identity changes (a cheap stat poll); one change at
    a time, so an older read never lands after a newer one. since: the stamp taken before the
    config in use was read (a change made after that read is not missed)."""
    last = since
    while True:
        await asyncio.sleep(interval)  # a poll period, not synchronisation
        now = file_stamp(path)
        if now != last:
            last = now
            await on_change()


def read_labels(path: str) -> dict[str, str]:
    """Pod labels from a downward-API file (key="value" per line)."""
    labels: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                labels[key] = value.strip().strip('"')
    return labels


def watch_configmap(namespace: str, name: str, key: str, on_text: Callable[[str | None], None],
                    stop: threading.Event, log: Callable[..., None]) -> threading.Thread:
    """Watches one ConfigMap with the pod's service-account token (the Role allows just it).

    Runs the kubernetes client's blocking watch in a thread; on_text is called with the key's
    text on every change (None when the ConfigMap or key is gone). Reconnects with backoff.
    """

    def run() -> None:
        from kubernetes import client, config, watch

        backoff = 0.5
        api = None
        while not stop.is_set():
            try:
                if api is None:  # no token yet (or a bad one): log, keep the file config, retry
                    config.load_incluster_config()
                    api = client.CoreV1Api()
                # List first (a quorum read): the current object is applied even if the watch
                # that follows fails, so every retry converges at worst at the backoff interval.
                listed = api.list_namespaced_config_map(namespace, field_selector=f"metadata.name={name}")
                on_text(((listed.items[0].data or {}) if listed.items else {}).get(key))
                w = watch.Watch()
                for ev in w.stream(api.list_namespaced_config_map, namespace, field_selector=f"metadata.name={name}",
                                   resource_version=listed.metadata.resource_version, timeout_seconds=300):
                    if stop.is_set():
                        w.stop()
                        break
                    cm = ev["object"]
                    data = (cm.data or {}) if ev["type"] != "DELETED" else {}
                    on_text(data.get(key))
                    backoff = 0.5
            except Exception as exc:  # network, API server restart: keep the last config, retry
                log("configmap watch failed", error=str(exc), retry_in=backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    t = threading.Thread(target=run, name="configmap-watch", daemon=True)
    t.start()
    return t
