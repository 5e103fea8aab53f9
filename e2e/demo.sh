#!/usr/bin/env bash
# `make demo` on the local cluster: bring it up, install Ringlane with helm, deploy a demo app
# with a ProxyRoute, send traffic through the sidecar and show what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "==> local Kubernetes (first run builds Kubernetes from the Go module: several minutes)"
e2e/cluster/up.sh | tee /tmp/ringlane-demo-up.log | grep -E '^(==>|export)' | sed 's/^/  /'
export KUBECONFIG="$(tail -n1 /tmp/ringlane-demo-up.log | cut -d= -f2)"
exec .venv/bin/python e2e/demo.py
