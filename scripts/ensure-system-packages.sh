#!/usr/bin/env bash
# Installs the Debian packages that tests and benchmarks start on loopback,
# only when they are missing. Needs root (or sudo) the first time.
set -euo pipefail
# chromium: the bookstore's browser tests (tests/bookstore/test_browser.py).
declare -A wanted=( [nginx]=nginx-light [redis-server]=redis-server [memcached]=memcached [chromium]=chromium )
missing=()
for cmd in "${!wanted[@]}"; do
  if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
    missing+=("${wanted[$cmd]}")
  fi
done
# iproute2's ip: tests/deploy give each service a network namespace of its own.
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || missing+=(iproute2)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} with apt-get" >&2
sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}" >/dev/null \
  || { "${sudo_cmd[@]}" apt-get update -q >/dev/null && "${sudo_cmd[@]}" apt-get install -y -q "${missing[@]}" >/dev/null; }
