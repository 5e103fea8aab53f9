#!/usr/bin/env bash
# Build the Kubernetes server binaries for the e2e cluster from the Go module
# k8s.io/kubernetes (pinned by k8s/go.mod + go.sum) and cache them under
# ~/.cache/ringlane/k8s/<version>/bin. A second run with the same pins is a no-op.
#
#   e2e/cluster/build-k8s.sh        # prints the bin dir on its last line
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/k8s"
version="$(tr -d '[:space:]' < "$here/K8S_VERSION")"  # the one place the version lives
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

# go.mod must agree with K8S_VERSION: k8s.io/kubernetes at $version and every
# staging module replaced by the matching v0.<minor>.<patch> (v1.34.4 -> v0.34.4).
staging="v0.${version#v1.}"
grep -qE "^[[:space:]]*(require[[:space:]]+)?k8s\.io/kubernetes $version( |$)" "$mod/go.mod" \
  || { echo "k8s/go.mod does not require k8s.io/kubernetes $version (K8S_VERSION)" >&2; exit 1; }
if bad="$(grep '=>' "$mod/go.mod" | grep -v " $staging\$")"; then
  echo "k8s/go.mod replaces not pinned to $staging:" >&2; echo "$bad" >&2; exit 1
fi

# Own caches, so builds survive `go clean -cache` elsewhere and a rerun is fast.
# -mod=readonly: go.mod/go.sum are the pin and must never be rewritten by a build;
# -modcacherw: lets `rm -rf ~/.cache/ringlane` work.
cache="${RINGLANE_CACHE:-$HOME/.cache/ringlane}"
export GOMODCACHE="$cache/go" GOCACHE="$cache/go-build"
export GOFLAGS="-mod=readonly -modcacherw" GOTOOLCHAIN=local CGO_ENABLED=0
root="$cache/k8s/$version"
bin="$root/bin"
stamp="$root/stamp"
mkdir -p "$root"

# Version stamp as upstream's hack/lib/version.sh sets it (both packages), so
# `kube-apiserver --version` says $version instead of v0.0.0-master.
minor="${version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

# The stamp records what was built; a changed pin, flag or Go toolchain means rebuild.
key="$version $(go env GOVERSION) $( (cat "$mod/go.mod" "$mod/go.sum"; echo "$ldflags") | sha256sum | cut -c1-16)"
cached() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$key" ]] || return 1
  for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}
if cached; then echo "k8s $version binaries cached in $bin"; exit 0; fi

# Serialise concurrent callers (e.g. two test runs); re-check once we hold the lock.
exec 9>"$root/.lock"
flock 9
if cached; then echo "k8s $version binaries cached in $bin"; exit 0; fi

rm -f "$stamp"                      # from here on the cache is not valid
tmp="$(mktemp -d "$root/.bin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
cd "$mod"                           # the module that holds the pins
for i in "${!binaries[@]}"; do
  b="${binaries[$i]}"
  t=$SECONDS
  echo "[$((i + 1))/${#binaries[@]}] building $b (first build takes several minutes)..."
  # nice: the machine has 2 cores shared with other work.
  nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "k8s.io/kubernetes/cmd/$b"
  echo "      $b done in $((SECONDS - t))s ($(du -h "$tmp/$b" | cut -f1)), total $((SECONDS - start))s"
done

# Swap the finished set into place, then write the stamp last.
rm -rf "$bin"
mv "$tmp" "$bin"
echo "$key" > "$stamp"
echo "k8s $version binaries built in $((SECONDS - start))s into $bin"
