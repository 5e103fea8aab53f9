"""JSON-lines logging for the agent: one object per line on stderr, easy for kubectl logs + jq."""
from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class JsonLog:
    def __init__(self, level: str = "info", stream: TextIO | None = None) -> None:
        self.min = LEVELS.get(level, 20)
        self.stream = stream or sys.stderr

    def log(self, level: str, msg: str, **fields: Any) -> None:
        if LEVELS[level] < self.min:
            return
        rec = {"ts": round(time.time(), 3), "level": level, "msg": msg, **fields}
        self.stream.write(json.dumps(rec, default=str) + "\n")
        self.stream.flush()

    def debug(self, msg: str, **f: Any) -> None:
        self.log("debug", msg, **f)

    def info(self, msg: str, **f: Any) -> None:
        self.log("info", msg, **f)

    def warning(self, msg: str, **f: Any) -> None:
        self.log("warning", msg, **f)

    def error(self, msg: str, **f: Any) -> None:
        self.log("error", msg, **f)
