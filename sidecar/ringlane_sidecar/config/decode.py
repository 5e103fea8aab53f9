"""Config text -> decoded document (JSON or YAML), with errors that carry line:column."""
from __future__ import annotations

import json

import yaml

from .errors import ROOT, ConfigError
from .yaml_loader import ConfigLoader


class _DuplicateKey(Exception):
    pass


def decode_document(text: str) -> object:
    """Decode JSON or YAML; any problem becomes a ConfigError with one "config: ..." error."""
    if not text.strip():
        raise _error("file is empty")
    json_problem = None
    if text.lstrip().startswith(("{", "[")):
        # JSON first: PyYAML is not a full JSON parser (it rejects tab indentation)
        try:
            return json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            json_problem = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        except _DuplicateKey as exc:
            raise _error(f"invalid JSON: duplicate key {json.dumps(str(exc))}") from None
        except RecursionError:
            raise _error("nested too deeply") from None
        except ValueError:  # Python's limit on digits in an int (4300 by default)
            raise _error("invalid JSON: a number has too many digits") from None
    try:
        document = _load_yaml(text)
    except ConfigError:
        if json_problem:  # it looked like JSON: the JSON error is the useful one
            raise _error(json_problem) from None
        raise
    if document is None:
        raise _error("no config in file (it holds only comments or null)")
    return document


def _load_yaml(text: str) -> object:
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if exc.context and problem.startswith("but "):  # "expected X" + "but found Y"
            problem = f"{exc.context}, {problem}"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _error(f"invalid YAML{where}: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        line, column = _line_column(text, exc.position)
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise _error(f"invalid YAML at line {line}, column {column}: character {char} is not allowed") from None
    except yaml.YAMLError as exc:
        raise _error(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise _error("nested too deeply") from None
    # PyYAML constructors on odd explicit tags (`!!bool maybe` is a KeyError)
    except (ValueError, TypeError, AttributeError, LookupError) as exc:
        raise _error(f"invalid YAML: cannot construct a value ({type(exc).__name__})") from None


def _line_column(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _error(message: str) -> ConfigError:
    return ConfigError([f"{ROOT}: {message}"])
