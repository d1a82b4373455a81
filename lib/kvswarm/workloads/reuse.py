"""How a workload decides which requests reuse a prefix, and when a hit is expected.

`expected_hit` is True exactly when the request begins with a prefix this process has
already sent:

- a pool prefix (document, codebase, template, conversation opener) that any workload of
  this process used before (`SeenPrefixes`); its first use in the process is a designed miss;
- the history of a conversation this user is continuing (turn 2 and later), which the
  server saw as the previous turn's prompt and generated as its reply.

A designed miss never begins with reusable text: it starts with the request's unique tag
(a 12-letter digest of seed, scenario, worker, user and counter, then those ids
literally), so no prefix-caching engine (vLLM's block hashes, LMCache's chunk hashes,
SGLang's radix tree: all chained from the first token) can match its first block, even
when the rest of it is a pool item. Engines that reuse non-prefix chunks (CacheBlend-style)
could still hit those.

Per process, not per cluster: when N worker processes share a seed, each process's first
use of each pool item is a designed miss although only the first in the cluster really
misses (N x pool_size requests in all, negligible over a run). A prefix is marked as sent
when its request is generated, so a request following it while its prefill is still in
flight is expected to hit and may not.

`ReuseSchedule` steers the choice so that the realised share of expected hits follows
`reuse_ratio` closely, first-use misses included: each request is a hit candidate with
probability `ratio + gain * (ratio * n - hits)`, clamped to [0, 1], so the deficit of hits
is fed back and the share after n requests stays within a few requests of the ratio.
"""

from __future__ import annotations

import random


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
