"""What a trace asks of a server: its load, its lengths, and its theoretical prefix hit rate.

The theoretical prefix hit rate is the share of prompt tokens a prefix cache could serve
from blocks earlier requests left in it. A prefix cache matches a prefix, not scattered
blocks, so block `j` of a request counts only while blocks `0..j` of that request were all
seen before (by earlier requests; a block repeated within one request does not serve
itself). A counted block brings `block_tokens` tokens, the last block of a request its
real length (`input_length - (blocks - 1) * block_tokens`):

    hit rate = sum of counted tokens / sum of input_length

- infinite cache: "seen before" is "in any earlier request";
- LRU cache of `cache_blocks` blocks: each request looks up its blocks in order (a hit
  refreshes the block), then every block of the request is inserted or refreshed in order
  and the least recently used blocks beyond the capacity are evicted. A capacity given in
  GB holds `floor(GB * 1e9 / (kv_bytes_per_token * block_tokens))` blocks.

Rows that carry their own text (`text_input`, `messages`) have no blocks: their tokens
count as misses. `analyze_trace` gives the table `kvswarm trace analyze` prints.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from kvswarm.workloads.trace_file import Trace, TraceRow

__all__ = [
    "HitRate",
    "LengthPercentiles",
    "TraceAnalysis",
    "analyze_trace",
    "capacity_blocks",
    "infinite_cache_hits",
    "lru_cache_hits",
]


@dataclass(frozen=True)
class HitRate:
    """The theoretical prefix hit rate of some rows for one cache.

    `cache_blocks` None is an infinite cache; `hit_tokens` of `prompt_tokens` could be
    served from it; `rate` is their ratio (0 with no prompt tokens).
    """

    cache_blocks: int | None
    hit_tokens: int
    prompt_tokens: int

    @property
    def rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}


@dataclass(frozen=True)
class LengthPercentiles:
    """Token lengths of a trace's rows: mean, p50/p90/p99 (linear interpolation), max."""

    mean: float
    p50: float
    p90: float
    p99: float
    max: int

    @classmethod
    def of(cls, values: np.ndarray) -> LengthPercentiles:
        if values.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(float(values.mean()), float(p50), float(p90), float(p99), int(values.max()))


@dataclass(frozen=True)
class TraceAnalysis:
    """The summary of a trace (`kvswarm trace analyze`); `to_dict()` is its JSON.

    - `requests`, `duration_s` (first to last timestamp), `arrival_rate_rps` (requests /
      duration; 0 for a trace without timestamps or of one instant);
    - `input_tokens`, `output_tokens`: sums; `input_lengths`, `output_lengths`: percentiles;
    - `unique_blocks`: distinct hash ids; `block_tokens`: the block size the rows were read at;
      `working_set_tokens`: `unique_blocks * block_tokens`;
    - `infinite`: the hit rate with an infinite cache; `lru`: with the given capacity.
    """

    path: str
    block_tokens: int
    requests: int
    duration_s: float
    arrival_rate_rps: float
    input_tokens: int
    output_tokens: int
    input_lengths: LengthPercentiles
    output_lengths: LengthPercentiles
    unique_blocks: int
    working_set_tokens: int
    infinite: HitRate
    lru: HitRate | None = None
    kv_bytes_per_token: float | None = None

    @property
    def working_set_gb(self) -> float | None:
        """The KV bytes of every distinct block, in GB (1e9 bytes), when known."""
        if self.kv_bytes_per_token is None:
            return None
        return self.working_set_tokens * self.kv_bytes_per_token / 1e9

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["infinite"] = self.infinite.to_dict()
        data["lru"] = self.lru.to_dict() if self.lru is not None else None
        data["working_set_gb"] = self.working_set_gb
        return data


def capacity_blocks(cache_gb: float, kv_bytes_per_token: float, block_tokens: int) -> int:
    """The blocks of `block_tokens` tokens a cache of `cache_gb` GB (1e9 bytes) holds."""
    if cache_gb <= 0 or kv_bytes_per_token <= 0:
        raise ValueError("cache_gb and kv_bytes_per_token must be > 0")
    return math.floor(cache_gb * 1e9 / (kv_bytes_per_token * block_tokens))


def analyze_trace(
    trace: Trace,
    rows: Sequence[TraceRow] | None = None,
    *,
    cache_blocks: int | None = None,
    kv_bytes_per_token: float | None = None,
) -> TraceAnalysis:
    """Summarise `rows` (all of the trace's by default); an LRU hit rate too when
    `cache_blocks` is given."""
    rows = trace.rows if rows is None else rows
    blocks = _Blocks.of(rows, trace.block_tokens)
    inputs = np.fromiter((r.input_length for r in rows), dtype=np.int64, count=len(rows))
    outputs = np.fromiter((r.output_length for r in rows), dtype=np.int64, count=len(rows))
    duration_s = _duration_s(rows)
    unique = int(np.unique(blocks.ids).size)
    return TraceAnalysis(
        path=trace.path,
        block_tokens=trace.block_tokens,
        requests=len(rows),
        duration_s=duration_s,
        arrival_rate_rps=len(rows) / duration_s if duration_s > 0 else 0.0,
        input_tokens=int(inputs.sum()),
        output_tokens=int(outputs.sum()),
        input_lengths=LengthPercentiles.of(inputs),
        output_lengths=LengthPercentiles.of(outputs),
        unique_blocks=unique,
        working_set_tokens=unique * trace.block_tokens,
        infinite=_rate(None, blocks.infinite_hits(), inputs),
        lru=None
        if cache_blocks is None
        else _rate(cache_blocks, blocks.lru_hits(cache_blocks), inputs),
        kv_bytes_per_token=kv_bytes_per_token,
    )


def infinite_cache_hits(rows: Sequence[TraceRow], block_tokens: int) -> np.ndarray:
    """Per row, the prompt tokens an infinite prefix cache could serve."""
    return _Blocks.of(rows, block_tokens).infinite_hits()


def lru_cache_hits(rows: Sequence[TraceRow], block_tokens: int, cache_blocks: int) -> np.ndarray:
    """Per row, the prompt tokens an LRU prefix cache of `cache_blocks` blocks could serve."""
    return _Blocks.of(rows, block_tokens).lru_hits(cache_blocks)


def _rate(cache_blocks: int | None, hits: np.ndarray, inputs: np.ndarray) -> HitRate:
    return HitRate(cache_blocks, int(hits.sum()), int(inputs.sum()))


def _duration_s(rows: Sequence[TraceRow]) -> float:
    if not rows or rows[0].timestamp_ms is None:
        return 0.0
    return (rows[-1].timestamp_ms - rows[0].timestamp_ms) / 1000.0


@dataclass(frozen=True)
class _Blocks:
    """Every row's blocks laid end to end: `ids`, the `row` each belongs to, its `tokens`
    (the last block of a row its real length), and each row's first position `starts`."""

    ids: np.ndarray
    row: np.ndarray
    tokens: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[TraceRow], block_tokens: int) -> _Blocks:
        lengths = np.fromiter((len(r.hash_ids) for r in rows), dtype=np.int64, count=len(rows))
        total = int(lengths.sum())
        ids = np.fromiter((i for r in rows for i in r.hash_ids), dtype=np.int64, count=total)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(rows) else lengths
        row = np.repeat(np.arange(len(rows)), lengths)
        tokens = np.full(total, block_tokens, dtype=np.int64)
        ends = (starts + lengths - 1)[lengths > 0]
        inputs = np.fromiter((r.input_length for r in rows), dtype=np.int64, count=len(rows))
        tokens[ends] = (inputs - (lengths - 1) * block_tokens)[lengths > 0]
        return cls(ids, row, tokens, starts, lengths)

    def infinite_hits(self) -> np.ndarray:
        """Vectorised: a block was seen before when its id first occurs in an earlier row;
        it counts while no unseen block precedes it in its row."""
        if self.ids.size == 0:
            return np.zeros(self.lengths.size, dtype=np.int64)
        _, first, inverse = np.unique(self.ids, return_index=True, return_inverse=True)
        seen = first[inverse] < self.starts[self.row]
        unseen_so_far = np.concatenate(([0], np.cumsum(~seen)))
        before_row = unseen_so_far[self.starts]
        counted = unseen_so_far[1:] == before_row[self.row]
        return self._per_row(counted)

    def lru_hits(self, capacity: int) -> np.ndarray:
        """Sequential (an LRU's state depends on every earlier request)."""
        if capacity <= 0:
            raise ValueError("cache_blocks must be > 0")
        cache: OrderedDict[int, None] = OrderedDict()
        counted = np.zeros(self.ids.size, dtype=bool)
        ids = self.ids.tolist()
        for start, length in zip(self.starts.tolist(), self.lengths.tolist(), strict=True):
            request = ids[start : start + length]
            for offset, block in enumerate(request):
                if block not in cache:
                    break
                counted[start + offset] = True
            for block in request:
                cache[block] = None
                cache.move_to_end(block)
            while len(cache) > capacity:
                cache.popitem(last=False)
        return self._per_row(counted)

    def _per_row(self, counted: np.ndarray) -> np.ndarray:
        return np.bincount(
            self.row, weights=self.tokens * counted, minlength=self.lengths.size
        ).astype(np.int64)
