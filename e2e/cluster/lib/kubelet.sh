# kubelet: one node, runtime = our containerd. Sourced.
#
# Choices that matter for Ringlane's tests:
# - cpuManagerPolicy static + kubeReserved cpu 100m: the static policy keeps
#   ceil(100m) = CPU 0 out of exclusive allocation, so a Guaranteed container
#   asking for cpu: 1 gets CPU 1 to itself and everything else shares CPU 0,
#   while allocatable stays 1900m: room for a pinned sidecar (1) next to its
#   app container (a fraction). reservedSystemCPUs "0" would leave only 1000m.
# - seccompDefault: pods without a profile run RuntimeDefault, like hardened
#   clusters; Localhost profiles are read from <root-dir>/seccomp/, which is
#   $KUBELET_ROOT/seccomp (tests write profiles there).
# - failCgroupV1: false (1.34 defaults to false; 1.35 flips it): this host is
#   cgroup v1 hybrid. cgroupDriver cgroupfs: no systemd.
# - Disk eviction off ("0%" disables a signal) and image GC only at 100%: a
#   nearly full disk on a dev box must not evict the test pods or our
#   registry-less images, which could not be pulled back.
# - failSwapOn false: whatever the host does with swap is not our business.

write_kubelet_config() {
  local ip="$1"
  mkdir -p "$STATE/config" "$KUBELET_ROOT/seccomp"
  write_if_changed "$STATE/config/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cpuManagerPolicy: static
kubeReserved: {cpu: 100m}
seccompDefault: true
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
rotateCertificates: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
evictionHard:
  memory.available: 100Mi
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
podPidsLimit: -1
maxPods: 110
shutdownGracePeriod: 0s
YAML
}

start_kubelet() {
  local ip="$1"
  step "starting kubelet"
  write_kubelet_config "$ip"
  # --node-ip: the address the apiserver uses for logs/exec (in the kubelet's
  # serving cert). A fixed node name keeps certs independent of the hostname.
  start_daemon kubelet "$K8S_BIN/kubelet" \
    --config "$STATE/config/kubelet.yaml" \
    --kubeconfig "$STATE/kubeconfigs/kubelet.kubeconfig" \
    --root-dir "$KUBELET_ROOT" \
    --cert-dir "$KUBELET_ROOT/pki" \
    --hostname-override "$NODE_NAME" \
    --node-ip "$ip" \
    --v=1
  WAIT_LOG="$LOGS/kubelet.log" wait_for "kubelet healthz" 60 curl -fsS http://127.0.0.1:10248/healthz
}

wait_node_ready() {
  step "waiting for node $NODE_NAME to be Ready"
  WAIT_LOG="$LOGS/kubelet.log" wait_for "node $NODE_NAME registered" 60 kctl get node "$NODE_NAME"
  WAIT_LOG="$LOGS/kubelet.log" wait_for "node $NODE_NAME Ready" 90 \
    kctl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}
