"""ConfigError and the "path.to.field: message" error format."""
from __future__ import annotations

import json
import re

PathPart = str | int
Path = tuple[PathPart, ...]
Issue = tuple[Path, str]  # (where, what) before formatting

ROOT = "config"  # the path shown for errors about the whole document
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


class ConfigError(Exception):
    """A config was rejected; errors holds one "path: message" string per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def format_path(path: Path) -> str:
    """("listeners", 0, "address") -> "listeners[0].address"; odd keys are quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            text += f".{part}" if text else part
        else:  # label keys like app.kubernetes.io/name would read as nested fields
            text += f"[{json.dumps(part, ensure_ascii=False)}]"
    if not text:
        return ROOT
    return ROOT + text if text.startswith("[") else text


def format_issue(issue: Issue) -> str:
    return f"{format_path(issue[0])}: {issue[1]}"
