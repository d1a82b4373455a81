"""vLLM: one prefix cache shared by all requests, counted in tokens of whole blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvswarm.engines import probe
from kvswarm.engines.profile import CacheReset, EngineProfile, MetricNames
from kvswarm.engines.registry import register_engine
from kvswarm.tokens import TokenizeShape
from kvswarm.urls import server_root

__all__ = ["VLLM", "VLLM_METRICS", "VLLM_TOKENIZE", "VllmProfile"]

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
    prompt_tokens="vllm:prompt_tokens_total",
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


@dataclass(frozen=True)
class VllmProfile(EngineProfile):
    """vLLM's profile: reports no per-request timings; resets through its dev-mode route."""

    reset_hint: str = (
        "vLLM serves POST /reset_prefix_cache only when started with VLLM_SERVER_DEV_MODE=1"
    )

    def reset_prefix_cache(self, base_url: str, timeout_s: float = 10.0) -> CacheReset:
        """`POST <root>/reset_prefix_cache`; a 404 means the dev-mode routes are off."""
        reply = probe.post(server_root(base_url) + "/reset_prefix_cache", timeout_s)
        if reply.ok:
            return CacheReset("reset", f"POST {reply.url}")
        if reply.status in (404, 405):
            return CacheReset("not_supported", f"{reply.describe()}; {self.reset_hint}")
        return CacheReset("failed", reply.describe())


VLLM = register_engine(
    VllmProfile(
        name="vllm",
        tokenize=VLLM_TOKENIZE,
        metrics_prefix="vllm:",
        metrics=VLLM_METRICS,
        context_error=VLLM_CONTEXT_ERROR,
        cache_semantics="one prefix cache shared by all requests, in blocks (16 tokens by "
        "default); a hit is a block of the prompt whose KV is already cached",
    )
)
