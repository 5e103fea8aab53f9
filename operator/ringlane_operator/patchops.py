"""JSON Patch (RFC 6902) helpers: pointer escaping, and a small applier for add/remove/replace (pure)."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

Op = dict[str, Any]


def escape(token: str) -> str:
    """One JSON Pointer reference token (RFC 6901): "~" -> "~0", "/" -> "~1"."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    return "".join("/" + escape(str(t)) for t in tokens)


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    if not path.startswith("/"):
        raise ValueError(f"invalid JSON pointer {path!r}")
    tokens = [_unescape(t) for t in path[1:].split("/")]
    node = doc
    for token in tokens[:-1]:
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node, tokens[-1]


def apply_patch(doc: Any, ops: Sequence[Op]) -> Any:
    """A new document with the ops applied; KeyError/IndexError/ValueError on a bad op."""
    out = copy.deepcopy(doc)
    for op in ops:
        parent, key = _parent(out, op["path"])
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if key == "-" and kind == "add" else int(key)
            if kind == "add":
                if not 0 <= index <= len(parent):
                    raise IndexError(f"{op['path']}: index out of range")
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "remove":
                del parent[index]
            elif kind == "replace":
                parent[index] = copy.deepcopy(op["value"])
            else:
                raise ValueError(f"unsupported op {kind!r}")
        else:
            if kind in ("remove", "replace") and key not in parent:
                raise KeyError(f"{op['path']}: no such member")
            if kind == "remove":
                del parent[key]
            elif kind in ("add", "replace"):
                parent[key] = copy.deepcopy(op["value"])
            else:
                raise ValueError(f"unsupported op {kind!r}")
    return out
