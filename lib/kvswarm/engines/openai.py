"""Any other OpenAI-compatible server: no known metrics, tokenize endpoint or cache reset."""

from __future__ import annotations

from kvswarm.engines.profile import ANY_CONTEXT_ERROR, EngineProfile
from kvswarm.engines.registry import register_engine

__all__ = ["OPENAI"]

OPENAI = register_engine(
    EngineProfile(
        name="openai",
        tokenize=None,
        context_error=ANY_CONTEXT_ERROR,
        cache_semantics="unknown: only usage.prompt_tokens_details.cached_tokens, if reported",
    )
)
