"""The vLLM harness's pure parts: server command and environment, model spec, CLI wiring."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvswarm.cli import build_parser
from kvswarm.errors import KvswarmError
from kvswarm.vllm.server import VllmServerOptions, server_command, server_environment
from kvswarm.vllm.tinymodel import TinyQwenSpec

PYTHON = Path("/cache/vllm/venv/bin/python")
MODEL = Path("/cache/models/tiny")


def test_command_runs_the_api_server_module_with_prefix_caching_and_cached_counts() -> None:
    command = server_command(PYTHON, MODEL, VllmServerOptions(), 8123)
    assert command[:3] == [str(PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(command)
    assert f"--model {MODEL} --served-model-name tiny --host 127.0.0.1 --port 8123" in joined
    assert "--max-model-len 4096 --dtype bfloat16" in joined
    assert "--enable-prefix-caching" in command
    assert "--enable-prompt-tokens-details" in command
    assert "--enforce-eager" in command


def test_compile_mode_drops_enforce_eager_and_extra_args_come_last() -> None:
    options = VllmServerOptions(enforce_eager=False, extra_args=("--seed", "1"))
    command = server_command(PYTHON, MODEL, options, 8123)
    assert "--enforce-eager" not in command
    assert command[-2:] == ["--seed", "1"]


def test_environment_sets_kv_cache_dev_mode_and_offline() -> None:
    env = server_environment(VllmServerOptions(kv_cache_gib=3), {"PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_SERVER_DEV_MODE"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"


def test_dev_mode_can_be_turned_off() -> None:
    env = server_environment(VllmServerOptions(dev_mode=False), {})
    assert "VLLM_SERVER_DEV_MODE" not in env


def test_options_refuse_a_tiny_context() -> None:
    with pytest.raises(KvswarmError, match="max_model_len"):
        VllmServerOptions(max_model_len=16)


def test_model_spec_digest_is_stable_and_depends_on_every_field() -> None:
    spec = TinyQwenSpec()
    assert spec.digest == TinyQwenSpec().digest
    assert spec.dir_name.startswith("tiny-qwen2-h256-l4-c4096-")
    assert TinyQwenSpec(seed=1).digest != spec.digest
    assert TinyQwenSpec(context_length=8192).digest != spec.digest


def test_model_spec_shares_the_llamacpp_vocabulary_spec() -> None:
    vocab = TinyQwenSpec(seed=3).vocabulary_spec()
    assert (vocab.vocab_size, vocab.seed, vocab.corpus_chars) == (8192, 3, 3_000_000)


def test_model_spec_refuses_heads_that_do_not_divide() -> None:
    with pytest.raises(ValueError):
        TinyQwenSpec(heads=3)


def test_engine_verb_offers_vllm_beside_llamacpp() -> None:
    args = build_parser().parse_args(["engine", "vllm", "--max-model-len", "2048"])
    assert args.engine == "vllm" and args.max_model_len == 2048 and not args.compile
    assert build_parser().parse_args(["engine", "llamacpp"]).engine == "llamacpp"
