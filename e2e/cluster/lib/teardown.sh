# Pieces of down.sh. Sourced.

# stop_pid PID [SECONDS]: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pid="$1" wait="${2:-10}" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < wait * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
}

# stop_daemons SECONDS NAME...: SIGTERM them all at once, SIGKILL whatever is
# left after SECONDS. Waits are short on purpose: down.sh deletes all their
# state anyway, so a graceful shutdown (the apiserver and controller-manager
# take several seconds) buys nothing once the pods are gone.
stop_daemons() {
  local wait="$1" name pids=() pid i alive; shift
  for name in "$@"; do
    is_running "$name" && pids+=("$(cat "$RUN/$name.pid")")
    rm -f "$RUN/$name.pid"
  done
  (( ${#pids[@]} )) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < wait * 10; i++)); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    (( alive )) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do stop_pid "$pid" 0; done
}

# The graceful path: with the controllers stopped (nothing recreates pods),
# force-delete every pod and let the kubelet tear them down through the CRI,
# which runs the CNI DEL (veth, IP lease, masquerade rules) and unmounts volumes.
drain_pods() {
  is_running containerd && collect_sandbox_netns
  is_running kube-apiserver && is_running kubelet && is_running containerd || return 0
  step "deleting all pods through the kubelet"
  kctl delete pods --all --all-namespaces --force --grace-period=0 --wait=false >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 45))
  while (( SECONDS < deadline )); do
    # Done when containerd has no running task left (containers and sandboxes)
    # and every sandbox's network is torn down: containerd does the CNI DEL and
    # removes the netns only after the sandbox's pause task has stopped.
    if [[ -z "$(ctrk tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING"')" ]] && ! _any_exists "${SANDBOX_NETNS[@]}"; then
      note "all pod tasks stopped"
      return 0
    fi
    sleep 1
  done
  note "pods still running after 45s; killing them directly"
}

# Network namespaces of all our containers (sandboxes hold them), as
# "path id" pairs, so that a teardown interrupted half-way can still be undone.
SANDBOX_NETNS=() SANDBOX_IDS=()
collect_sandbox_netns() {
  local id netns
  for id in $(ctrk containers ls -q 2>/dev/null); do
    netns="$(ctrk containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
for ns in spec.get("linux", {}).get("namespaces", []):
    if ns.get("type") == "network" and ns.get("path"):
        print(ns["path"])' 2>/dev/null || true)"
    if [[ "$netns" == */netns/cni-* ]]; then
      SANDBOX_NETNS+=("$netns"); SANDBOX_IDS+=("$id")
    fi
  done
}
_any_exists() { local f; for f in "$@"; do [[ -e "$f" ]] && return 0; done; return 1; }

# Sandboxes whose network containerd did not tear down (kubelet gone, or it
# timed out): run the CNI DEL ourselves and remove the netns.
release_sandbox_networks() {
  local i
  for i in "${!SANDBOX_NETNS[@]}"; do
    [[ -e "${SANDBOX_NETNS[$i]}" ]] || continue
    cni_del "${SANDBOX_NETNS[$i]}" "${SANDBOX_IDS[$i]}"
    NETNS_TO_REMOVE+=("${SANDBOX_NETNS[$i]}")
  done
}

# cni_del NETNS SANDBOX-ID: what containerd would have done on StopPodSandbox,
# for sandboxes the kubelet could not stop: run the conflist's plugins with DEL
# in reverse order.
cni_del() {
  local netns="$1" id="$2" conf="$STATE/cni/net.d/10-ringlane.conflist" plugin
  [[ -f "$conf" ]] || return 0
  for plugin in $(python3 -c 'import json,sys; print(" ".join(p["type"] for p in reversed(json.load(open(sys.argv[1]))["plugins"])))' "$conf"); do
    python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
p = next(p for p in c["plugins"] if p["type"] == sys.argv[2])
p.update(name=c["name"], cniVersion=c["cniVersion"])
print(json.dumps(p))' "$conf" "$plugin" |
      CNI_COMMAND=DEL CNI_CONTAINERID="$id" CNI_NETNS="$netns" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
      "/usr/lib/cni/$plugin" >/dev/null 2>&1 || true
  done
}

# The forceful path: whatever containerd still runs.
kill_containers() {
  is_running containerd || return 0
  local ids id
  ids="$(ctrk tasks ls -q 2>/dev/null || true)"
  if [[ -n "$ids" ]]; then
    step "killing $(wc -w <<<"$ids") leftover containers"
    for id in $ids; do ctrk tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $ids; do ctrk tasks delete -f "$id" >/dev/null 2>&1 || true; done
  fi
  release_sandbox_networks
}
NETNS_TO_REMOVE=()

# Every process still in the kubelet's pod cgroups is a container process of ours.
kill_pod_cgroup_procs() {
  local f pid found=0
  for f in /sys/fs/cgroup/*/kubepods/ /sys/fs/cgroup/*/kubepods.slice/; do
    [[ -d "$f" ]] || continue
    while read -r pid; do
      [[ -n "$pid" ]] || continue
      kill -KILL "$pid" 2>/dev/null && found=1
    done < <(find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null)
  done
  (( found )) && sleep 0.5
  # Remove the (now empty) pod cgroups, deepest first.
  for f in /sys/fs/cgroup/*/kubepods; do
    [[ -d "$f" ]] && find "$f" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}

# Unmount everything under $STATE (kubelet volumes, container rootfs, shm),
# and the network namespaces our sandboxes left behind.
unmount_state() {
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(findmnt -rn -o TARGET | awk -v s="$STATE" 'index($0, s "/") == 1' | sort -r)
  for m in "${NETNS_TO_REMOVE[@]}"; do
    umount "$m" 2>/dev/null || true
    rm -f "$m"
  done
}

# remove_kube_chains CMD: kube-proxy --cleanup leaves the kubelet's chains
# (KUBE-KUBELET-CANARY, KUBE-FIREWALL, KUBE-IPTABLES-HINT, in IPv4 and IPv6):
# unhook every KUBE-* chain from the built-in chains, then flush and delete it.
remove_kube_chains() {
  local cmd="$1" table rules line chain
  for table in filter nat mangle; do
    rules="$("$cmd-save" -t "$table" 2>/dev/null)" || continue
    while read -r line; do
      eval "$cmd -w -t $table -D ${line#-A }" 2>/dev/null || true   # iptables-save quotes like a shell
    done < <(grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' <<<"$rules")
    for chain in $(grep -oE '^:KUBE-[A-Za-z0-9-]+' <<<"$rules" | tr -d :); do
      "$cmd" -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(grep -oE '^:KUBE-[A-Za-z0-9-]+' <<<"$rules" | tr -d :); do
      "$cmd" -w -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

# The bridge plugin's masquerade rules for a pod are only removed by a CNI DEL
# that still finds the pod's eth0; a teardown cut short leaves them. Every
# such rule carries our network's name in its comment, so remove those.
remove_cni_rules() {
  local rules line chain chains=()
  rules="$(iptables-save -t nat 2>/dev/null)" || return 0
  while read -r line; do
    [[ -n "$line" ]] || continue
    [[ "$line" =~ -j\ (CNI-[A-Za-z0-9-]+) ]] && chains+=("${BASH_REMATCH[1]}")
    eval "iptables -w -t nat -D ${line#-A }" 2>/dev/null || true
  done < <(grep -F "name: \\\"$CNI_NETWORK\\\"" <<<"$rules" | grep '^-A ')
  for chain in $(printf '%s\n' "${chains[@]}" | sort -u); do
    iptables -w -t nat -F "$chain" 2>/dev/null && iptables -w -t nat -X "$chain" 2>/dev/null || true
  done
}

# Host networking the cluster added: our CNI bridge and the Kubernetes rules.
clean_host_network() {
  ip link show "$CNI_BRIDGE" >/dev/null 2>&1 && ip link delete "$CNI_BRIDGE"
  if [[ -x "$K8S_BIN/kube-proxy" ]] && [[ "$(iptables-save 2>/dev/null)" == *$'\n':KUBE-* ]]; then
    "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  fi
  remove_kube_chains iptables
  remove_kube_chains ip6tables
  remove_cni_rules
  # libcni caches each attachment's result here (prefixed with the network
  # name); a completed CNI DEL removes it, a cut-short one does not.
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-*
  restore_host_sysctls
}
