# PKI for the cluster: one CA signs everything (EC P-256 keys, fast to make),
# plus the RSA service-account key pair. Kubeconfigs embed their certificates
# so each is a single self-contained file. Sourced; idempotent.

_openssl_cnf() {  # _openssl_cnf EKU SAN -> path of a temporary extension file
  local f; f="$(mktemp)"
  {
    echo "[ext]"
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$1"
    [[ -n "$2" ]] && echo "subjectAltName=$2"
  } > "$f"
  echo "$f"
}

# issue NAME SUBJECT EKU [SAN]: key + certificate signed by the cluster CA.
issue() {
  local name="$1" subj="$2" eku="$3" san="${4:-}" ext
  [[ -f "$PKI/$name.crt" ]] && return 0
  ext="$(_openssl_cnf "$eku" "$san")"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$ext" -extensions ext -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

# write_kubeconfig FILE USER-CERT-NAME [SERVER]
write_kubeconfig() {
  local file="$1" cert="$2" server="${3:-https://127.0.0.1:$APISERVER_PORT}"
  write_if_changed "$file" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ringlane
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $cert
  user:
    client-certificate-data: $(base64 -w0 < "$PKI/$cert.crt")
    client-key-data: $(base64 -w0 < "$PKI/$cert.key")
contexts:
- name: ringlane
  context: {cluster: ringlane, user: $cert}
current-context: ringlane
KC
}

make_pki() {
  local ip="$1"   # host address, see host_ip
  mkdir -p "$PKI" "$STATE/kubeconfigs"
  chmod 0700 "$PKI"
  if [[ ! -f "$PKI/ca.crt" ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=ringlane-cluster-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$PKI/ca.crt"
  fi
  # Service-account tokens: kube-apiserver verifies with sa.pub and signs with
  # sa.key; the controller-manager signs legacy tokens with sa.key too.
  if [[ ! -f "$PKI/sa.key" ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi

  # The serving certificate must name every address clients use: 127.0.0.1 for
  # us, the `kubernetes` ClusterIP and the host address for pods. The host
  # address can differ between machines, so re-issue when it is not in the cert.
  local san="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  san+=",DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP,IP:$ip"
  if [[ "$(cat "$PKI/apiserver.san" 2>/dev/null)" != "$san" ]]; then
    rm -f "$PKI/apiserver.crt" "$PKI/kubelet-serving.crt"
    echo "$san" > "$PKI/apiserver.san"
  fi
  issue apiserver "/CN=kube-apiserver" serverAuth "$san"
  # The kubelet's serving cert, so the apiserver can verify the kubelet
  # (--kubelet-certificate-authority) on exec/logs instead of trusting anything.
  issue kubelet-serving "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1,IP:$ip"

  # Client identities. Groups come from O=; the names are the ones the default
  # RBAC bindings (system:kube-controller-manager, system:node-proxier, ...) expect.
  issue admin "/O=system:masters/CN=ringlane-admin" clientAuth
  issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  issue kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  issue controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue scheduler "/CN=system:kube-scheduler" clientAuth
  issue kube-proxy "/CN=system:kube-proxy" clientAuth

  write_kubeconfig "$KUBECONFIG_ADMIN" admin
  local c
  for c in kubelet controller-manager scheduler kube-proxy; do
    write_kubeconfig "$STATE/kubeconfigs/$c.kubeconfig" "$c"
  done
}
