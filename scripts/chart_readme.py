#!/usr/bin/env python3
"""Generates charts/ringlane/README.md from the `# --` comments in values.yaml.

`scripts/chart_readme.py` rewrites the README; `--check` exits 1 when it is out of date
(a test runs that, so the README never drifts from the values).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "charts" / "ringlane"
KEY = re.compile(r"^(\s*)([A-Za-z][\w.-]*):(.*)$")

HEADER = """# Ringlane Helm chart

Installs the Ringlane operator (ProxyRoute reconciliation, sidecar injection webhook), the
ProxyRoute CRD, the webhook TLS (a chart-generated CA, or cert-manager), and a DaemonSet that
writes the sidecar's seccomp profiles on every node. Where the Security Profiles Operator is
installed, `seccomp.securityProfilesOperator=true` delivers them as its SeccompProfiles instead
(the operator creates them at start; pods reference `operator/ringlane-proxy-io-uring.json`).

```sh
helm install ringlane charts/ringlane --namespace ringlane-system --create-namespace
kubectl label namespace <ns> ringlane.io/injection=enabled
```

Bad values fail at install time with a message naming the field (`values.schema.json`).
This file is generated from `values.yaml` by `scripts/chart_readme.py`.

## Values

| Key | Type | Default | Description |
|-----|------|---------|-------------|
"""


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key preceded by a `# --` comment."""
    out, stack, pending = [], [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = stripped[4:].strip()
            continue
        m = KEY.match(line)
        if not m or stripped.startswith("#") or stripped.startswith("-"):
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        if pending is not None:
            out.append((".".join(k for _, k in stack), pending))
            pending = None
    return out


def lookup(values: dict, dotted: str) -> object:
    node: object = values
    for part in dotted.split("."):
        assert isinstance(node, dict)
        node = node[part]
    return node


def type_name(v: object) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(type(v), "any")


def render() -> str:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = []
    for key, desc in documented_keys(text):
        v = lookup(values, key)
        default = json.dumps(v, separators=(",", ":")).replace("|", "\\|")
        rows.append(f"| `{key}` | {type_name(v)} | `{default}` | {desc} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> int:
    readme = CHART / "README.md"
    new = render()
    if "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != new:
            print(f"{readme} is out of date: run scripts/chart_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
