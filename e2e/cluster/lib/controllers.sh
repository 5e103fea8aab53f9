# kube-controller-manager, kube-scheduler, kube-proxy. Sourced.

start_controller_manager() {
  step "starting kube-controller-manager"
  # Signs service-account tokens (same key as the apiserver) and CSRs
  # (cluster CA); no leader election with one replica. No node CIDR allocation:
  # the bridge CNI hands out POD_CIDR itself.
  start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfigs/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/kubeconfigs/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/kubeconfigs/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --leader-elect=false \
    --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --cluster-cidr "$POD_CIDR" --allocate-node-cidrs=false \
    --controllers '*,-cloud-node-lifecycle-controller' \
    --v=1
}

start_scheduler() {
  step "starting kube-scheduler"
  start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$STATE/kubeconfigs/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/kubeconfigs/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/kubeconfigs/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 \
    --leader-elect=false \
    --v=1
}

# kube-proxy in iptables mode makes ClusterIPs work for pods and for the host
# itself (the apiserver calling a webhook Service dials its ClusterIP).
start_kube_proxy() {
  step "starting kube-proxy (iptables)"
  mkdir -p "$STATE/config"
  # conntrack.maxPerCore 0 and zero timeouts: leave the host's conntrack
  # sysctls alone (not ours to change, and may be read-only in a VM).
  write_if_changed "$STATE/config/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $STATE/kubeconfigs/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
nodePortAddresses: [primary]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  localhostNodePorts: false   # would set route_localnet on the host; NodePorts on 127.0.0.1 are not needed
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
YAML
  start_daemon kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/config/kube-proxy.yaml" --v=1
  WAIT_LOG="$LOGS/kube-proxy.log" wait_for "kube-proxy healthz" 60 curl -fsS http://127.0.0.1:10256/healthz
}
