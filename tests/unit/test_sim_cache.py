"""The simulator's block-hashed prefix cache: hashing, lookup, LRU eviction."""

from __future__ import annotations

from kvswarm.sim.cache import PrefixCache, block_hashes, cacheable_blocks


def tokens(count: int, tag: str = "t") -> list[str]:
    return [f"{tag}{i}" for i in range(count)]


def test_block_hashes_cover_full_blocks_only() -> None:
    assert len(block_hashes(tokens(47), 16)) == 2
    assert len(block_hashes(tokens(48), 16)) == 3


def test_block_hash_depends_on_every_earlier_block() -> None:
    same_tail = tokens(16, "tail")
    one = block_hashes(tokens(16, "a") + same_tail, 16)
    two = block_hashes(tokens(16, "b") + same_tail, 16)
    assert one[1] != two[1]


def test_equal_prefixes_have_equal_hashes() -> None:
    assert block_hashes(tokens(40), 16) == block_hashes(tokens(40) + ["x"], 16)


def test_last_token_is_never_counted_as_cached() -> None:
    assert cacheable_blocks(32, 16) == 1
    assert cacheable_blocks(33, 16) == 2
    assert cacheable_blocks(0, 16) == 0


def test_match_counts_leading_cached_blocks() -> None:
    cache = PrefixCache(16, 100)
    cache.insert(block_hashes(tokens(64), 16))
    assert cache.match(block_hashes(tokens(64) + tokens(32, "new"), 16)) == 4


def test_match_stops_at_first_missing_block() -> None:
    cache = PrefixCache(16, 100)
    hashes = block_hashes(tokens(64), 16)
    cache.insert(hashes[:1])
    cache.insert(hashes[2:])
    assert cache.match(hashes) == 1


def test_match_respects_max_blocks() -> None:
    cache = PrefixCache(16, 100)
    hashes = block_hashes(tokens(64), 16)
    cache.insert(hashes)
    assert cache.match(hashes, max_blocks=3) == 3


def test_capacity_evicts_least_recently_used_blocks() -> None:
    cache = PrefixCache(16, 4)
    old, new = block_hashes(tokens(64, "old"), 16), block_hashes(tokens(64, "new"), 16)
    cache.insert(old)
    cache.insert(new)
    assert len(cache) == 4 and cache.evictions == 4
    assert cache.match(old) == 0
    assert cache.match(new) == 4


def test_match_refreshes_recency() -> None:
    cache = PrefixCache(16, 4)
    first, second = block_hashes(tokens(32, "a"), 16), block_hashes(tokens(32, "b"), 16)
    cache.insert(first)
    cache.insert(second)
    cache.match(first)
    cache.insert(block_hashes(tokens(32, "c"), 16))
    assert cache.match(first) == 2
    assert cache.match(second) == 0


def test_eviction_drops_the_end_of_a_prefix_before_its_start() -> None:
    cache = PrefixCache(16, 4)
    hashes = block_hashes(tokens(96), 16)
    cache.insert(hashes)
    assert cache.match(hashes) == 4


def test_zero_capacity_caches_nothing() -> None:
    cache = PrefixCache(16, 0)
    hashes = block_hashes(tokens(32), 16)
    cache.insert(hashes)
    assert cache.match(hashes) == 0


def test_clear_drops_every_block() -> None:
    cache = PrefixCache(block_size=2, capacity_blocks=8)
    hashes = block_hashes(list("abcdef"), 2)
    cache.insert(hashes)
    cache.clear()
    assert len(cache) == 0 and cache.match(hashes) == 0
