#!/usr/bin/env bash
# Installs the Debian packages `make bench` runs for real: wrk (the load
# generator), HAProxy and nginx (the fronts the edge is compared with).
# Idempotent: packages already installed are not fetched again. Needs root
# (or sudo) and Debian's package archive. The packages' own services are
# stopped: the benchmark starts throwaway instances on free loopback ports.
set -euo pipefail

pkgs=(wrk haproxy nginx-light "$@")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "bench-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for s in haproxy nginx; do
  $SUDO service "$s" stop >/dev/null 2>&1 || true
done
