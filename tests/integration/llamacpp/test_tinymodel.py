"""The generated tiny model: deterministic, cached, and the GGUF llama.cpp expects."""

from __future__ import annotations

import time
from pathlib import Path

import gguf
import pytest

from kvswarm.llamacpp import tinymodel
from kvswarm.llamacpp.tinymodel import TinyModelSpec, ensure_tiny_model, parameter_count

SMALL = TinyModelSpec(
    vocab_size=600,
    hidden_size=64,
    layers=1,
    heads=2,
    kv_heads=1,
    ffn_size=128,
    context_length=512,
    corpus_chars=200_000,
)


def field_value(reader: gguf.GGUFReader, key: str) -> object:
    return reader.get_field(key).contents()


@pytest.fixture(scope="module")
def default_model() -> Path:
    return ensure_tiny_model()


def test_default_model_has_about_twenty_million_parameters() -> None:
    assert 20_000_000 < parameter_count(TinyModelSpec()) < 25_000_000


def test_model_metadata_is_llama_with_a_gpt2_bpe_vocabulary(default_model: Path) -> None:
    reader = gguf.GGUFReader(default_model)
    assert field_value(reader, "general.architecture") == "llama"
    assert field_value(reader, "llama.context_length") == TinyModelSpec().context_length
    assert field_value(reader, "llama.embedding_length") == 512
    assert field_value(reader, "llama.block_count") == 4
    assert field_value(reader, "tokenizer.ggml.model") == "gpt2"
    assert field_value(reader, "tokenizer.ggml.pre") == "gpt-2"
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    assert len(tokens) == 8192
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert field_value(reader, "tokenizer.ggml.eos_token_id") == 2
    assert "<|im_start|>" in field_value(reader, "tokenizer.chat_template")
    assert len(field_value(reader, "tokenizer.ggml.merges")) > 7000


def test_cached_model_is_returned_without_rewriting(default_model: Path) -> None:
    mtime = default_model.stat().st_mtime_ns
    started = time.monotonic()
    assert ensure_tiny_model() == default_model
    assert time.monotonic() - started < 0.5
    assert default_model.stat().st_mtime_ns == mtime


def test_same_spec_writes_the_same_bytes(tmp_path: Path) -> None:
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    tinymodel.write_tiny_model(first, SMALL)
    tinymodel.write_tiny_model(second, SMALL)
    assert first.read_bytes() == second.read_bytes()


def test_another_seed_gives_another_model(tmp_path: Path) -> None:
    other = TinyModelSpec(**{**SMALL.__dict__, "seed": 1})
    assert other.file_name != SMALL.file_name
    tinymodel.write_tiny_model(tmp_path / "a.gguf", SMALL)
    tinymodel.write_tiny_model(tmp_path / "b.gguf", other)
    assert (tmp_path / "a.gguf").read_bytes() != (tmp_path / "b.gguf").read_bytes()


def test_cache_dir_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVSWARM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tinymodel.models_dir() == tmp_path / "kvswarm" / "models"
