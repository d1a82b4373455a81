"""What differs between serving engines, in one place: one profile per engine.

Every engine speaks the OpenAI API, but each has its own tokenize endpoint, Prometheus
metric names, idea of a cache hit, per-request timings, context-length error wording and
way of resetting its prefix cache. Each engine's module holds one `EngineProfile`,
registered by name with `register_engine` (a `kvswarm.registry.Registry`, as for every
pluggable kind), so adding an engine is one module here, imported below:

    from kvswarm.engines import engine_profile, detect_engine

    name, _ = detect_engine("http://localhost:8000/v1")
    profile = engine_profile(name)
    profile.request_timings(result)        # RequestTimings from a StreamResult
    profile.is_context_error(400, text)    # prompt too long for the model's context?
    profile.cached_share(deltas)           # CachedShare | None from counter deltas
    profile.reset_prefix_cache(base_url)   # CacheReset: reset / not_supported / failed
"""

from __future__ import annotations

from kvswarm.engines.profile import (
    CachedShare,
    CacheReset,
    EngineProfile,
    MetricNames,
    RequestTimings,
    metric_total,
)
from kvswarm.engines.registry import ENGINES, engine_profile, register_engine

# Each import registers its engine's profile.
from kvswarm.engines.vllm import VLLM, VLLM_TOKENIZE  # isort: skip
from kvswarm.engines.sim import SIM  # isort: skip
from kvswarm.engines.llamacpp import LLAMA_CPP, LLAMACPP_TOKENIZE  # isort: skip
from kvswarm.engines.sglang import SGLANG  # isort: skip
from kvswarm.engines.openai import OPENAI  # isort: skip
from kvswarm.engines.detect import detect_engine, engine_from_metrics  # isort: skip

__all__ = [
    "ENGINES",
    "LLAMACPP_TOKENIZE",
    "LLAMA_CPP",
    "OPENAI",
    "SGLANG",
    "SIM",
    "VLLM",
    "VLLM_TOKENIZE",
    "CacheReset",
    "CachedShare",
    "EngineProfile",
    "MetricNames",
    "RequestTimings",
    "detect_engine",
    "engine_from_metrics",
    "engine_profile",
    "metric_total",
    "register_engine",
]
