"""One simulated vLLM engine: admission, prefix cache, prefill and decode timing, metrics.

An engine runs at most `max_num_seqs` requests; the rest wait in a FIFO queue
(`vllm:num_requests_waiting`). An admitted request prefills (at most
`prefill_concurrency` at a time, FIFO), which costs time only for its uncached tokens,
then decodes one token every `tpot_s()` seconds, a time that grows with the number of
running requests. All waiting is gevent sleeping, so hundreds of requests share one core.

`LocalBackend` serves a request on one engine (the non-disaggregated server, and direct
requests to a PD stack's prefiller or decoder); `kvswarm.sim.pd` composes two engines.
"""

from __future__ import annotations

from collections.abc import Sequence as SequenceOf
from time import monotonic
from typing import Protocol

import gevent
from gevent.lock import Semaphore

from kvswarm.sim.cache import PrefixCache, block_hashes, cacheable_blocks
from kvswarm.sim.metrics import EngineMetrics
from kvswarm.sim.model import CostModel
from kvswarm.sim.protocol import CompletionRequest


def sleep_until(deadline_s: float) -> None:
    """Sleep (cooperatively) until the monotonic clock reaches `deadline_s`."""
    delay = deadline_s - monotonic()
    if delay > 0:
        gevent.sleep(delay)


class Sequence:
    """One request's life on one engine; times are monotonic seconds."""

    __slots__ = (
        "prompt_tokens",
        "hashes",
        "slowdown",
        "arrived_s",
        "admitted_s",
        "first_token_s",
        "cached_tokens",
        "transfer_s",
        "kv_blocks",
        "done",
    )

    def __init__(
        self, prompt_tokens: int, hashes: list[int], slowdown: float, arrived_s: float
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.hashes = hashes
        self.slowdown = slowdown
        self.arrived_s = arrived_s
        self.admitted_s = arrived_s
        self.first_token_s = arrived_s
        self.cached_tokens = 0
        self.transfer_s = 0.0
        self.kv_blocks = 0
        self.done = False

    @property
    def queue_s(self) -> float:
        return self.admitted_s - self.arrived_s

    @property
    def prefill_s(self) -> float:
        """Admission to first token ready (for a PD decoder: the KV load and first step)."""
        return self.first_token_s - self.admitted_s


class Engine:
    """A simulated vLLM instance with its own prefix cache, queue and metrics."""

    def __init__(self, name: str, cost: CostModel, metrics: EngineMetrics) -> None:
        self.name = name
        self.cost = cost
        self.metrics = metrics
        self.cache = PrefixCache(cost.block_size, cost.cache_blocks)
        self.running = 0
        self.waiting = 0
        self.prefilling = 0
        self._slots = Semaphore(cost.max_num_seqs)
        self._prefill_lane = Semaphore(cost.prefill_concurrency)
        self._kv_blocks_in_use = 0
        # tpot_s() runs once per token: keep its inputs in plain attributes.
        self._decode_base_s = cost.decode_base_ms / 1000.0
        self._decode_per_seq_s = cost.decode_ms_per_seq / 1000.0
        self._interference_s = cost.prefill_interference_ms / 1000.0

    def new_sequence(self, prompt: SequenceOf[str], slowdown: float, arrived_s: float) -> Sequence:
        return Sequence(
            len(prompt), block_hashes(prompt, self.cost.block_size), slowdown, arrived_s
        )

    def tpot_s(self) -> float:
        """Seconds per output token now (before any slow-start factor)."""
        tpot = self._decode_base_s + self._decode_per_seq_s * (self.running - 1)
        if self.prefilling:
            tpot += self._interference_s
        return tpot

    def admit(self, seq: Sequence) -> None:
        """Wait for a free slot (FIFO), then count the request as running."""
        if self._slots.locked():
            self.waiting += 1
            self.metrics.num_requests_waiting.set(self.waiting)
            try:
                self._slots.acquire()
            finally:
                self.waiting -= 1
                self.metrics.num_requests_waiting.set(self.waiting)
        else:
            self._slots.acquire()
        seq.admitted_s = monotonic()
        self.running += 1
        seq.kv_blocks = self.cost.kv_blocks(seq.prompt_tokens)
        self._kv_blocks_in_use += seq.kv_blocks
        self._update_gauges()

    def prefill(self, seq: Sequence) -> None:
        """Compute the prompt's uncached tokens; returns when the first token is ready."""
        with self._prefill_lane:
            self.prefilling += 1
            try:
                start = monotonic()
                hit = self.cache.match(
                    seq.hashes, cacheable_blocks(seq.prompt_tokens, self.cost.block_size)
                )
                seq.cached_tokens = hit * self.cost.block_size
                uncached = seq.prompt_tokens - seq.cached_tokens
                sleep_until(start + self.cost.prefill_s(uncached) * seq.slowdown)
                self.cache.insert(seq.hashes)
            finally:
                self.prefilling -= 1
        seq.first_token_s = monotonic()
        self._count_prompt(seq)

    def load_remote(self, seq: Sequence, fetch: FetchKv) -> None:
        """PD decoder: load the KV of the tokens not in the local cache, then one step.

        The modelled transfer time covers the prompt tokens this engine does not hold;
        `fetch(first_token)` moves the real KV blocks meanwhile, and the engine waits for
        whichever takes longer. The first token comes one decode step after the load.
        """
        start = monotonic()
        hit = self.cache.match(
            seq.hashes, cacheable_blocks(seq.prompt_tokens, self.cost.block_size)
        )
        local_tokens = hit * self.cost.block_size
        seq.cached_tokens = local_tokens
        fetch(local_tokens)
        sleep_until(start + self.cost.transfer_s(seq.prompt_tokens - local_tokens) * seq.slowdown)
        seq.transfer_s = monotonic() - start
        self.cache.insert(seq.hashes)
        sleep_until(monotonic() + self.tpot_s() * seq.slowdown)
        seq.first_token_s = monotonic()
        self._count_prompt(seq)

    def reset_prefix_cache(self) -> None:
        """Drop the prefix cache; running requests keep their (unmodelled) KV."""
        self.cache.clear()

    def finish(self, seq: Sequence, output_tokens: int, reason: str) -> None:
        """Release the request's slot and record its metrics (reason: length or abort)."""
        if seq.done:
            return
        seq.done = True
        now = monotonic()
        self.running -= 1
        self._kv_blocks_in_use -= seq.kv_blocks
        self._slots.release()
        self._update_gauges()
        metrics = self.metrics
        metrics.generation_tokens.inc(output_tokens)
        metrics.request_success[reason].inc()
        metrics.e2e_request_latency.observe(now - seq.arrived_s)
        metrics.request_queue_time.observe(seq.queue_s)
        metrics.request_inference_time.observe(now - seq.admitted_s)
        metrics.request_decode_time.observe(now - seq.first_token_s)
        metrics.request_generation_tokens.observe(output_tokens)
        if output_tokens > 1:
            metrics.time_per_output_token.observe((now - seq.first_token_s) / (output_tokens - 1))

    def _count_prompt(self, seq: Sequence) -> None:
        metrics = self.metrics
        metrics.prefix_cache_queries.inc(seq.prompt_tokens)
        metrics.prefix_cache_hits.inc(seq.cached_tokens)
        metrics.prompt_tokens.inc(seq.prompt_tokens)
        metrics.request_prompt_tokens.observe(seq.prompt_tokens)
        metrics.request_prefill_time.observe(seq.prefill_s)
        metrics.time_to_first_token.observe(seq.first_token_s - seq.arrived_s)

    def _update_gauges(self) -> None:
        self.metrics.num_requests_running.set(self.running)
        capacity = self.cost.cache_blocks
        usage = min(1.0, self._kv_blocks_in_use / capacity) if capacity else 0.0
        self.metrics.kv_cache_usage_perc.set(usage)


class FetchKv(Protocol):
    def __call__(self, first_token: int) -> None: ...


class Generation:
    """A request whose first token is ready: where it decodes and what it took so far."""

    __slots__ = ("engine", "seq", "cached_tokens", "queue_s", "prefill_s", "transfer_s")

    def __init__(
        self,
        engine: Engine,
        seq: Sequence,
        cached_tokens: int,
        queue_s: float,
        prefill_s: float,
        transfer_s: float = 0.0,
    ) -> None:
        self.engine = engine
        self.seq = seq
        self.cached_tokens = cached_tokens
        self.queue_s = queue_s
        self.prefill_s = prefill_s
        self.transfer_s = transfer_s

    @property
    def ready_s(self) -> float:
        """When the first token was ready: its scheduled send time."""
        return self.seq.first_token_s

    def finish(self, output_tokens: int, reason: str) -> None:
        self.engine.finish(self.seq, output_tokens, reason)


class Backend(Protocol):
    """What serves a completion: one engine, or a prefiller and decoder (PD)."""

    def begin(self, request: CompletionRequest, slowdown: float, arrived_s: float) -> Generation:
        """Queue, prefill (and transfer); return when the first token is ready."""
        ...

    def reset_prefix_cache(self) -> None:
        """Drop the prefix cache of every engine behind this backend."""
        ...


class LocalBackend:
    """Serves each request on one engine: queue, prefill, decode."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def begin(self, request: CompletionRequest, slowdown: float, arrived_s: float) -> Generation:
        engine = self.engine
        seq = engine.new_sequence(request.prompt, slowdown, arrived_s)
        engine.admit(seq)
        try:
            engine.prefill(seq)
        except BaseException:
            engine.finish(seq, 0, "abort")
            raise
        return Generation(engine, seq, seq.cached_tokens, seq.queue_s, seq.prefill_s)

    def reset_prefix_cache(self) -> None:
        self.engine.reset_prefix_cache()
