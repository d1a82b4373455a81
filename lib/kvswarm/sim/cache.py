"""A block-hashed prefix cache with LRU eviction, the way vLLM's prefix caching works.

A prompt's tokens are cut into full blocks of `block_size` tokens; each block's hash
covers its parent's hash and its own tokens, so a block hash stands for the whole prefix
up to the end of that block (a partial last block is never cached). A lookup counts the
leading blocks already present; like vLLM it never counts the prompt's last token as
cached, so at least one token is always computed.

Capacity is in blocks. When full, the least recently used block goes first; a chain is
touched from its last block to its first, so a prefix's later blocks are evicted before
its earlier ones and what stays cached is always a usable prefix. Blocks in use by
running requests are not pinned (a simplification: the simulator holds no KV memory).

Hashes use Python's `hash`, which is stable within a process (vLLM's default `builtin`
hash has the same property); everything that compares them lives in one process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence


def block_hashes(tokens: Sequence[Hashable], block_size: int) -> list[int]:
    """The chained hashes of the full blocks of `tokens`."""
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = hash((parent, *tokens[start : start + block_size]))
        hashes.append(parent)
    return hashes


def cacheable_blocks(prompt_tokens: int, block_size: int) -> int:
    """How many leading blocks a lookup may count: the last token is always computed."""
    return max(0, prompt_tokens - 1) // block_size


class PrefixCache:
    """LRU set of block hashes with a capacity in blocks."""

    def __init__(self, block_size: int, capacity_blocks: int) -> None:
        if block_size < 1 or capacity_blocks < 0:
            raise ValueError("block_size must be >= 1 and capacity_blocks >= 0")
        self.block_size = block_size
        self.capacity_blocks = capacity_blocks
        self.evictions = 0
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def match(self, hashes: Sequence[int], max_blocks: int | None = None) -> int:
        """Count the leading blocks of `hashes` that are cached, and mark them used."""
        limit = len(hashes) if max_blocks is None else min(max_blocks, len(hashes))
        blocks = self._blocks
        hit = 0
        while hit < limit and hashes[hit] in blocks:
            hit += 1
        self._touch(hashes[:hit])
        return hit

    def clear(self) -> None:
        """Drop every block (vLLM's `reset_prefix_cache`)."""
        self._blocks.clear()

    def insert(self, hashes: Sequence[int]) -> None:
        """Cache every block of `hashes`, evicting least recently used blocks if full."""
        if not self.capacity_blocks:
            return
        self._touch(hashes)
        blocks = self._blocks
        while len(blocks) > self.capacity_blocks:
            blocks.popitem(last=False)
            self.evictions += 1

    def _touch(self, hashes: Sequence[int]) -> None:
        blocks = self._blocks
        for block_hash in reversed(hashes):
            if block_hash in blocks:
                blocks.move_to_end(block_hash)
            else:
                blocks[block_hash] = None
