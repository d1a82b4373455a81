"""A tiny Qwen2 model with random weights for vLLM, made here, never downloaded.

vLLM serves Hugging Face model directories, so kvswarm writes one: the Qwen2
architecture at toy size (hidden 256, 4 layers, 4 heads, 2 KV heads, ~4.5M parameters,
bf16) with weights drawn from the spec's seed, and the same kind of real vocabulary as
the llama.cpp tiny model: an 8192-token byte-level BPE trained locally on text generated
from the seed (`kvswarm.llamacpp.tinymodel.train_vocabulary`), with ChatML special
tokens and a ChatML chat template. Its output is gibberish; vLLM's tokenizing, prefill,
decode, batching and prefix cache are real.

The directory is a function of its `TinyQwenSpec` and cached under `<cache>/models/` by
a digest of the spec. The vocabulary is trained in kvswarm's environment (it needs
`tokenizers`, the `llamacpp` extra); the weights are written by the vLLM venv's python
(`writemodel.py`, with transformers and torch), since kvswarm itself never imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kvswarm.errors import KvswarmError
from kvswarm.llamacpp.cache import exclusive_lock
from kvswarm.llamacpp.tinymodel import SPECIAL_TOKENS, TinyModelSpec, models_dir, train_vocabulary

__all__ = ["TinyQwenSpec", "ensure_tiny_qwen", "write_tokenizer_json"]

# Bump when the files written for a given spec change, so old cached models are not reused.
FORMAT_VERSION = 1
WRITER = Path(__file__).with_name("writemodel.py")


@dataclass(frozen=True)
class TinyQwenSpec:
    """The shape of the generated model; every field is part of its cache key."""

    context_length: int = 4096  # max_position_embeddings: vLLM's max_model_len by default
    vocab_size: int = 8192  # BPE vocabulary size, special tokens included
    hidden_size: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    ffn_size: int = 512
    seed: int = 0
    corpus_chars: int = 3_000_000  # size of the generated text the tokenizer learns from

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden_size must divide by heads, and heads by kv_heads")

    @property
    def digest(self) -> str:
        fields = {"format": FORMAT_VERSION, **dataclasses.asdict(self)}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def dir_name(self) -> str:
        shape = f"h{self.hidden_size}-l{self.layers}-c{self.context_length}"
        return f"tiny-qwen2-{shape}-{self.digest}"

    def vocabulary_spec(self) -> TinyModelSpec:
        """The llama.cpp tiny model's spec whose vocabulary this model shares."""
        return TinyModelSpec(
            vocab_size=self.vocab_size, seed=self.seed, corpus_chars=self.corpus_chars
        )


def ensure_tiny_qwen(python: Path, spec: TinyQwenSpec | None = None) -> Path:
    """The model directory for `spec` (default `TinyQwenSpec()`), writing it if needed.

    `python` is the vLLM venv's interpreter (it has transformers and torch). A few seconds
    the first time; later calls return the cached directory at once.
    """
    spec = spec or TinyQwenSpec()
    path = models_dir() / spec.dir_name
    if (path / "config.json").is_file():
        return path
    with exclusive_lock(
        models_dir() / "models.lock", f"kvswarm: waiting for another process writing {path}"
    ):
        if not (path / "config.json").is_file():
            _write(python, spec, path)
    return path


def _write(python: Path, spec: TinyQwenSpec, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="kvswarm-tiny-qwen-") as scratch:
        spec_json = Path(scratch) / "spec.json"
        spec_json.write_text(json.dumps(dataclasses.asdict(spec)))
        tokenizer_json = Path(scratch) / "tokenizer.json"
        write_tokenizer_json(spec, tokenizer_json)
        command = [str(python), str(WRITER), str(spec_json), str(tokenizer_json), str(partial)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise KvswarmError(
            f"writing the tiny vLLM model failed (exit {result.returncode}) with {python}: {last}"
        )
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)


def write_tokenizer_json(spec: TinyQwenSpec, path: Path) -> None:
    """The trained vocabulary as a `tokenizers` file: byte-level BPE, GPT-2 split regex."""
    vocab = train_vocabulary(spec.vocabulary_spec())  # names the extra if tokenizers is missing
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    bpe = models.BPE(
        vocab={token: token_id for token_id, token in enumerate(vocab.tokens)},
        merges=[tuple(merge.split(" ", 1)) for merge in vocab.merges],
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    tokenizer.save(str(path))
