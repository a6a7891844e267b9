#!/usr/bin/env bash
# Installs the Debian packages the test suite runs for real: PostgreSQL and
# Redis servers (api-flow's production components), fuse3 (the power-cut test
# filesystem), Chromium (the status page's browser test), python3-xxhash (the
# Python reference of the partition function, docs/partitioning.md). Idempotent: packages
# already installed are not fetched again. Needs root (or sudo) and Debian's
# package archive. `make bench` adds its own packages (scripts/bench-deps.sh).
set -euo pipefail

pkgs=(postgresql redis-server fuse3 chromium python3-xxhash "$@")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages start their own servers; the tests start throwaway ones
# on free ports, so the system services are not needed.
for s in postgresql redis-server; do
  $SUDO service "$s" stop >/dev/null 2>&1 || true
done
