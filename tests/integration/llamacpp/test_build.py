"""What the llama-server build checks before it starts (no build happens here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvswarm.errors import KvswarmError
from kvswarm.llamacpp import build


def test_missing_cmake_and_compiler_is_one_line_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(KvswarmError) as failure:
        build.check_toolchain()
    message = str(failure.value)
    assert "\n" not in message
    assert "cmake" in message and "C++ compiler" in message
    assert "apt-get install cmake g++" in message


def test_nothing_is_cached_in_an_empty_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVSWARM_CACHE_DIR", str(tmp_path))
    assert build.build_root() == tmp_path / f"llama.cpp-{build.LLAMA_CPP_BUILD}"
    assert build.cached_llama_server() is None


def test_build_options_never_fetch_the_web_ui() -> None:
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in build.CMAKE_OPTIONS
    assert "-DLLAMA_BUILD_UI=OFF" in build.CMAKE_OPTIONS
    assert "-DLLAMA_BUILD_TESTS=OFF" in build.CMAKE_OPTIONS
