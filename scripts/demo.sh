#!/usr/bin/env bash
# `make demo`: Ringlane end to end on this machine.
# With the local Kubernetes harness (e2e/cluster/up.sh) this runs the cluster demo
# (e2e/demo.sh); until then it runs the sidecar on its own, in front of two nginx
# backends, and shows routing, the weighted split, pinning and metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x e2e/demo.sh ]; then
  exec e2e/demo.sh
fi
VENV_BIN=.venv/bin
WORK=$(mktemp -d /tmp/ringlane-demo.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "==> Ringlane demo (local mode: the Kubernetes harness is not built yet, see the local-cluster issue)"
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1; daemon off; pid $WORK/nginx/nginx.pid; error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server { listen 127.0.0.1:18301; location / { return 200 "stable  \$request_uri  x-env=\$http_x_env\n"; } }
  server { listen 127.0.0.1:18302; location / { return 200 "canary  \$request_uri  x-env=\$http_x_env\n"; } }
}
NGX
nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" & PIDS+=($!)

cat > "$WORK/sidecar.yaml" <<'CFG'
version: 1
generation: 1
admin: {address: 127.0.0.1:19911}
listeners:
  - name: web
    address: 127.0.0.1:18300
    rules:
      - name: demo/shop/0
        matches: [{path: {type: PathPrefix, value: /api}}]
        backends: [{cluster: stable, weight: 90}, {cluster: canary, weight: 10}]
        filters:
          - requestHeaderModifier: {set: [{name: x-env, value: demo}]}
          - urlRewrite: {path: {replacePrefixMatch: /v1}}
        retry: {attempts: 1, on: [connect-failure]}
clusters:
  - name: stable
    endpoints: [{address: 127.0.0.1:18301}]
  - name: canary
    endpoints: [{address: 127.0.0.1:18302}]
CFG
echo "==> config:"; $VENV_BIN/ringlane-sidecar check --config "$WORK/sidecar.yaml"
$VENV_BIN/ringlane-sidecar run --config "$WORK/sidecar.yaml" 2> "$WORK/sidecar.log" & PIDS+=($!)
for _ in $(seq 100); do curl -sf 127.0.0.1:19911/ready >/dev/null 2>&1 && break; sleep 0.05; done
curl -sf 127.0.0.1:19911/ready >/dev/null || { echo "sidecar did not become ready:"; cat "$WORK/sidecar.log"; exit 1; }

echo "==> engine and pinning (GET /config):"
curl -s 127.0.0.1:19911/config | python3 -c 'import json,sys; c=json.load(sys.stdin); print("  engine=%s (%s)\n  workers=%s pinned to CPUs %s, generation %s" % (c["engine"], c["engine_reason"], c["workers"], c["cpus"], c["generation"]))'
echo "==> one request through the sidecar:  curl 127.0.0.1:18300/api/items"
printf '  '; curl -s 127.0.0.1:18300/api/items
echo "==> 1000 requests: the 90/10 split"
for _ in $(seq 1000); do curl -s 127.0.0.1:18300/api/x; done | awk '{print $1}' | sort | uniq -c | sed 's/^/  /'
echo "==> no route:  curl 127.0.0.1:18300/other  ->  $(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:18300/other)"
echo "==> metrics (GET /metrics, excerpt):"
curl -s 127.0.0.1:19911/metrics | grep -E '^ringlane_(http_requests_total|upstream_requests_total|engine_info|io_uring_enters_total)' | sed 's/^/  /'
echo "==> done. Not built yet: the operator, the chart and the local Kubernetes cluster (see the open issues)."
