"""An offline test tokenizer: a small byte-level BPE trained on kvswarm's own generators.

Byte-level like GPT-2/Qwen/Llama 3 tokenizers (so every string encodes, and counts are
near-additive across words), trained in about a second from deterministic text; nothing is
downloaded. `train_tokenizer()` returns a `tokenizers.Tokenizer`; `save` it to get a
tokenizer.json for `HFSizer.load`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from kvswarm.workloads import text

VOCAB_SIZE = 3000
_CORPUS_PIECES = 1500  # per generator: about 400 kB of text in all


def corpus(seed: int = 1234) -> Iterator[str]:
    """Training text: every generator of kvswarm.workloads.text, a few streams each."""
    generators = (
        text.document,
        text.code,
        text.instructions,
        text.opener,
        text.question,
        text.coding_request,
        text.batch_input,
        text.user_turn,
    )
    for generator in generators:
        for stream in range(2):
            rng = text.seeded(seed, "tokenizer-corpus", generator.__name__, stream)
            yield "".join(itertools.islice(generator(rng), _CORPUS_PIECES // 2))


def train_tokenizer(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE tokenizer with `vocab_size` tokens, trained on `corpus()`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return tokenizer
