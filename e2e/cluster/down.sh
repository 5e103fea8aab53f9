#!/usr/bin/env bash
# Stop the local cluster and remove all it left on the host: processes
# (daemons, containerd shims, containers), mounts under the state dir, pod
# network namespaces, the CNI bridge, kube-proxy's iptables rules. The state
# dir itself is removed; its logs are kept in $CACHE/logs/cluster-last/.
#
#   e2e/cluster/down.sh      # idempotent; exits 1 if something survived
set -euo pipefail
_t0=$SECONDS
lib="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib"
for f in common host teardown; do
  # shellcheck source=/dev/null
  source "$lib/$f.sh"
done

# The same lock as up.sh: never tear down a cluster that is being started.
if [[ "${RINGLANE_CLUSTER_LOCKED:-}" != 1 ]]; then exec 8>"$STATE.lock"; flock 8; fi
if [[ ! -d "$STATE" && -z "$(state_pids)" ]]; then
  echo "==> no cluster in $STATE"; exit 0
fi
step "stopping the cluster in $STATE"
# Controllers first, so no pod is recreated while we delete them.
stop_daemons 2 kube-controller-manager kube-scheduler
drain_pods
stop_daemons 5 kubelet kube-proxy
kill_containers
kill_pod_cgroup_procs
step "stopping kube-apiserver, etcd, containerd"
stop_daemons 3 kube-apiserver etcd containerd
# Anything of ours the pid files missed (e.g. a shim, or a daemon from a
# state dir whose pid files were lost).
for pid in $(state_pids); do stop_pid "$pid" 5; done

unmount_state
clean_host_network

# Keep the logs of the last cluster for post-mortems, then drop the state.
if [[ -d "$LOGS" ]]; then
  rm -rf "$CACHE/logs/cluster-last"; mkdir -p "$CACHE/logs"
  cp -a "$LOGS" "$CACHE/logs/cluster-last"
fi
rm -rf "$STATE" 2>/dev/null || true

# Verify instead of hoping.
left=""
[[ -z "$(state_pids)" ]] || left+=" processes: $(state_pids | tr '\n' ' ')"
[[ "$(findmnt -rn -o TARGET)" == *"$STATE"* ]] && left+=" mounts: $(findmnt -rn -o TARGET | grep -F "$STATE" | tr '\n' ' ')"
[[ -e "$STATE" ]] && left+=" state dir still exists"
if [[ -n "$left" ]]; then
  echo "error: down.sh left behind:$left" >&2; exit 1
fi
step "cluster stopped and cleaned (logs in $CACHE/logs/cluster-last)"
