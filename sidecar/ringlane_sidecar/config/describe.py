"""Short human descriptions of values and JSON types for error messages (never a Python repr)."""
from __future__ import annotations

import json

_JSON_TYPES = {"object": "mapping", "array": "list"}
_MAX = 60


def type_name(value: object) -> str:
    """The JSON-ish name of a value's type: mapping, list, string, integer, ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__  # e.g. date, from an unquoted YAML 2024-01-01


def json_type_name(name: str) -> str:
    """Schema type name as users say it ("object" -> "mapping")."""
    return _JSON_TYPES.get(name, name)


def describe(value: object) -> str:
    """A value as it would be written in JSON, shortened; containers by kind only."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None or isinstance(value, bool | int | float | str):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= _MAX else text[: _MAX - 4] + '..."'
    return f"a {type(value).__name__}"
