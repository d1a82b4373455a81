"""Telling which engine serves a URL: its /metrics names, then /v1/models, then /props."""

from __future__ import annotations

from kvswarm.engines import probe
from kvswarm.engines.llamacpp import LLAMA_CPP
from kvswarm.engines.sglang import SGLANG
from kvswarm.engines.sim import SIM
from kvswarm.engines.vllm import VLLM
from kvswarm.metrics_sources.scrape import scrape
from kvswarm.metrics_sources.snapshot import Snapshot
from kvswarm.urls import api_url, metrics_url, server_root

__all__ = ["detect_engine", "engine_from_metrics"]

# The simulator first: it also carries vLLM's names.
_BY_METRICS = (SIM, VLLM, LLAMA_CPP, SGLANG)
_BY_OWNER = {"vllm": VLLM.name, "sglang": SGLANG.name, "kvswarm-sim": SIM.name}


def engine_from_metrics(snapshot: Snapshot) -> str | None:
    """The engine whose metric-name prefix appears in `snapshot`; None if none does."""
    names = " ".join(snapshot.samples)
    for profile in _BY_METRICS:
        if profile.metrics_prefix in names:
            return profile.name
    return None


def detect_engine(
    base_url: str, timeout_s: float = 5.0, api_key: str | None = None
) -> tuple[str, Snapshot]:
    """Which engine serves `base_url`: "vllm", "sim", "llama.cpp", "sglang" or "openai".

    Returns the engine name and the /metrics snapshot taken on the way (callers reuse it
    as the start-of-window snapshot; it carries `error` when /metrics did not answer).
    `api_key` goes with the `/v1/models` request only (the target's API), never to
    /metrics.
    """
    snapshot = scrape(metrics_url(base_url), timeout_s)
    from_metrics = engine_from_metrics(snapshot) if snapshot.ok else None
    if from_metrics:
        return from_metrics, snapshot
    models = probe.get(api_url(base_url, "models"), timeout_s, api_key).json()
    data = models.get("data", []) if isinstance(models, dict) else []
    for model in data if isinstance(data, list) else []:
        owner = model.get("owned_by") if isinstance(model, dict) else None
        if owner in _BY_OWNER:
            return _BY_OWNER[owner], snapshot
    props = probe.get(server_root(base_url) + "/props", timeout_s).json()
    if isinstance(props, dict) and ("default_generation_settings" in props or "n_ctx" in props):
        return LLAMA_CPP.name, snapshot
    return "openai", snapshot
