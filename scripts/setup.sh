#!/usr/bin/env bash
# Installs kvswarm into .venv (Python 3.11 or newer) with what it needs from Debian.
#   bash scripts/setup.sh          runtime: requirements.txt (kvswarm itself, editable), the
#                                  `mooncake` extra and the Debian libraries it links, so
#                                  `kvswarm demo` runs the PD mode through a real Mooncake store
#   bash scripts/setup.sh --dev    plus test and lint tools and the `llamacpp` and `hf` extras
#                                  (requirements-dev.txt), and what the tests need from Debian
# Debian packages come from scripts/setup-system.sh (apt-get as root, or through sudo).
# Safe to run again: it only adds what is missing. When every pin is already installed and
# pyproject.toml is unchanged, pip is not run at all, so a second run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown option $arg (expected --dev)" >&2; exit 2 ;;
  esac
done
requirements=requirements.txt
system_args=()
if [ "$dev" = 1 ]; then requirements=requirements-dev.txt; system_args=(--dev); fi

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

bash scripts/setup-system.sh "${system_args[@]}"

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
stamp=.venv/kvswarm-setup.stamp

# The Mooncake wheel is built for x86-64 Linux only; elsewhere the simulated PD stack keeps
# its KV blocks in an in-process store (and says so in run.json).
mooncake=""
if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then
  # The extra's pin, read from pyproject.toml, so it is written down in one place.
  mooncake=$(.venv/bin/python -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print(tomllib.load(f)["project"]["optional-dependencies"]["mooncake"][0])
')
else
  echo "setup.sh: no Mooncake wheel for $(uname -s)-$(uname -m); the PD demo uses an in-process KV store" >&2
fi

# Exit 0 when .venv holds every `name==version` pin of the requirement file (following
# `-r`), the Mooncake pin, and kvswarm installed from this pyproject.toml (the stamp).
up_to_date() {
  .venv/bin/python - "$requirements" "$mooncake" "$stamp" <<'PY'
import hashlib
import importlib.metadata
import pathlib
import sys

requirements, mooncake, stamp = sys.argv[1:]


def pins(path: pathlib.Path):
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            yield from pins(path.parent / line[3:].strip())
        elif line and not line.startswith("-"):
            yield line


def installed(pin: str) -> bool:
    name, _, version = pin.partition("==")
    try:
        return importlib.metadata.version(name.strip()) == version.strip()
    except importlib.metadata.PackageNotFoundError:
        return False


wanted = [*pins(pathlib.Path(requirements)), *([mooncake] if mooncake else [])]
digest = hashlib.sha256(pathlib.Path("pyproject.toml").read_bytes()).hexdigest()
try:
    current = pathlib.Path(stamp).read_text(encoding="utf-8").strip() == digest
except FileNotFoundError:
    current = False
try:
    importlib.metadata.version("kvswarm")
except importlib.metadata.PackageNotFoundError:
    current = False
sys.exit(0 if current and all(map(installed, wanted)) else 1)
PY
}

if ! up_to_date; then
  "${pip[@]}" --upgrade pip >/dev/null 2>&1 || true
  "${pip[@]}" -r "$requirements"
  if [ -n "$mooncake" ]; then "${pip[@]}" "$mooncake"; fi
  .venv/bin/python -c '
import hashlib, pathlib
print(hashlib.sha256(pathlib.Path("pyproject.toml").read_bytes()).hexdigest())
' >"$stamp"
fi
echo "kvswarm installed in .venv (run .venv/bin/kvswarm --help)"
