"""The PD-disaggregated path: the proxy's prefill-then-decode, with KV through a store.

As vLLM's disaggregated-serving proxy does, each request is first sent to the prefiller
as a one-token request, then to the decoder, which streams the answer:

1. prefiller: queue, prefill the tokens missing from the prefiller's prefix cache, then
   store the prompt's KV chunks (`chunk_tokens` tokens each, as LMCache's `chunk_size`;
   chunks already in the store are skipped), release the slot.
2. decoder: queue, load the KV of the prompt tokens missing from the decoder's own prefix
   cache (the modelled transfer time, while the real chunks are fetched from the store),
   one decode step for the first token, then decode as usual.

TTFT is therefore prefill + transfer + one decode step. The proxy calls both engines in
process; each engine also serves its own port (its /metrics, and direct requests).
Real Mooncake values are `min(tokens * kv_bytes_per_token, value_bytes)` bytes per chunk:
the store sees every key and operation a real deployment would, at a fraction of the
bytes. `cached_tokens` reported to the client is the prefiller's prefix-cache hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import monotonic
from typing import Any, TypeVar

import gevent

from kvswarm.sim.cache import block_hashes
from kvswarm.sim.engine import Engine, Generation
from kvswarm.sim.metrics import SimMetrics
from kvswarm.sim.protocol import CompletionRequest
from kvswarm.sim.store import KVStore

T = TypeVar("T")


def chunk_keys(prompt: Sequence[str], chunk_tokens: int, namespace: str) -> list[tuple[str, int]]:
    """(store key, token count) of each KV chunk of a prompt; the last may be partial.

    A chunk's key stands for the whole prefix up to its end, as block hashes do.
    """
    keys = []
    full = block_hashes(prompt, chunk_tokens)
    for chunk_hash in full:
        keys.append((f"{namespace}/{chunk_hash & 0xFFFFFFFFFFFFFFFF:016x}", chunk_tokens))
    tail = prompt[len(full) * chunk_tokens :]
    if tail:
        tail_hash = hash((full[-1] if full else 0, *tail, "tail"))
        keys.append((f"{namespace}/{tail_hash & 0xFFFFFFFFFFFFFFFF:016x}", len(tail)))
    return keys


class PdBackend:
    """Runs a request through the prefiller, the KV store and the decoder."""

    def __init__(
        self,
        prefiller: Engine,
        decoder: Engine,
        store: KVStore,
        metrics: SimMetrics,
        *,
        namespace: str,
        chunk_tokens: int,
        value_bytes: int,
    ) -> None:
        self.prefiller = prefiller
        self.decoder = decoder
        self.store = store
        self.metrics = metrics
        self._namespace = namespace
        self._chunk_tokens = chunk_tokens
        self._value_bytes = value_bytes
        self._kv_bytes_per_token = decoder.cost.kv_bytes_per_token
        self._payloads: dict[int, bytes] = {}

    def begin(self, request: CompletionRequest, slowdown: float, arrived_s: float) -> Generation:
        chunks = chunk_keys(request.prompt, self._chunk_tokens, self._namespace)
        prefill = self.prefiller.new_sequence(request.prompt, slowdown, arrived_s)
        self.prefiller.admit(prefill)
        try:
            self.prefiller.prefill(prefill)
            self._count("put", self._call(self._put_chunks, chunks))
        except BaseException:
            self.prefiller.finish(prefill, 0, "abort")
            raise
        self.prefiller.finish(prefill, 1, "length")

        decoder = self.decoder
        decode = decoder.new_sequence(request.prompt, slowdown, monotonic())
        decoder.admit(decode)

        def fetch(first_token: int) -> None:
            wanted = chunks[first_token // self._chunk_tokens :]
            self._count("get", self._call(self._get_chunks, wanted))

        try:
            decoder.load_remote(decode, fetch)
        except BaseException:
            decoder.finish(decode, 0, "abort")
            raise
        loaded_tokens = decode.prompt_tokens - decode.cached_tokens
        self.metrics.kv_transfer_seconds.observe(decode.transfer_s)
        self.metrics.kv_transfer_bytes.inc(loaded_tokens * self._kv_bytes_per_token)
        return Generation(
            decoder,
            decode,
            cached_tokens=prefill.cached_tokens,
            queue_s=prefill.queue_s + decode.queue_s,
            prefill_s=prefill.prefill_s,
            transfer_s=decode.transfer_s,
        )

    def reset_prefix_cache(self) -> None:
        """Drop both engines' prefix caches; the KV store keeps its chunks (as LMCache's
        store outlives a vLLM prefix-cache reset)."""
        self.prefiller.reset_prefix_cache()
        self.decoder.reset_prefix_cache()

    def _call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a store operation; blocking stores run in the hub's thread pool."""
        if self.store.blocking:
            return gevent.get_hub().threadpool.apply(function, args)
        return function(*args)

    def _put_chunks(self, chunks: list[tuple[str, int]]) -> dict[str, int]:
        counts = {"ok": 0, "skipped": 0, "error": 0}
        try:
            present = self.store.exists([key for key, _ in chunks])
        except Exception:
            present = [False] * len(chunks)
        for (key, tokens), exists in zip(chunks, present, strict=True):
            if exists:
                counts["skipped"] += 1
                continue
            try:
                stored = self.store.put(key, self._payload(tokens))
            except Exception:
                stored = False
            counts["ok" if stored else "error"] += 1
        return counts

    def _get_chunks(self, chunks: list[tuple[str, int]]) -> dict[str, int]:
        counts = {"ok": 0, "miss": 0, "error": 0}
        for key, _ in chunks:
            try:
                value = self.store.get(key)
            except Exception:
                counts["error"] += 1
                continue
            counts["ok" if value else "miss"] += 1
        return counts

    def _payload(self, tokens: int) -> bytes:
        size = max(1, min(tokens * self._kv_bytes_per_token, self._value_bytes))
        payload = self._payloads.get(size)
        if payload is None:
            payload = self._payloads[size] = bytes(size)
        return payload

    def _count(self, op: str, counts: dict[str, int]) -> None:
        for result, count in counts.items():
            if count:
                self.metrics.kv_store_ops[(op, result)].inc(count)
