#!/usr/bin/env bash
# What the tests need beyond requirements-dev.txt, from Debian:
#   libibverbs1 libnuma1 libcurl4  the Mooncake wheel links against them
#   cmake g++ make                  building llama.cpp's llama-server (real-engine tests)
#   docker-compose                  its `config` command validates docker-compose.yml
#                                   (no Docker engine: installed without recommends)
#   iproute2                        network namespaces for the multi-host test
# and kvswarm's `mooncake` extra in .venv (mooncake_master and the Mooncake store client,
# for the simulated PD stack). Called by `setup.sh --dev`.
# Safe to run again: apt-get runs only when a package is missing, pip only when the
# pinned Mooncake version is not installed, so a second run takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  echo "setup-system.sh: .venv is missing; run scripts/setup.sh --dev" >&2
  exit 2
fi

missing=()
for package in libibverbs1 libnuma1 libcurl4 cmake g++ make docker-compose iproute2; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-system.sh: no apt-get here; install ${missing[*]} yourself" >&2
  else
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    echo "setup-system.sh: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
fi

# The extra's pin, read from pyproject.toml, so it is written down in one place.
requirement=$(.venv/bin/python -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print(tomllib.load(f)["project"]["optional-dependencies"]["mooncake"][0])
')
if ! .venv/bin/python - "$requirement" <<'PY'
import importlib.metadata
import sys

name, _, version = sys.argv[1].partition("==")
try:
    sys.exit(0 if importlib.metadata.version(name) == version else 1)
except importlib.metadata.PackageNotFoundError:
    sys.exit(1)
PY
then
  echo "setup-system.sh: installing the mooncake extra ($requirement)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[mooncake]"
fi
