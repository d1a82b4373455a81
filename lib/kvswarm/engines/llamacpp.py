"""llama.cpp's llama-server: a KV cache per slot, and per-request `timings` in responses.

Its `llamacpp:prompt_tokens_total` counts only the prompt tokens it computed (the sum of
`timings.prompt_n`), not the cached ones (`timings.cache_n`, counted by
`llamacpp:prompt_tokens_cached_total`), so its cached share is cached / (prompt + cached).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvswarm.engines import probe
from kvswarm.engines.profile import (
    CachedShare,
    CacheReset,
    EngineProfile,
    MetricNames,
    RequestTimings,
    metric_total,
)
from kvswarm.engines.registry import register_engine
from kvswarm.tokens import TokenizeShape
from kvswarm.urls import server_root

if TYPE_CHECKING:
    from kvswarm.client import StreamResult

__all__ = ["LLAMA_CPP", "LLAMACPP_TOKENIZE", "LlamaCppProfile"]

LLAMACPP_TOKENIZE = TokenizeShape(
    name="llama.cpp",
    path="/tokenize",
    text_key="content",
    model_key=None,
    extra=(("add_special", False),),
)

# "the request exceeds the available context size, try increasing it"
LLAMACPP_CONTEXT_ERROR = re.compile(
    r"exceeds? the available context|context size|context length", re.IGNORECASE
)

_SLOT_HINT = "llama-server allows slot actions only when started with --slot-save-path DIR"


@dataclass(frozen=True)
class LlamaCppProfile(EngineProfile):
    """llama.cpp's profile: timings from the response, its own share formula, slot erase."""

    def request_timings(self, result: StreamResult) -> RequestTimings:
        timings = result.server_timings
        if not timings:
            return RequestTimings()
        prompt_ms = timings.get("prompt_ms")
        predicted_ms = timings.get("predicted_ms")
        computed = timings.get("prompt_n")
        cached = timings.get("cache_n")
        both = computed is not None and cached is not None
        return RequestTimings(
            prefill_s=prompt_ms / 1000.0 if prompt_ms is not None else None,
            decode_s=predicted_ms / 1000.0 if predicted_ms is not None else None,
            prompt_tokens=computed + cached if both else None,
            cached_tokens=cached,
        )

    def cached_share(self, deltas: Mapping[str, float]) -> CachedShare | None:
        """cached / (prompt + cached): llama.cpp's prompt counter excludes cached tokens."""
        names = self.metrics
        assert names.cached_tokens and names.prompt_tokens
        cached = metric_total(deltas, names.cached_tokens)
        computed = metric_total(deltas, names.prompt_tokens)
        total = (cached or 0.0) + (computed or 0.0)
        if not total:
            return None
        return CachedShare(
            (cached or 0.0) / total,
            "prompt_tokens_cached / (prompt_tokens + prompt_tokens_cached)",
        )

    def reset_prefix_cache(self, base_url: str, timeout_s: float = 10.0) -> CacheReset:
        """Erase every slot: `GET /slots`, then `POST /slots/<id>?action=erase` for each.

        The host-RAM prompt cache (`--cache-ram`) is not cleared by erasing slots.
        """
        root = server_root(base_url)
        listing = probe.get(root + "/slots", timeout_s)
        if listing.status in (404, 501):
            return CacheReset("not_supported", f"{listing.describe()}; GET /slots is disabled")
        slots = listing.json() if listing.ok else None
        if not isinstance(slots, list):
            return CacheReset("failed", f"GET /slots: {listing.describe()}")
        erased = []
        for slot in slots:
            slot_id = slot.get("id") if isinstance(slot, dict) else None
            reply = probe.post(f"{root}/slots/{slot_id}?action=erase", timeout_s, {})
            if reply.status == 501:
                return CacheReset("not_supported", f"{reply.describe()}; {_SLOT_HINT}")
            if not reply.ok:
                return CacheReset("failed", reply.describe())
            erased.append(str(slot_id))
        return CacheReset("reset", f"erased slots {', '.join(erased) or '(none)'}")


LLAMA_CPP = register_engine(
    LlamaCppProfile(
        name="llama.cpp",
        tokenize=LLAMACPP_TOKENIZE,
        metrics_prefix="llamacpp:",
        metrics=MetricNames(
            prompt_tokens="llamacpp:prompt_tokens_total",
            cached_tokens="llamacpp:prompt_tokens_cached_total",
            generation_tokens="llamacpp:tokens_predicted_total",
            requests_running="llamacpp:requests_processing",
            requests_waiting="llamacpp:requests_deferred",
        ),
        context_error=LLAMACPP_CONTEXT_ERROR,
        cache_semantics="per slot: a request reuses the KV of the prompt its slot processed "
        "last (plus an optional host-RAM prompt cache); concurrent requests on a new prefix "
        "hit only once each slot has seen it",
    )
)
