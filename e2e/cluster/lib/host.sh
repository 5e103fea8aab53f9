# Host settings the cluster changes, saved on the first `up` and put back by
# `down`: the bridge CNI turns on IPv4 forwarding. Sourced.

HOST_SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet)

save_host_sysctls() {
  [[ -f "$STATE/host-sysctls" ]] && return 0      # the first up saw the host as it was
  local k
  for k in "${HOST_SYSCTLS[@]}"; do
    echo "$k=$(sysctl -n "$k")"
  done > "$STATE/host-sysctls"
}

restore_host_sysctls() {
  [[ -f "$STATE/host-sysctls" ]] || return 0
  local kv
  while read -r kv; do sysctl -q -w "$kv" >/dev/null || true; done < "$STATE/host-sysctls"
}
