"""The theoretical prefix hit rate of a trace, infinite and LRU, against hand-computed values."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from kvswarm.workloads.trace_file import Trace, TraceRow, load_trace
from kvswarm.workloads.trace_hits import (
    analyze_trace,
    capacity_blocks,
    infinite_cache_hits,
    lru_cache_hits,
)

CONVERSATION = Path("/work/shared/traces/mooncake/conversation_trace.jsonl")


def tiny_trace() -> Trace:
    """Blocks of 4 tokens. By hand, infinite cache:
    A [1,2,3] 10 tokens: nothing seen                              -> 0
    B [1,2,4] 12 tokens: 1, 2 seen, 4 new                           -> 4 + 4 = 8
    C [5,2]    7 tokens: 5 new, so 2 (seen) is not a prefix hit     -> 0
    D [1,2,3] 11 tokens: all seen, the last block 11 - 8 = 3 tokens -> 4 + 4 + 3 = 11
    19 of 40 prompt tokens."""
    specs = [(0, 10, [1, 2, 3]), (1000, 12, [1, 2, 4]), (2000, 7, [5, 2]), (4000, 11, [1, 2, 3])]
    rows = tuple(
        TraceRow(
            index=i,
            line=i + 1,
            timestamp_ms=ts,
            input_length=n,
            output_length=8,
            hash_ids=tuple(ids),
        )  # fmt: skip
        for i, (ts, n, ids) in enumerate(specs)
    )
    return Trace("tiny", 4, rows)


def test_infinite_cache_hit_rate_equals_the_hand_computed_one():
    trace = tiny_trace()
    assert infinite_cache_hits(trace.rows, 4).tolist() == [0, 8, 0, 11]
    analysis = analyze_trace(trace)
    assert (analysis.infinite.hit_tokens, analysis.infinite.prompt_tokens) == (19, 40)
    assert analysis.infinite.rate == pytest.approx(19 / 40)


def test_an_lru_smaller_than_the_working_set_hits_less():
    """Capacity 3, by hand: A leaves [1,2,3]; B hits 1,2 (8), leaves [1,2,4] (3 evicted);
    C misses 5, leaves [4,5,2] (1 evicted); D misses 1 at once: 8 of 40."""
    trace = tiny_trace()
    assert lru_cache_hits(trace.rows, 4, 3).tolist() == [0, 8, 0, 0]
    analysis = analyze_trace(trace, cache_blocks=3)
    assert analysis.lru is not None and analysis.lru.rate == pytest.approx(8 / 40)
    assert analysis.lru.rate < analysis.infinite.rate


def test_an_lru_larger_than_the_working_set_is_the_infinite_cache():
    trace = tiny_trace()
    assert lru_cache_hits(trace.rows, 4, 5).tolist() == infinite_cache_hits(trace.rows, 4).tolist()


def test_a_block_repeated_within_a_request_does_not_serve_itself():
    rows = (TraceRow(0, 1, 0, 8, 1, (7, 7)), TraceRow(1, 2, 1, 8, 1, (7, 7)))
    assert infinite_cache_hits(rows, 4).tolist() == [0, 8]
    assert lru_cache_hits(rows, 4, 10).tolist() == [0, 8]


def test_the_vectorised_infinite_cache_agrees_with_a_plain_loop():
    rng = random.Random(3)
    rows = []
    for i in range(300):
        ids = [rng.randrange(40) for _ in range(rng.randint(1, 6))]
        rows.append(TraceRow(i, i + 1, i, (len(ids) - 1) * 4 + rng.randint(1, 4), 1, tuple(ids)))
    seen: set[int] = set()
    expected = []
    for r in rows:
        hits = 0
        for j, block in enumerate(r.hash_ids):
            if block not in seen:
                break
            hits += 4 if j < len(r.hash_ids) - 1 else r.input_length - 4 * j
        expected.append(hits)
        seen.update(r.hash_ids)
    assert infinite_cache_hits(rows, 4).tolist() == expected
    assert lru_cache_hits(rows, 4, 10_000).tolist() == expected


def test_the_summary_counts_requests_rates_and_blocks():
    analysis = analyze_trace(tiny_trace())
    assert analysis.requests == 4 and analysis.duration_s == 4.0
    assert analysis.arrival_rate_rps == 1.0
    assert analysis.unique_blocks == 5 and analysis.working_set_tokens == 20
    assert analysis.input_lengths.max == 12 and analysis.input_lengths.p50 == 10.5


def test_capacity_in_gb_is_whole_blocks():
    assert capacity_blocks(1.0, 1000, 512) == 1953
    assert capacity_blocks(0.0005, 1000, 512) == 0


@pytest.mark.skipif(not CONVERSATION.is_file(), reason="the shared Mooncake trace is absent")
def test_the_shared_conversation_trace_is_analysed_whole():
    analysis = analyze_trace(load_trace(CONVERSATION), cache_blocks=20_000)
    assert analysis.requests == 12_031 and analysis.unique_blocks == 182_790
    assert analysis.input_tokens == int(np.int64(144_793_823))
    assert 0 < analysis.lru.rate < analysis.infinite.rate < 1
