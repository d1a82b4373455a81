#!/usr/bin/env bash
# Installs what kvswarm needs from Debian (apt-get; as root, or through sudo).
#   bash scripts/setup-system.sh         runtime: what the Mooncake wheel (the `mooncake`
#                                        extra) links against, even when it only speaks TCP:
#                                        libibverbs1 libnuma1 libcurl4
#   bash scripts/setup-system.sh --dev   plus what the tests need:
#                                        cmake g++ make  building llama.cpp's llama-server
#                                        docker-compose  its `config` command validates
#                                                        docker-compose.yml (no Docker engine:
#                                                        installed without recommends)
#                                        iproute2        network namespaces (multi-host test)
#                                        prometheus      a real Prometheus (and promtool)
#                                                        scraping kvswarm's exporter in tests
#                                        chromium chromium-driver  opening HTML reports
#                                                        headless (report tests, selenium)
# Called by scripts/setup.sh. Safe to run again: apt-get runs only when a package is
# missing, so a second run takes a fraction of a second.
set -euo pipefail

packages=(libibverbs1 libnuma1 libcurl4)
for arg in "$@"; do
  case "$arg" in
    --dev) packages+=(cmake g++ make docker-compose iproute2 prometheus chromium chromium-driver) ;;
    *) echo "setup-system.sh: unknown option $arg (expected --dev)" >&2; exit 2 ;;
  esac
done

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-system.sh: no apt-get here; install ${missing[*]} yourself" >&2
  exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "setup-system.sh: not root and no sudo; as root, run: apt-get install ${missing[*]}" >&2
    exit 2
  fi
  sudo=(sudo)
fi
echo "setup-system.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
