#!/usr/bin/env bash
# Start (or finish starting) the local one-node Kubernetes cluster:
# etcd, kube-apiserver, containerd, kube-controller-manager, kube-scheduler,
# kube-proxy and kubelet on this host, plus the registry-less images.
#
#   e2e/cluster/up.sh                  # idempotent; safe to rerun at any time
#   eval "$(e2e/cluster/up.sh | tail -n1)"
#
# Its last line of output is always `export KUBECONFIG=<absolute path>`.
# Env: RINGLANE_CLUSTER_DIR (state, default /tmp/ringlane-cluster),
#      RINGLANE_CACHE (default ~/.cache/ringlane), RINGLANE_APP_IMAGE=0 (skip
#      building localhost/ringlane:dev), RINGLANE_KUBE_PROXY=0 and
#      RINGLANE_AGGREGATOR_ROUTING=1 (experiments). Stop everything with down.sh.
set -euo pipefail
_t0=$SECONDS
lib="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib"
for f in common tools certs etcd apiserver containerd images kubelet controllers host; do
  # shellcheck source=/dev/null
  source "$lib/$f.sh"
done

[[ "$(id -u)" -eq 0 ]] || die "up.sh needs root (containerd, kubelet, iptables)"
# One up.sh or down.sh at a time (two test sessions starting together would
# race). The lock sits next to $STATE, not in it: down.sh deletes $STATE.
# RINGLANE_CLUSTER_LOCKED=1: the caller already holds it (e.g. a test that
# runs down.sh and then inspects the host while no one may start a cluster).
if [[ "${RINGLANE_CLUSTER_LOCKED:-}" != 1 ]]; then exec 8>"$STATE.lock"; flock 8; fi
mkdir -p "$STATE" "$RUN" "$LOGS"

step "host tools"
ensure_apt_tools
ensure_kubectl_helm
step "Kubernetes $K8S_VERSION binaries"
"$CLUSTER_DIR/build-k8s.sh" | sed 's/^/    /'

ip="$(host_ip)"
[[ -n "$ip" ]] || die "cannot find this host's address (no default route?)"
make_pki "$ip"
save_host_sysctls

build_images
start_etcd
start_apiserver "$ip"
start_containerd
import_images
start_controller_manager
start_scheduler
start_kubelet "$ip"
wait_node_ready
# After the kubelet: kube-proxy waits for its Node object to learn its address.
# RINGLANE_KUBE_PROXY=0 leaves it out (then no ClusterIP routes: only for
# experiments, e.g. with RINGLANE_AGGREGATOR_ROUTING=1, see apiserver.sh).
[[ "${RINGLANE_KUBE_PROXY:-1}" == 0 ]] || start_kube_proxy
# Pods in `default` need its ServiceAccount, which the controller-manager creates.
WAIT_LOG="$LOGS/kube-controller-manager.log" wait_for "default ServiceAccount" 60 \
  kctl -n default get serviceaccount default

step "cluster ready: $(kctl get node "$NODE_NAME" --no-headers | awk '{print $1, $2, $5}'), state in $STATE"
echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
