"""Load the shipped JSON Schema and run it (Draft 2020-12), collecting every error."""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

from .errors import Issue
from .translate import translate

SCHEMA_PACKAGE = "ringlane_sidecar"
SCHEMA_RESOURCE = "schema/config-v1.json"


@functools.cache
def load_schema() -> dict[str, Any]:
    """The config-v1 JSON Schema as shipped in the package."""
    text = files(SCHEMA_PACKAGE).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _regex(pattern: str) -> re.Pattern[str]:
    # Schema patterns are ECMA-262, where "$" ends the string; Python's "$" also
    # matches before a final "\n", which would let "web\n" pass as a listener name.
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


@functools.cache
def _validator() -> Any:
    # Imported here: jsonschema costs ~50 ms and code that only uses the model
    # (the operator's renderer, the engine wrapper) should not pay for it.
    from jsonschema import Draft202012Validator, ValidationError, validators

    def pattern(_: Any, regex: str, instance: object, __: object) -> Iterator[Any]:
        if isinstance(instance, str) and not _regex(regex).search(instance):
            yield ValidationError(f"does not match {regex}")

    cls = validators.extend(Draft202012Validator, {"pattern": pattern})  # type: ignore[no-untyped-call]
    return cls(load_schema())


def schema_issues(doc: object) -> list[Issue]:
    """Every structural error of doc, translated to (path, message)."""
    return [issue for error in _validator().iter_errors(doc) for issue in translate(error)]
