"""A tiny llama-architecture GGUF model with random weights, made here, never downloaded.

llama.cpp needs a model and none can be downloaded, so kvswarm writes one: the llama
architecture (RMSNorm, rotary attention, SwiGLU) at toy size — hidden 512, 4 layers,
~22M parameters by default — with weights drawn from a seeded normal distribution, and a
real byte-level BPE vocabulary (GPT-2 style, 8192 tokens) trained with `tokenizers` on
text generated from the same seed (kvswarm's own prose, code and instruction generators
plus made-up words). Its output is gibberish, but everything the server does with it is
real: tokenizing, prefill, decode, batching across slots and the prompt cache.

The file is a pure function of its `TinyModelSpec`: the same spec gives the same bytes
on every machine, and it is cached under `<cache>/models/` by a digest of the spec.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from kvswarm.errors import KvswarmError
from kvswarm.llamacpp.cache import cache_root, exclusive_lock
from kvswarm.workloads import text

if TYPE_CHECKING:
    import gguf

EXTRA_HINT = "pip install 'kvswarm[llamacpp]'"


def _import_gguf() -> ModuleType:
    """gguf, from the `llamacpp` extra (imported when a model is written, not before)."""
    try:
        import gguf
    except ModuleNotFoundError:
        raise KvswarmError(f"writing the tiny GGUF model needs gguf: {EXTRA_HINT}") from None
    return gguf


# Bump when the bytes written for a given spec change, so old cached files are not reused.
FORMAT_VERSION = 1

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """The shape of the generated model; every field is part of its cache key."""

    context_length: int = 8192  # tokens the model claims to support (llama.context_length)
    vocab_size: int = 8192  # BPE vocabulary size, special tokens included
    hidden_size: int = 512
    layers: int = 4
    heads: int = 8
    kv_heads: int = 8
    ffn_size: int = 1536
    seed: int = 0
    corpus_chars: int = 3_000_000  # size of the generated text the tokenizer learns from

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads or self.heads % self.kv_heads:
            raise ValueError("hidden_size must divide by heads, and heads by kv_heads")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError("vocab_size must cover the 256 byte tokens and the special tokens")

    @property
    def digest(self) -> str:
        fields = {"format": FORMAT_VERSION, **dataclasses.asdict(self)}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def file_name(self) -> str:
        shape = f"h{self.hidden_size}-l{self.layers}-c{self.context_length}"
        return f"tiny-llama-{shape}-{self.digest}.gguf"


def models_dir() -> Path:
    """`<cache>/models/`, where generated models are kept."""
    return cache_root() / "models"


def ensure_tiny_model(spec: TinyModelSpec | None = None) -> Path:
    """The path of the model for `spec` (default: `TinyModelSpec()`), writing it if needed.

    Takes a few seconds the first time (tokenizer training, random weights); later calls
    return the cached file at once.
    """
    spec = spec or TinyModelSpec()
    path = models_dir() / spec.file_name
    if path.is_file():
        return path
    with exclusive_lock(
        models_dir() / "models.lock", f"kvswarm: waiting for another process writing {path}"
    ):
        if not path.is_file():
            partial = path.with_suffix(".partial")
            write_tiny_model(partial, spec)
            os.replace(partial, path)
    return path


def write_tiny_model(path: Path, spec: TinyModelSpec) -> None:
    """Write the GGUF file for `spec` to `path` (overwriting it)."""
    gguf = _import_gguf()
    vocab = train_vocabulary(spec)
    writer = gguf.GGUFWriter(path, "llama")
    _add_model_metadata(writer, spec, len(vocab.tokens))
    _add_tokenizer_metadata(writer, vocab)
    for name, tensor in _weights(spec, len(vocab.tokens)):
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@dataclass(frozen=True)
class Vocabulary:
    """A trained byte-level BPE vocabulary in GGUF's `gpt2` terms."""

    tokens: tuple[str, ...]  # by id, in byte-level form ("Ġthe" for " the")
    merges: tuple[str, ...]  # "left right", in merge order
    special_ids: dict[str, int]


def train_vocabulary(spec: TinyModelSpec) -> Vocabulary:
    """Train the BPE vocabulary for `spec` on generated text (deterministic for a seed)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ModuleNotFoundError:
        raise KvswarmError(
            f"training the tiny model's vocabulary needs tokenizers: {EXTRA_HINT}"
        ) from None

    tokenizer = Tokenizer(models.BPE())
    # The GPT-2 split regex, the same llama.cpp applies for pre-tokenizer "gpt-2".
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(spec), trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    if [token_id for _, token_id in by_id] != list(range(len(by_id))):
        raise RuntimeError("trained vocabulary ids are not contiguous")
    merges = tuple(m if isinstance(m, str) else " ".join(m) for m in model["merges"])
    return Vocabulary(
        tokens=tuple(token for token, _ in by_id),
        merges=merges,
        special_ids={token: model["vocab"][token] for token in SPECIAL_TOKENS},
    )


def _corpus(spec: TinyModelSpec) -> Iterator[str]:
    """Training text: half kvswarm's own workload text, half made-up words and numbers.

    The workload half makes the prompts kvswarm sends tokenize like real text (about a
    token per common word); the made-up half gives the vocabulary pieces for anything else.
    """
    # Every sentence generated afresh (user turns unbanked): a tokenizer trained on the
    # sentence bank's repeats would learn them as pieces.
    kinds = (
        text.prose,
        text.code,
        text.instructions,
        text.opener,
        functools.partial(text.user_turn, banked=False),
    )
    share = spec.corpus_chars // (2 * len(kinds))
    for index, kind in enumerate(kinds):
        yield from _take_chars(kind(text.seeded("tinymodel", spec.seed, index)), share)
    yield from _take_chars(_made_up_text(random.Random(spec.seed)), spec.corpus_chars // 2)


def _take_chars(pieces: Iterator[str], budget: int) -> Iterator[str]:
    for piece in pieces:
        if budget <= 0:
            return
        budget -= len(piece)
        yield piece


_ONSETS = ("", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w")
_ONSETS += ("br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th", "tr", "qu")
_NUCLEI = ("a", "e", "i", "o", "u", "y", "ai", "ea", "ee", "io", "oo", "ou")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "st", "ck", "x")
_LENGTHS = (1, 1, 2, 2, 2, 3, 3, 4)  # syllables per word
_PUNCTUATION = (".", ".", ".", ",", ",", ";", ":", "?", "!", " -", " (", ")")


def _made_up_text(rng: random.Random) -> Iterator[str]:
    """Endless sentences of pronounceable made-up words, with numbers and punctuation."""
    syllables = [o + n + c for o in _ONSETS for n in _NUCLEI for c in _CODAS]
    rng.shuffle(syllables)
    # Zipf-like: a few syllables (and so words) are common, most are rare, as in language.
    syllable_weights = list(accumulate(1.0 / (rank + 1) for rank in range(len(syllables))))
    lexicon = [
        "".join(rng.choices(syllables, cum_weights=syllable_weights, k=rng.choice(_LENGTHS)))
        for _ in range(20_000)
    ]
    word_weights = list(accumulate(1.0 / (rank + 1) ** 0.9 for rank in range(len(lexicon))))
    while True:
        words = rng.choices(lexicon, cum_weights=word_weights, k=rng.randint(4, 18))
        words[0] = words[0].capitalize()
        if rng.random() < 0.3:
            number = rng.randint(0, 99) if rng.random() < 0.5 else rng.randint(100, 99999)
            words.insert(rng.randrange(len(words)), str(number))
        sentence = " ".join(words) + rng.choice(_PUNCTUATION)
        yield sentence + ("\n\n" if rng.random() < 0.1 else " ")


def _add_model_metadata(writer: gguf.GGUFWriter, spec: TinyModelSpec, n_vocab: int) -> None:
    writer.add_name("kvswarm tiny llama (random weights)")
    writer.add_description(
        f"Generated by kvswarm from seed {spec.seed}: random weights, output is gibberish; "
        "for load-testing a real llama.cpp server without downloading a model"
    )
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.hidden_size)
    writer.add_block_count(spec.layers)
    writer.add_feed_forward_length(spec.ffn_size)
    writer.add_head_count(spec.heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_rope_dimension_count(spec.hidden_size // spec.heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(_import_gguf().LlamaFileType.MOSTLY_F16)


def _add_tokenizer_metadata(writer: gguf.GGUFWriter, vocab: Vocabulary) -> None:
    gguf = _import_gguf()
    special = set(vocab.special_ids.values())
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_types(
        [
            gguf.TokenType.CONTROL if token_id in special else gguf.TokenType.NORMAL
            for token_id in range(len(vocab.tokens))
        ]
    )
    writer.add_token_merges(list(vocab.merges))
    writer.add_bos_token_id(vocab.special_ids[ENDOFTEXT])
    writer.add_eos_token_id(vocab.special_ids[IM_END])
    writer.add_eot_token_id(vocab.special_ids[IM_END])
    writer.add_pad_token_id(vocab.special_ids[ENDOFTEXT])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)


def _weights(spec: TinyModelSpec, n_vocab: int) -> Iterator[tuple[str, np.ndarray]]:
    """The llama tensors, numpy shapes being ggml's dimensions reversed (rows = outputs)."""
    rng = np.random.default_rng(spec.seed)
    hidden = spec.hidden_size
    kv_width = hidden // spec.heads * spec.kv_heads

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(hidden, dtype=np.float32)

    yield "token_embd.weight", matrix(n_vocab, hidden)
    for layer in range(spec.layers):
        block = f"blk.{layer}"
        yield f"{block}.attn_norm.weight", norm()
        yield f"{block}.attn_q.weight", matrix(hidden, hidden)
        yield f"{block}.attn_k.weight", matrix(kv_width, hidden)
        yield f"{block}.attn_v.weight", matrix(kv_width, hidden)
        yield f"{block}.attn_output.weight", matrix(hidden, hidden)
        yield f"{block}.ffn_norm.weight", norm()
        yield f"{block}.ffn_gate.weight", matrix(spec.ffn_size, hidden)
        yield f"{block}.ffn_up.weight", matrix(spec.ffn_size, hidden)
        yield f"{block}.ffn_down.weight", matrix(hidden, spec.ffn_size)
    yield "output_norm.weight", norm()
    yield "output.weight", matrix(n_vocab, hidden)


def parameter_count(spec: TinyModelSpec, n_vocab: int | None = None) -> int:
    """How many weights the model for `spec` has (`n_vocab` defaults to `spec.vocab_size`)."""
    n_vocab = spec.vocab_size if n_vocab is None else n_vocab
    hidden = spec.hidden_size
    kv_width = hidden // spec.heads * spec.kv_heads
    per_layer = 2 * hidden + 2 * hidden * hidden + 2 * kv_width * hidden
    per_layer += 3 * spec.ffn_size * hidden
    return 2 * n_vocab * hidden + hidden + spec.layers * per_layer
