#!/usr/bin/env bash
# Installs kvswarm into .venv (Python 3.11). Safe to run again: it only adds what is missing.
#   bash scripts/setup.sh          runtime dependencies
#   bash scripts/setup.sh --dev    plus test and lint tools, and what the tests need from Debian
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown option $arg (expected --dev)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
  done
fi
if [ -z "$python" ] || ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
  echo "setup.sh: kvswarm needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
if [ "$dev" = 1 ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  [ -x scripts/setup-system.sh ] && bash scripts/setup-system.sh
else
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
fi
echo "kvswarm installed in .venv (run .venv/bin/kvswarm --help)"
