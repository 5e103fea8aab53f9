"""Turn jsonschema ValidationErrors into (path, human message) issues.

jsonschema's own messages are Python reprs ("{'a': 1} is not valid under any of
the given schemas"); users get "field: expected integer, got string" instead.
A schema node may override a keyword's message with "x-messages": {keyword:
template}, where {value} is the offending value and {got} its type.
"""
from __future__ import annotations

from typing import Any

from .describe import describe, json_type_name, type_name
from .errors import Issue, Path

_SHAPE_KEYWORDS = {"type", "const", "enum"}  # an alternative that fails these does not fit at all


def translate(error: Any) -> list[Issue]:
    path: Path = tuple(error.absolute_path)
    keyword = error.validator
    instance = error.instance
    if "propertyNames" in error.relative_schema_path:
        path += (instance,)  # the bad key itself, not the mapping holding it
    if keyword == "required":
        return [(path + (name,), "required") for name in error.validator_value if name not in instance]
    if keyword == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties", {})
        return [(path + (key,), "unknown field") for key in instance if key not in known]
    if keyword in ("oneOf", "anyOf"):
        return _alternatives(error, path)
    return [(path, _message(error))]


def _alternatives(error: Any, path: Path) -> list[Issue]:
    """Report inside the one alternative whose kind fits the value, else list the forms."""
    failed: dict[int, list[Any]] = {}
    for sub in error.context:
        failed.setdefault(sub.relative_schema_path[0], []).append(sub)
    if len(failed) < len(error.validator_value):
        return [(path, "matches more than one of the allowed forms")]
    fitting = [subs for subs in failed.values() if not any(_rejects_kind(sub) for sub in subs)]
    if len(fitting) == 1:
        return [issue for sub in fitting[0] for issue in translate(sub)]
    return [(path, _message(error))]


def _rejects_kind(error: Any) -> bool:
    return error.validator in _SHAPE_KEYWORDS and not error.relative_path


def _message(error: Any) -> str:
    custom = error.schema.get("x-messages", {}).get(error.validator) if isinstance(error.schema, dict) else None
    if isinstance(custom, str):
        return custom.format(value=describe(error.instance), got=type_name(error.instance))
    return _generic(error.validator, error.validator_value, error.instance)


def _generic(keyword: str | None, expected: Any, value: Any) -> str:
    size = len(value) if isinstance(value, str | list | dict) else 0
    match keyword:
        case "type":
            names = [expected] if isinstance(expected, str) else list(expected)
            text = f"expected {' or '.join(json_type_name(n) for n in names)}, got {type_name(value)}"
            if "string" in names and value is not None and not isinstance(value, str | list | dict):
                text += " (put it in quotes)"
            return text
        case "enum":
            return f"must be one of {', '.join(_plain(x) for x in expected)}, got {describe(value)}"
        case "const":
            return f"must be {describe(expected)}, got {describe(value)}"
        case "minimum":
            return f"must be at least {expected}, got {describe(value)}"
        case "maximum":
            return f"must be at most {expected}, got {describe(value)}"
        case "exclusiveMinimum":
            return f"must be greater than {expected}, got {describe(value)}"
        case "exclusiveMaximum":
            return f"must be less than {expected}, got {describe(value)}"
        case "minItems" | "minLength" | "minProperties" if expected == 1:
            return "must not be empty"
        case "minItems":
            return f"must have at least {expected} items, got {size}"
        case "maxItems":
            return f"must have at most {expected} items, got {size}"
        case "minLength":
            return f"must be at least {expected} characters long, got {size}"
        case "maxLength":
            return f"must be at most {expected} characters long, got {size}"
        case "minProperties":
            return f"must have at least {expected} fields, got {size}"
        case "maxProperties":
            return f"must have at most {expected} fields, got {size}"
        case "pattern":
            return f"invalid value {describe(value)} (must match {expected})"
        case "uniqueItems":
            return "must not contain duplicates"
        case None:
            return "not allowed here"
    return f"is not valid ({keyword})"


def _plain(value: object) -> str:
    return value if isinstance(value, str) else describe(value)
