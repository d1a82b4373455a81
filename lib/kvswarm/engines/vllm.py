"""vLLM: one prefix cache shared by all requests, counted in tokens of whole blocks.

Besides the profile's data, what kvswarm learns from a running vLLM:

    from kvswarm.engines import VLLM

    VLLM.served_models(base_url)        # (ServedModel(id, max_model_len, root), ...) | None
    VLLM.check_model(base_url, model)   # None, or a one-line error: the model is not served
    VLLM.require_model(base_url, model) # the ServedModel, or KvswarmError with that line
    VLLM.block_size(snapshot)           # tokens per KV block from vllm:cache_config_info
    cacheable_tokens(prefix, prompt, block)  # what a designed hit can find cached at most

vLLM itself reports no per-request phases; kvswarm's PD proxy in front of a real vLLM
prefiller and decoder (`kvswarm.vllm.proxy`) does, in `X-Kvswarm-Prefill-Ms`,
`X-Kvswarm-Transfer-Ms` and `X-Kvswarm-Decode-Ms` (a trailer of streamed responses),
which `request_timings` reads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvswarm.engines import probe
from kvswarm.engines.profile import (
    CacheReset,
    EngineProfile,
    MetricNames,
    RequestTimings,
    header_count,
    header_seconds,
)
from kvswarm.engines.registry import register_engine
from kvswarm.errors import KvswarmError
from kvswarm.metrics_sources.snapshot import Snapshot, split_key
from kvswarm.tokens import TokenizeShape
from kvswarm.urls import api_url, server_root

if TYPE_CHECKING:
    from kvswarm.client import StreamResult

__all__ = [
    "VLLM",
    "VLLM_METRICS",
    "VLLM_TOKENIZE",
    "ServedModel",
    "VllmProfile",
    "cacheable_tokens",
    "model_mismatch",
]

VLLM_TOKENIZE = TokenizeShape(
    name="vllm",
    path="/tokenize",
    text_key="prompt",
    model_key="model",
    extra=(("add_special_tokens", False),),
    count_key="count",
)

VLLM_METRICS = MetricNames(
    prefix_cache_queries="vllm:prefix_cache_queries_total",
    prefix_cache_hits="vllm:prefix_cache_hits_total",
    external_prefix_cache_queries="vllm:external_prefix_cache_queries_total",
    external_prefix_cache_hits="vllm:external_prefix_cache_hits_total",
    # Tokens of prompts served from the prefix cache (local and external), per finished
    # request: the sum of usage.prompt_tokens_details.cached_tokens.
    cached_tokens="vllm:prompt_tokens_cached_total",
    prompt_tokens="vllm:prompt_tokens_total",
    prompt_tokens_by_source="vllm:prompt_tokens_by_source_total",
    generation_tokens="vllm:generation_tokens_total",
    ttft_seconds="vllm:time_to_first_token_seconds",
    prefill_seconds="vllm:request_prefill_time_seconds",
    decode_seconds="vllm:request_decode_time_seconds",
    queue_seconds="vllm:request_queue_time_seconds",
    kv_cache_usage="vllm:kv_cache_usage_perc",
    requests_running="vllm:num_requests_running",
    requests_waiting="vllm:num_requests_waiting",
)

# "This model's maximum context length is 4096 tokens..." and "The decoder prompt (length
# N) is longer than the maximum model length of M. Make sure that `max_model_len` ...".
VLLM_CONTEXT_ERROR = re.compile(
    r"maximum context length|maximum model length|max_model_len", re.IGNORECASE
)


# Seconds between tries of a prefix-cache reset that vLLM refused (blocks still held).
RESET_RETRY_S = 0.2

# The info gauge whose labels describe the KV cache (block_size, num_gpu_blocks, ...).
CACHE_CONFIG_INFO = "vllm:cache_config_info"


@dataclass(frozen=True)
class ServedModel:
    """One entry of vLLM's `GET /v1/models`."""

    id: str  # the name requests must send (`--served-model-name`)
    max_model_len: int | None  # prompt + output tokens per request; None if not reported
    root: str | None = None  # the path or Hub name the weights came from


def model_mismatch(served: tuple[ServedModel, ...], model: str, base_url: str) -> str | None:
    """None when `model` is among `served`, else the one-line error naming both and the fix."""
    names = [entry.id for entry in served]
    if model in names:
        return None
    listed = ", ".join(repr(name) for name in names) or "no model"
    suggestion = f"set target.model: {names[0]}" if len(names) == 1 else "set target.model"
    return (
        f"target.model is {model!r} but {api_url(base_url, 'models')} serves {listed}; "
        f"{suggestion} (or point target.base_url at a server of {model!r})"
    )


def cacheable_tokens(prefix_tokens: int, prompt_tokens: int, block_size: int) -> int:
    """The most cached tokens a request can report when its first `prefix_tokens` are
    already cached: whole blocks only, and never the prompt's last token (vLLM always
    computes it), so a prefix shorter than one block cannot hit at all."""
    usable = min(prefix_tokens, max(0, prompt_tokens - 1))
    return usable // block_size * block_size


@dataclass(frozen=True)
class VllmProfile(EngineProfile):
    """vLLM's profile: per-request phases only behind kvswarm's PD proxy; resets through
    its dev-mode route; names the served models and their context length; reads its KV
    block size."""

    reset_hint: str = (
        "vLLM serves POST /reset_prefix_cache only when started with VLLM_SERVER_DEV_MODE=1"
    )

    def request_timings(self, result: StreamResult) -> RequestTimings:
        """The PD split kvswarm's proxy measured (`X-Kvswarm-*-Ms`): prefill is the
        prefiller's round trip, transfer the decoder's time to its first chunk (KV load
        and all), decode the rest of the stream. Empty without the proxy.

        Behind the proxy the request's cached tokens are the prefiller's prefix-cache hit
        (`X-Kvswarm-Prefill-Cached-Tokens`): the decoder's usage counts the KV it loaded
        from the store as cached too, so every PD request would look like a hit. Created
        cache tokens likewise are the prefiller's, the side that computes the prompt."""
        headers = result.headers
        prefill = headers.get("x-kvswarm-prefill-ms")
        if prefill is None:
            return RequestTimings()
        return RequestTimings(
            prefill_s=header_seconds(prefill),
            transfer_s=header_seconds(headers.get("x-kvswarm-transfer-ms")),
            decode_s=header_seconds(headers.get("x-kvswarm-decode-ms")),
            cached_tokens=header_count(headers.get("x-kvswarm-prefill-cached-tokens")),
            created_cache_tokens=header_count(
                headers.get("x-kvswarm-prefill-created-cache-tokens")
            ),
        )

    def kv_store(self, end: Mapping[str, Snapshot]) -> str | None:
        """`mooncake` when the run's metrics show a Mooncake store (the connector's
        `vllm:mooncake_store_*` counters, or a Mooncake master's `master_key_count`);
        None: vLLM's own cache only, or nothing says."""
        for snapshot in end.values():
            for key in snapshot.samples:
                if key.startswith(("vllm:mooncake_store", "master_key_count")):
                    return "mooncake"
        return None

    def served_models(
        self, base_url: str, timeout_s: float = 10.0, api_key: str | None = None
    ) -> tuple[ServedModel, ...] | None:
        """The models `GET /v1/models` lists; None when it does not answer with a list.
        `api_key`: the target's, for a server started with `--api-key`."""
        reply = probe.get(api_url(base_url, "models"), timeout_s, api_key)
        data = reply.json() if reply.ok else None
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            return None
        return tuple(_served_model(entry) for entry in entries if isinstance(entry, dict))

    def check_model(
        self, base_url: str, model: str, timeout_s: float = 10.0, api_key: str | None = None
    ) -> str | None:
        """None when the server serves `model` (or cannot say), else a one-line error.

        A server that does not answer `/v1/models` is no verdict here: the run's other
        checks report an unreachable target.
        """
        served = self.served_models(base_url, timeout_s, api_key)
        if served is None:
            return None
        return model_mismatch(served, model, base_url)

    def require_model(
        self, base_url: str, model: str, timeout_s: float = 10.0, api_key: str | None = None
    ) -> ServedModel | None:
        """The served entry for `model` (None if the server cannot say); `KvswarmError`
        with `check_model`'s line when the server serves other models only."""
        served = self.served_models(base_url, timeout_s, api_key)
        if served is None:
            return None
        problem = model_mismatch(served, model, base_url)
        if problem:
            raise KvswarmError(problem)
        return next(entry for entry in served if entry.id == model)

    def cache_semantics_at(self, end: Mapping[str, Snapshot]) -> str:
        """`cache_semantics` plus the block size the server reports (the first source that
        has `vllm:cache_config_info`), e.g. "...; this server's blocks: 128 tokens"."""
        sizes = (self.block_size(snapshot) for snapshot in end.values())
        block = next((size for size in sizes if size), None)
        if block is None:
            return self.cache_semantics
        return f"{self.cache_semantics}; this server's blocks: {block} tokens"

    def block_size(self, snapshot: Snapshot | Mapping[str, float] | None) -> int | None:
        """Tokens per KV-cache block, from `vllm:cache_config_info{block_size=...}`.

        Takes a `Snapshot`, or samples by key (a snapshot's `samples`, a `SourceReport`'s
        `end`); None when the gauge is missing (not vLLM, or an old version).
        """
        samples = snapshot.samples if isinstance(snapshot, Snapshot) else snapshot or {}
        for key in samples:
            name, labels = split_key(key)
            if name == CACHE_CONFIG_INFO and labels.get("block_size", "").isdigit():
                return int(labels["block_size"])
        return None

    def reset_prefix_cache(self, base_url: str, timeout_s: float = 10.0) -> CacheReset:
        """`POST <root>/reset_prefix_cache`; a 404 means the dev-mode routes are off.

        vLLM answers 200 `{"success": false}` while blocks are still held (a request just
        finished or cancelled, whose blocks the engine has not freed yet): the reset is
        tried again every `RESET_RETRY_S` until `timeout_s`, and "failed" if it never took.
        """
        url = server_root(base_url) + "/reset_prefix_cache"
        deadline = time.monotonic() + timeout_s
        while True:
            reply = probe.post(url, timeout_s)
            if reply.status in (404, 405):
                return CacheReset("not_supported", f"{reply.describe()}; {self.reset_hint}")
            if not reply.ok:
                return CacheReset("failed", reply.describe())
            body = reply.json()
            if not isinstance(body, dict) or body.get("success") is not False:
                return CacheReset("reset", f"POST {reply.url}")
            if time.monotonic() + RESET_RETRY_S > deadline:
                return CacheReset(
                    "failed",
                    f"POST {reply.url}: success false for {timeout_s:g} s: the "
                    "server still held blocks of running requests",
                )
            time.sleep(RESET_RETRY_S)


VLLM = register_engine(
    VllmProfile(
        name="vllm",
        tokenize=VLLM_TOKENIZE,
        metrics_prefix="vllm:",
        metrics=VLLM_METRICS,
        context_error=VLLM_CONTEXT_ERROR,
        min_tokens=True,
        cache_semantics="one prefix cache shared by all requests, in whole KV blocks (the "
        "server's block_size in vllm:cache_config_info: 16 tokens by default on GPUs, 128 "
        "on the CPU backend); a hit is a block of the prompt whose KV is already cached, "
        "and the prompt's last token is always computed",
    )
)


def _served_model(entry: Mapping[str, object]) -> ServedModel:
    length = entry.get("max_model_len")
    root = entry.get("root")
    return ServedModel(
        id=str(entry.get("id", "")),
        max_model_len=length if isinstance(length, int) else None,
        root=root if isinstance(root, str) else None,
    )
