# kube-apiserver. Sourced.
#
# It listens on all addresses but is used two ways: kubectl and the tests use
# https://127.0.0.1:$APISERVER_PORT; pods use the `kubernetes` Service
# (10.0.0.1:443), whose endpoint is --advertise-address. Loopback is not a
# valid endpoint, so the advertised address is the host's own address.

# RINGLANE_AGGREGATOR_ROUTING=1: the apiserver dials a webhook Service's
# endpoints (pod IPs) instead of its ClusterIP, so webhooks work without
# kube-proxy (verified). Off by default: kube-proxy runs, as in real clusters.
# --watch-cache=false: Debian's etcd is 3.4.23, older than the 1.34 watch cache expects (no
# reliable progress notifications); its caches fell behind ("Too large resource version",
# "required revision has been compacted") and watches stalled. Without the cache every watch
# is served from etcd directly, which a one-node test cluster affords easily.
start_apiserver() {
  local ip="$1" aggregator_routing=false
  [[ "${RINGLANE_AGGREGATOR_ROUTING:-0}" =~ ^(1|true)$ ]] && aggregator_routing=true
  step "starting kube-apiserver"
  start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT" --advertise-address "$ip" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC \
    --allow-privileged=true \
    --enable-aggregator-routing="$aggregator_routing" \
    --profiling=false \
    --watch-cache=false \
    --v=1
  WAIT_LOG="$LOGS/kube-apiserver.log" wait_for "kube-apiserver /readyz" 90 \
    kctl get --raw /readyz
}
