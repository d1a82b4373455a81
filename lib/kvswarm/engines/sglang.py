"""SGLang: a radix tree over token sequences shared by all requests."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvswarm.engines import probe
from kvswarm.engines.profile import CacheReset, EngineProfile, MetricNames
from kvswarm.engines.registry import register_engine
from kvswarm.urls import server_root

__all__ = ["SGLANG", "SglangProfile"]

# "The input (N tokens) is longer than the model's context length (M tokens)."
SGLANG_CONTEXT_ERROR = re.compile(r"context length|too long", re.IGNORECASE)


@dataclass(frozen=True)
class SglangProfile(EngineProfile):
    """SGLang's profile: `POST /flush_cache` drops the radix cache (refused while busy)."""

    def reset_prefix_cache(self, base_url: str, timeout_s: float = 10.0) -> CacheReset:
        reply = probe.post(server_root(base_url) + "/flush_cache", timeout_s)
        if reply.ok:
            return CacheReset("reset", f"POST {reply.url}")
        if reply.status in (404, 405):
            return CacheReset("not_supported", reply.describe())
        return CacheReset("failed", reply.describe())


SGLANG = register_engine(
    SglangProfile(
        name="sglang",
        tokenize=None,
        min_tokens=True,
        metrics_prefix="sglang:",
        metrics=MetricNames(
            # SGLang's prompt counter includes the cached tokens.
            prompt_tokens="sglang:prompt_tokens_total",
            cached_tokens="sglang:cached_tokens_total",
            generation_tokens="sglang:generation_tokens_total",
            ttft_seconds="sglang:time_to_first_token_seconds",
            queue_seconds="sglang:queue_time_seconds",
            kv_cache_usage="sglang:token_usage",
            requests_running="sglang:num_running_reqs",
            requests_waiting="sglang:num_queue_reqs",
        ),
        context_error=SGLANG_CONTEXT_ERROR,
        cache_semantics="a radix tree over token sequences shared by all requests; a hit is "
        "the longest cached prefix, token-exact",
    )
)
