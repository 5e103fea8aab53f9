# Container images without a registry. Sourced.
#
#   pause    static C program in a scratch image: the pods' sandbox image
#   testbox  debootstrap minbase bookworm + python3: test workloads and the
#            base of the project image
#   ringlane the project image, built by buildah from /work/main/Dockerfile
#
# Each image is built once into an OCI archive under $CACHE/images/, named by a
# hash of its recipe (the build function's text plus its inputs), then imported
# into containerd's k8s.io namespace on every `up` (containerd's root is under
# $STATE and goes away with `down`). buildah keeps its own storage under $CACHE.

IMAGES_DIR="$CACHE/images"

# buildah with private storage. chroot isolation: buildah's default picks crun,
# which fails on this cgroup-v1-hybrid host. The run root holds mount state that
# is only valid for the current boot, so it is reset after a reboot.
bah() {
  buildah --root "$CACHE/buildah/storage" --runroot "$CACHE/buildah/run" --storage-driver overlay "$@"
}
export BUILDAH_ISOLATION=chroot
_bah_init() {
  local boot; boot="$(cat /proc/sys/kernel/random/boot_id)"
  mkdir -p "$CACHE/buildah" "$IMAGES_DIR"
  if [[ "$(cat "$CACHE/buildah/boot_id" 2>/dev/null)" != "$boot" ]]; then
    rm -rf "$CACHE/buildah/run"; echo "$boot" > "$CACHE/buildah/boot_id"
  fi
}

_hash() { sha256sum | cut -c1-16; }

# The bookworm mirror this host's apt uses (deb822 .sources first, then .list).
debian_mirror() {
  python3 - <<'PY'
import glob, sys
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(f).read().split("\n\n"):
        d = {}
        for line in stanza.splitlines():
            if ":" in line and not line.lstrip().startswith("#"):
                k, v = line.split(":", 1)
                d[k.strip()] = v.split()
        if "deb" in d.get("Types", []) and "bookworm" in d.get("Suites", []) and d.get("Enabled", ["yes"])[0] != "no":
            print(d["URIs"][0]); sys.exit(0)
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    for line in lines:
        p = [w for w in line.split("#")[0].split() if not w.startswith("[") and not w.endswith("]")]
        if len(p) >= 3 and p[0] == "deb" and p[2] == "bookworm":
            print(p[1]); sys.exit(0)
sys.exit("no bookworm apt source found in /etc/apt")
PY
}

# Make image NAME in buildah storage come from ARCHIVE (tagged with KEY label).
_bah_load() {
  local name="$1" archive="$2" key="$3" have id
  have="$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "io.ringlane.recipe"}}' "$name" 2>/dev/null || true)"
  [[ "$have" == "$key" ]] && return 0
  id="$(bah pull -q "oci-archive:$archive")"
  bah tag "$id" "$name"
}

# --- pause -------------------------------------------------------------------
_build_pause() {  # $1: output archive
  local tmp c mnt
  tmp="$(mktemp -d)"
  gcc -static -O2 -Wall -Wextra -Werror -o "$tmp/pause" "$CLUSTER_DIR/images/pause.c"
  strip "$tmp/pause"
  c="$(bah from scratch)"
  mnt="$(bah mount "$c")"
  install -m 0755 "$tmp/pause" "$mnt/pause"
  bah umount "$c" >/dev/null
  bah config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 --label "io.ringlane.recipe=$PAUSE_KEY" "$c"
  bah commit -q --rm "$c" "$PAUSE_IMAGE" >/dev/null
  bah push -q "$PAUSE_IMAGE" "oci-archive:$1:$PAUSE_IMAGE"
  rm -rf "$tmp"
}

# --- testbox -----------------------------------------------------------------
TESTBOX_PACKAGES="python3,coreutils,ca-certificates"
_build_testbox() {  # $1: output archive
  local tmp c mnt mirror
  mirror="$(debian_mirror)"
  tmp="$(mktemp -d "$IMAGES_DIR/.testbox.XXXXXX")"
  note "debootstrap --variant=minbase bookworm from $mirror (about 40 s)"
  if ! debootstrap --variant=minbase --include="$TESTBOX_PACKAGES" bookworm "$tmp/rootfs" "$mirror" \
       > "$tmp/debootstrap.log" 2>&1; then
    tail -n 20 "$tmp/debootstrap.log" >&2
    umount -R "$tmp/rootfs/proc" "$tmp/rootfs/sys" 2>/dev/null || true
    rm -rf "$tmp"; die "debootstrap failed"
  fi
  # Smaller image: no package cache or lists (Dockerfile stages run apt-get update).
  chroot "$tmp/rootfs" apt-get clean
  rm -rf "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/var/log/"*.log "$tmp/rootfs/var/cache/debconf/"*-old
  c="$(bah from scratch)"
  mnt="$(bah mount "$c")"
  cp -a "$tmp/rootfs/." "$mnt/"     # cp -a keeps ownership; `buildah copy` would flatten it to root
  bah umount "$c" >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
    --cmd '["/bin/bash"]' --label "io.ringlane.recipe=$TESTBOX_KEY" \
    --label org.opencontainers.image.title=ringlane-testbox "$c"
  bah commit -q --rm "$c" "$TESTBOX_IMAGE" >/dev/null
  bah push -q "$TESTBOX_IMAGE" "oci-archive:$1:$TESTBOX_IMAGE"
  rm -rf "$tmp"
}

# --- ringlane (the project image) -----------------------------------------------
# The Dockerfile copies exactly these paths; they and the Dockerfile make the key.
APP_CONTEXT_PATHS=(pyproject.toml setup.py README.md sidecar operator)
_app_source_hash() {
  (
    cd "$REPO_DIR"
    cat Dockerfile .dockerignore
    find "${APP_CONTEXT_PATHS[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.so' ! -name '*.pyc' \
      ! -name '*.o' ! -path 'sidecar/ringlane_sidecar/_core.c' -print0 | sort -z | xargs -0 sha256sum
  ) | _hash
}
_build_app() {  # $1: output archive
  local secret=()
  # A TLS-intercepting egress proxy needs its CA inside the build for pip;
  # pass the host's bundle as a build secret (never stored in a layer).
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] && secret=(--secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt)
  note "buildah bud $REPO_DIR/Dockerfile (log: $LOGS/image-build.log)"
  if ! bah bud --pull=never --isolation chroot --layers "${secret[@]}" \
       --build-arg BASE="$TESTBOX_IMAGE" --label "io.ringlane.recipe=$APP_KEY" \
       -t "$APP_IMAGE" -f "$REPO_DIR/Dockerfile" "$REPO_DIR" > "$LOGS/image-build.log" 2>&1; then
    tail -n 30 "$LOGS/image-build.log" >&2; die "building $APP_IMAGE failed"
  fi
  bah push -q "$APP_IMAGE" "oci-archive:$1:$APP_IMAGE"
}

# ensure_image NAME KEY BUILDER: archive $IMAGES_DIR/<short>-<key>.oci.tar
# exists (building it if needed) and NAME is in buildah storage; prints the archive.
ensure_image() {
  local name="$1" key="$2" builder="$3" short archive t=$SECONDS
  short="${name#localhost/}"; short="${short%%:*}"
  archive="$IMAGES_DIR/$short-$key.oci.tar"
  if [[ ! -s "$archive" ]]; then
    step "building image $name (recipe $key)"
    "$builder" "$archive.tmp"
    mv "$archive.tmp" "$archive"
    # Older recipes of the same image are dead weight.
    find "$IMAGES_DIR" -maxdepth 1 -regextype posix-extended -regex ".*/$short-[0-9a-f]{16}\.oci\.tar" \
      ! -name "$(basename "$archive")" -delete
    note "$name built in $((SECONDS - t))s ($(du -h "$archive" | cut -f1))"
  fi
  _bah_load "$name" "$archive" "$key"
  IMAGE_ARCHIVES["$name"]="$archive"
  IMAGE_KEYS["$name"]="$key"
}

declare -A IMAGE_ARCHIVES IMAGE_KEYS
build_images() {
  _bah_init
  # Recipe keys: the builder's own text plus everything it reads.
  PAUSE_KEY="$( (declare -f _build_pause; cat "$CLUSTER_DIR/images/pause.c") | _hash)"
  TESTBOX_KEY="$( (declare -f _build_testbox; echo "$TESTBOX_PACKAGES") | _hash)"
  ensure_image "$PAUSE_IMAGE" "$PAUSE_KEY" _build_pause
  ensure_image "$TESTBOX_IMAGE" "$TESTBOX_KEY" _build_testbox
  if [[ "${RINGLANE_APP_IMAGE:-1}" != 0 ]]; then
    # The project image sits on testbox, so testbox's key is part of its key.
    APP_KEY="$( (declare -f _build_app; echo "$TESTBOX_KEY"; _app_source_hash) | _hash)"
    ensure_image "$APP_IMAGE" "$APP_KEY" _build_app
  else
    # Not rebuilding: still import the last build, if any, so the cluster has one.
    local last
    last="$(ls -t "$IMAGES_DIR"/ringlane-*.oci.tar 2>/dev/null | grep -E '/ringlane-[0-9a-f]{16}\.oci\.tar$' | head -n1 || true)"
    if [[ -n "$last" ]]; then
      APP_KEY="${last##*/ringlane-}"; APP_KEY="${APP_KEY%.oci.tar}"
      IMAGE_ARCHIVES["$APP_IMAGE"]="$last"; IMAGE_KEYS["$APP_IMAGE"]="$APP_KEY"
    fi
  fi
}

# Import every built image into containerd (k8s.io namespace, where the CRI
# plugin looks) and record name -> digest in $STATE/images.json.
import_images() {
  step "importing images into containerd"
  local name have
  have="$(ctrk images ls 2>/dev/null | awk 'NR > 1 {print $1, $3}')"
  for name in "${!IMAGE_ARCHIVES[@]}"; do
    # Already there from an earlier `up` with the same recipe: skip (saves seconds per image).
    if [[ -f "$STATE/images.json" ]] && grep -F "\"$name\"" "$STATE/images.json" | grep -F "\"${IMAGE_KEYS[$name]}\"" >/dev/null \
       && [[ $'\n'"$have" == *$'\n'"$name "* ]]; then
      continue
    fi
    ctrk images import --snapshotter overlayfs "${IMAGE_ARCHIVES[$name]}" >/dev/null
  done
  have="$(ctrk images ls 2>/dev/null | awk 'NR > 1 {print $1, $3}')"
  {
    echo "{"
    local first=1 digest id
    for name in "${!IMAGE_ARCHIVES[@]}"; do
      digest="$(awk -v n="$name" '$1 == n {print $2}' <<<"$have")"
      [[ -n "$digest" ]] || die "containerd has no $name after import"
      # "id" is the config digest: what the kubelet reports as a container's imageID.
      id="$(tar -xOf "${IMAGE_ARCHIVES[$name]}" "blobs/sha256/${digest#sha256:}" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["config"]["digest"])')"
      (( first )) || echo ","
      first=0
      printf '  "%s": {"digest": "%s", "id": "%s", "recipe": "%s", "archive": "%s"}' \
        "$name" "$digest" "$id" "${IMAGE_KEYS[$name]}" "${IMAGE_ARCHIVES[$name]}"
    done
    printf '\n}\n'
  } | write_if_changed "$STATE/images.json"
}
