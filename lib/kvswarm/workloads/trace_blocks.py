"""Prompt text from a trace's hash ids: one deterministic block of text per id.

Block `id` is ` <tag>` followed by prose from the stream `text.prose(seeded(seed,
"trace-block", id))`, cut to `block_tokens` tokens of the served model, where the tag
spells a digest of (seed, id) in consonants and then the id itself (` kqbdmfhjclst-4711`):

- equal ids give byte-identical blocks in every process on every host with the same seed
  and tokenizer, so equal leading ids give byte-identical prompt prefixes;
- different ids differ from their first tokens, and their prose comes from unrelated
  streams, so no two blocks share a run of words a prefix cache could match;
- every block starts with a space before a word, where tokenizers split, so a prompt's
  length is the sum of its blocks' lengths (exactly for a local tokenizer that splits at
  spaces, GPT-2-style BPE and the simulator's words included).

Each block is cut at exactly `block_tokens` tokens where some cut of its text has that
many: always with the simulator's one-token-per-word tokenizer; with a BPE, where a cut
would split a merged pair (`.\n\n`), a few blocks in a hundred end one token over or
under. A prompt is its full blocks then the last block cut to the tokens left (the full
blocks' own error taken off), so it is `input_length` tokens long with a local sizer (the
last block is a prefix of the whole block: a request that ends inside a block shares
that much of it). With the server's
/tokenize or a ratio, blocks are sized as the scenarios' unique parts are
(`kvswarm.tokens.TextFitter`): a few counted exactly, the rest by the measured ratio.

Blocks are generated on first use and kept in a bounded LRU (`cache_blocks`, 4,096 by
default: about 8 MB of text at 512 tokens per block), so a trace of 180k distinct blocks
never holds more than that in memory; a block evicted and asked for again is generated
again, identically.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence

from kvswarm.tokens import Fitted, TextFitter, TokenSizer
from kvswarm.workloads import text

__all__ = ["BlockText", "block_tag"]

_KIND = "trace block"
# Hex digits to consonants: tags are letters (a space before one joins the same way
# every time), so a tag's first tokens differ between ids.
_CONSONANTS = str.maketrans("0123456789abcdef", "bcdfghjklmnpqrst")


def block_tag(seed: int, hash_id: int) -> str:
    """The words that open block `hash_id` (without the leading space)."""
    key = f"trace-block\x1f{seed}\x1f{hash_id}".encode()
    digest = hashlib.blake2b(key, digest_size=6).hexdigest().translate(_CONSONANTS)
    return f"{digest}-{hash_id}"


class _ExactFitter(TextFitter):
    """A `TextFitter` that stops only at the target itself (within a word if need be).

    With a remote sizer it counts blocks exactly until 20,000 tokens of them are counted
    (40 blocks of 512) before it sizes by their ratio: a replay's prompts are hundreds of
    blocks long, so a ratio's error is the prompt's, and three blocks (the scenarios'
    calibration) left it at 2-8% on a trace of 64-token blocks."""

    CALIBRATION_TOKENS = 20_000

    def tolerance(self, target: int) -> int:
        return 0


class BlockText:
    """The text of a trace's blocks, sized with `sizer`, cached in a bounded LRU.

    `block(id)` is one whole block; `prompt(ids, input_length)` the prompt of a row.
    `generated` counts blocks generated (misses of the cache), for tests and benchmarks.
    """

    def __init__(
        self,
        sizer: TokenSizer,
        block_tokens: int,
        *,
        seed: int = 0,
        cache_blocks: int = 4096,
    ) -> None:
        if block_tokens <= 0:
            raise ValueError("block_tokens must be > 0")
        if cache_blocks <= 0:
            raise ValueError("cache_blocks must be > 0")
        self.fitter: TextFitter = _ExactFitter(sizer)
        self.block_tokens = block_tokens
        self.seed = seed
        self.cache_blocks = cache_blocks
        self.generated = 0
        self._cache: OrderedDict[int, Fitted] = OrderedDict()

    def block(self, hash_id: int) -> Fitted:
        """Block `hash_id`: `block_tokens` tokens as the sizer counts them."""
        cached = self._cache.get(hash_id)
        if cached is not None:
            self._cache.move_to_end(hash_id)
            return cached
        fitted = self._fit(hash_id, self.block_tokens)
        self.generated += 1
        self._cache[hash_id] = fitted
        if len(self._cache) > self.cache_blocks:
            self._cache.popitem(last=False)
        return fitted

    def prompt(self, hash_ids: Sequence[int], input_length: int) -> Fitted:
        """The prompt of a row: its blocks, the last one cut so the whole is `input_length`
        tokens (`tokens` is the sum of the blocks' sized lengths).

        `input_length` must be in ((len(ids) - 1) * block_tokens, len(ids) * block_tokens]
        (what loading a trace checks)."""
        full = len(hash_ids) - 1
        rest = input_length - full * self.block_tokens
        if not hash_ids or not 0 < rest <= self.block_tokens:
            raise ValueError(
                f"{len(hash_ids)} blocks of {self.block_tokens} tokens cannot make "
                f"{input_length} tokens"
            )
        blocks = [self.block(hash_id) for hash_id in hash_ids[:full]]
        # What the full blocks missed (a BPE cut can land a token off) comes off the last.
        rest = max(1, input_length - sum(b.tokens for b in blocks))
        last = hash_ids[full]
        blocks.append(self.block(last) if rest == self.block_tokens else self._fit(last, rest))
        return Fitted("".join(b.text for b in blocks), sum(b.tokens for b in blocks))

    def _fit(self, hash_id: int, tokens: int) -> Fitted:
        stream = _block_stream(self.seed, hash_id)
        return self.fitter.fit(stream, tokens, _KIND)

    def __len__(self) -> int:
        """Blocks held in the cache now."""
        return len(self._cache)


def _block_stream(seed: int, hash_id: int) -> Iterator[str]:
    yield f" {block_tag(seed, hash_id)} "
    yield from text.prose(text.seeded(seed, "trace-block", hash_id))
