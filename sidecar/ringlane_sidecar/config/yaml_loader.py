"""A yaml.SafeLoader that reads configs the way users mean them.

Plain SafeLoader follows YAML 1.1, where the key `on` (as in retry.on) becomes
the boolean True, `yes`/`off` are booleans and `010` is octal 8. This loader
keeps YAML 1.2's core schema for booleans and integers and rejects duplicate
keys (SafeLoader silently keeps the last one). It constructs nothing but plain
data, like safe_load.
"""
from __future__ import annotations

import json
import re

import yaml
from yaml.constructor import ConstructorError

_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"


class ConfigLoader(yaml.SafeLoader):
    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        # PyYAML's constructors fail on odd explicit tags (`!!bool maybe`, `!!float abc`) with
        # plain exceptions that carry no position: give them the node's.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, LookupError):
            value = node.value if isinstance(node, yaml.ScalarNode) else ""
            shown = f" from {json.dumps(value[:40])}" if value else ""
            raise ConstructorError(None, None, f"cannot construct a {node.tag} value{shown}", node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise ConstructorError(None, None, f"duplicate key {json.dumps(key_node.value)}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _decimal_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    try:
        return int(text.replace("_", ""), 10)
    except ValueError:
        raise ConstructorError(None, None, f"invalid integer {json.dumps(text)}", node.start_mark) from None


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in (_BOOL, _INT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
ConfigLoader.add_implicit_resolver(_INT, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
ConfigLoader.add_constructor(_INT, _decimal_int)
