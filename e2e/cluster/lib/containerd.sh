# containerd (Debian 1.6) with its CRI plugin, configured entirely from a file
# under $STATE: its root, state, socket, runc root and CNI config all live
# there. Sourced.
#
# Settings that are not defaults, and why:
# - restrict_oom_score_adj: this VM lacks CAP_SYS_RESOURCE, so the kubelet's
#   negative oom_score_adj for pods makes runc fail ("can't get final child's
#   PID from pipe: EOF"); this clamps it to containerd's own value instead.
# - SystemdCgroup = false: no systemd here; the kubelet uses cgroupfs too.
# - sandbox_image: our locally built pause image, there is no registry.
# - runc Root under $STATE: runc's container state would otherwise land in
#   /run/containerd/runc where down.sh could not tell ours from others.
# - netns_mounts_under_state_dir: pod netns files live under $STATE too.
# - disabled snapshotters: only overlayfs is used; the others probe the host.

write_containerd_config() {
  local d="$STATE/containerd"
  mkdir -p "$d/root" "$d/state" "$d/runc" "$STATE/cni/net.d" "$STATE/cni/ipam"
  write_if_changed "$d/config.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  # Pod network namespaces under $STATE instead of /var/run/netns: ours beyond doubt.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
TOML

  # One bridge network for all pods. containerd sets up the pods' loopback
  # itself (the loopback plugin from bin_dir), so it is not in the chain.
  # host-local keeps its leases under $STATE instead of /var/lib/cni.
  write_if_changed "$STATE/cni/net.d/10-ringlane.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$STATE/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

start_containerd() {
  step "starting containerd"
  write_containerd_config
  start_daemon containerd containerd --config "$STATE/containerd/config.toml"
  WAIT_LOG="$LOGS/containerd.log" wait_for "containerd socket" 30 \
    ctr --address "$CONTAINERD_SOCK" version
}
