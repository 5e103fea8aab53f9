# etcd (Debian's etcd-server) on loopback only, plain HTTP: nothing but the
# apiserver on this host talks to it. Sourced.

start_etcd() {
  step "starting etcd"
  mkdir -p "$STATE/etcd"
  chmod 0700 "$STATE/etcd"
  local client="http://127.0.0.1:$ETCD_CLIENT_PORT" peer="http://127.0.0.1:$ETCD_PEER_PORT"
  start_daemon etcd etcd --name ringlane --data-dir "$STATE/etcd/data" \
    --listen-client-urls "$client" --advertise-client-urls "$client" \
    --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
    --initial-cluster "ringlane=$peer" --initial-cluster-state new \
    --listen-metrics-urls "" --log-level warn --logger zap
  WAIT_LOG="$LOGS/etcd.log" wait_for "etcd health" 30 \
    curl -fsS "$client/health"
}
