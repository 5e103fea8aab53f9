"""`ringlane-sidecar check`: validate a config file and say what is wrong, line by line."""
from __future__ import annotations

from typing import TextIO

EXIT_OK = 0
EXIT_INVALID = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE


def run_check(path: str, out: TextIO, err: TextIO) -> int:
    """Print the summary (exit 0) or one "FILE: path: message" line per error (exit 2)."""
    try:
        from ringlane_sidecar.config import ConfigError, load_config, summarize

        try:
            cfg = load_config(path)
        except ConfigError as exc:
            for error in exc.errors:
                print(f"{path}: {error}", file=err)
            return EXIT_INVALID
        print(summarize(cfg), file=out)
        return EXIT_OK
    except Exception as exc:  # the user edge: a bug prints one line, never a traceback
        print(f"internal error: {type(exc).__name__}: {exc}", file=err)
        return EXIT_INTERNAL
