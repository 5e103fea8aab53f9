"""Read a config file (JSON or YAML) and parse it."""
from __future__ import annotations

import os
import stat

from .decode import decode_document
from .errors import ROOT, ConfigError
from .model import Config
from .parse import parse_config

MAX_BYTES = 4 * 1024 * 1024  # a ConfigMap holds at most 1 MiB


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load, validate and build; every problem (file, syntax, content) is a ConfigError."""
    return parse_config(decode_document(read_text(path)))


def read_text(path: str | os.PathLike[str]) -> str:
    try:
        # Non-blocking: opening a FIFO for reading would wait for a writer (a reload, for ever).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as handle:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise _error("is a FIFO, expected a file")
            data = handle.read(MAX_BYTES + 1)
    except IsADirectoryError:
        raise _error("is a directory, expected a file") from None
    except OSError as exc:
        raise _error(f"cannot read file: {(exc.strerror or type(exc).__name__).lower()}") from None
    if len(data) > MAX_BYTES:
        raise _error(f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8-sig")  # -sig: tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise _error(f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def _error(message: str) -> ConfigError:
    return ConfigError([f"{ROOT}: {message}"])
