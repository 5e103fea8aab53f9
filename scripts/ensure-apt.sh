#!/usr/bin/env bash
# Install the Debian packages named as arguments that are not installed yet.
# Quiet and fast when everything is present, so `make setup` stays idempotent.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "==> apt: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's nginx/haproxy packages may start a daemon; the tests run their own.
for svc in nginx haproxy prometheus; do
  pkill -x "$svc" 2>/dev/null || true
done
