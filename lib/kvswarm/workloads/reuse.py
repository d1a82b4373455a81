"""How a workload decides which requests reuse a prefix, and when a hit is expected.

`expected_hit` is True exactly when the request begins with a prefix the fleet has
already sent:

- a pool prefix (document, codebase, template, conversation opener) that some workload of
  some process of the fleet used before (`SeenPrefixes`); its first use in the fleet is a
  designed miss;
- the history of a conversation this user is continuing (turn 2 and later), which the
  server saw as the previous turn's prompt and generated as its reply.

A designed miss never begins with reusable text: it is either the fleet's first use of a
pool item, or it starts with the request's unique tag (a 12-letter digest of seed, run,
scenario, worker, user and counter, then those ids literally), so no prefix-caching engine
(vLLM's block hashes, LMCache's chunk hashes, SGLang's radix tree: all chained from the
first token) can match its first block, even when the rest of it is a pool item, and a
second run against the same server misses as the first did. Engines that reuse
non-prefix chunks (CacheBlend-style) could still hit those.

Per fleet: pools are byte-identical in every process of every run with the same seed, so
only the first use of an item anywhere in the fleet misses. Each process tells the others
of its first uses (`SeenPrefixes.on_first_use`, delivered with `mark_seen`); until a
report arrives, another process may count its own first use of the same item as a miss
too (it does miss if the two are prefilled concurrently). A prefix is marked as sent when
its request is generated, so a request following it while its prefill is still in flight
is expected to hit and may not.

`choose_prefix` spends the pool's first uses where they cost nothing: a request that the
schedule wants to be a miss is the first use of an unseen item while any is left (and
only then begins with its tag); a request that wants a hit uses an item already seen,
and is a first use only while nothing has been seen. So a fleet spends about `pool_size`
misses on first uses in all, each in place of a miss the ratio asked for anyway, and the
realised share of expected hits is close to `reuse_ratio` from the first requests on.
At `reuse_ratio` 1 no miss is ever wanted: hit-wanting requests then choose over the
whole pool, and each item's first use is a miss charged to one of them, so every item
is used. Given the same order of first uses, every choice is deterministic per (seed,
run, scenario, worker, user).

`ReuseSchedule` steers the choice so that the realised share of expected hits follows
`reuse_ratio` closely, first-use misses included: each request is a hit candidate with
probability `ratio + gain * (ratio * n - hits)`, clamped to [0, 1], so the deficit of hits
is fed back and the share after n requests stays within a few requests of the ratio.
"""

from __future__ import annotations

import random

from kvswarm.workloads.pool import PoolItem, PrefixPool, SeenPrefixes

__all__ = ["ReuseSchedule", "choose_prefix"]


class ReuseSchedule:
    """Decides, request by request, whether to aim for a hit; records what was expected."""

    GAIN = 0.25

    def __init__(self, ratio: float, rng: random.Random) -> None:
        self.ratio = ratio
        self.rng = rng
        self.requests = 0
        self.hits = 0

    def want_hit(self) -> bool:
        """Whether the next request should reuse a prefix."""
        deficit = self.ratio * self.requests - self.hits
        probability = min(1.0, max(0.0, self.ratio + self.GAIN * deficit))
        return self.rng.random() < probability

    def record(self, expected_hit: bool) -> None:
        """Account for the request actually generated (a wanted hit can be a first use)."""
        self.requests += 1
        self.hits += expected_hit


def choose_prefix(
    pool: PrefixPool,
    seen: SeenPrefixes,
    rng: random.Random,
    *,
    want_hit: bool,
    ratio: float,
) -> tuple[PoolItem, bool]:
    """The pool item of the next request, and whether it goes first (True) or after the
    request's tag (False: a miss unique from its first token). See the module docstring.

    The caller marks a bare item with `seen.first_use`: it is an expected hit unless that
    is its first use.
    """
    seen_indices, unseen_indices = pool.seen_and_unseen(seen)
    if want_hit:
        if seen_indices and ratio < 1.0:
            return pool.item(rng.choice(seen_indices)), True
        return pool.item(rng.randrange(len(pool))), True
    if unseen_indices:
        return pool.item(rng.choice(unseen_indices)), True
    return pool.item(rng.randrange(len(pool))), False
