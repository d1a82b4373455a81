"""What differs between serving engines, and how kvswarm tells which one it is talking to.

Every engine speaks the OpenAI API, but each has its own tokenize endpoint, its own
Prometheus metric names, and its own idea of a cache hit (see README, "Real engines").
"""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from kvswarm.scrape import Snapshot, scrape
from kvswarm.tokens import LLAMACPP_TOKENIZE, VLLM_TOKENIZE, TokenizeShape


@dataclass(frozen=True)
class EngineProfile:
    """One engine's endpoints and metric names (counter sample names, `_total` included)."""

    name: str
    # The engine's tokenize endpoint; None when it has none.
    tokenize: TokenizeShape | None
    metrics_prefix: str
    prompt_tokens_counter: str | None
    cached_tokens_counter: str | None
    generation_tokens_counter: str | None
    cache_queries_counter: str | None = None
    cache_hits_counter: str | None = None
    # What a "cache hit" means on this engine, for reports and the README.
    cache_semantics: str = ""


VLLM = EngineProfile(
    name="vllm",
    tokenize=VLLM_TOKENIZE,
    metrics_prefix="vllm:",
    prompt_tokens_counter="vllm:prompt_tokens_total",
    cached_tokens_counter=None,
    generation_tokens_counter="vllm:generation_tokens_total",
    cache_queries_counter="vllm:prefix_cache_queries_total",
    cache_hits_counter="vllm:prefix_cache_hits_total",
    cache_semantics="one prefix cache shared by all requests, in blocks (16 tokens by "
    "default); a hit is a block of the prompt whose KV is already cached",
)
SIM = dataclasses.replace(
    VLLM,
    name="sim",
    cache_semantics="kvswarm's simulator: a vLLM-like shared block prefix cache (LRU)",
)
LLAMA_CPP = EngineProfile(
    name="llama.cpp",
    tokenize=LLAMACPP_TOKENIZE,
    metrics_prefix="llamacpp:",
    prompt_tokens_counter="llamacpp:prompt_tokens_total",
    cached_tokens_counter="llamacpp:prompt_tokens_cached_total",
    generation_tokens_counter="llamacpp:tokens_predicted_total",
    cache_semantics="per slot: a request reuses the KV of the prompt its slot processed "
    "last (plus an optional host-RAM prompt cache); concurrent requests on a new prefix "
    "hit only once each slot has seen it",
)
SGLANG = EngineProfile(
    name="sglang",
    tokenize=None,
    metrics_prefix="sglang:",
    prompt_tokens_counter="sglang:prompt_tokens_total",
    cached_tokens_counter="sglang:cached_tokens_total",
    generation_tokens_counter="sglang:generation_tokens_total",
    cache_semantics="a radix tree over token sequences shared by all requests; a hit is "
    "the longest cached prefix, token-exact",
)
OPENAI = EngineProfile(
    name="openai",
    tokenize=None,
    metrics_prefix="",
    prompt_tokens_counter=None,
    cached_tokens_counter=None,
    generation_tokens_counter=None,
    cache_semantics="unknown: only usage.prompt_tokens_details.cached_tokens, if reported",
)

ENGINES: dict[str, EngineProfile] = {
    profile.name: profile for profile in (VLLM, SIM, LLAMA_CPP, SGLANG, OPENAI)
}


def server_root(base_url: str) -> str:
    """The server's root URL: the base URL without its `/v1` (tokenize, metrics, props)."""
    parts = urlsplit(base_url.strip())
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def metrics_url(base_url: str) -> str:
    return server_root(base_url) + "/metrics"


def _get_json(url: str, timeout_s: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def engine_from_metrics(snapshot: Snapshot) -> str | None:
    names = " ".join(snapshot.samples)
    if "kvswarm_sim" in names:
        return "sim"
    for profile in (VLLM, LLAMA_CPP, SGLANG):
        if profile.metrics_prefix in names:
            return profile.name
    return None


def detect_engine(base_url: str, timeout_s: float = 5.0) -> tuple[str, Snapshot]:
    """Which engine serves `base_url`, from its /metrics names, /v1/models and /props.

    Returns the engine name and the /metrics snapshot taken on the way (reused as the
    start-of-window snapshot)."""
    snapshot = scrape(metrics_url(base_url), timeout_s)
    from_metrics = engine_from_metrics(snapshot) if snapshot.ok else None
    if from_metrics:
        return from_metrics, snapshot
    models = _get_json(server_root(base_url) + "/v1/models", timeout_s)
    owners = {m.get("owned_by") for m in (models or {}).get("data", []) if isinstance(m, dict)}
    if "vllm" in owners:
        return "vllm", snapshot
    if "sglang" in owners:
        return "sglang", snapshot
    props = _get_json(server_root(base_url) + "/props", timeout_s)
    if isinstance(props, dict) and ("default_generation_settings" in props or "n_ctx" in props):
        return "llama.cpp", snapshot
    return "openai", snapshot


def cached_share(profile: EngineProfile, window_deltas: dict[str, float]) -> float | None:
    """Server-reported share of prompt tokens served from cache over the window."""
    if profile.cache_queries_counter and profile.cache_hits_counter:
        queries = window_deltas.get(profile.cache_queries_counter)
        hits = window_deltas.get(profile.cache_hits_counter)
        if queries:
            return (hits or 0.0) / queries
    if profile.cached_tokens_counter and profile.prompt_tokens_counter:
        prompt = window_deltas.get(profile.prompt_tokens_counter)
        cached = window_deltas.get(profile.cached_tokens_counter)
        if prompt:
            return (cached or 0.0) / prompt
    return None
