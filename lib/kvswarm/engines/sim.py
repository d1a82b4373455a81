"""kvswarm's simulated stack: vLLM's names and routes, plus its phases in response headers.

Every response carries `X-Sim-Queue-Ms`, `X-Sim-Prefill-Ms`, `X-Sim-Transfer-Ms`,
`X-Sim-Prompt-Tokens`, `X-Sim-Cached-Tokens` and `X-Sim-Decode-Ms` (a trailer of streamed
responses); its /metrics has `kvswarm_sim_info{kv_store=...}` saying which KV store the
PD path used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from kvswarm.engines.profile import RequestTimings, header_count, header_seconds
from kvswarm.engines.registry import register_engine
from kvswarm.engines.vllm import VLLM, VllmProfile

if TYPE_CHECKING:
    from kvswarm.client import StreamResult
    from kvswarm.metrics_sources.snapshot import Snapshot

__all__ = ["SIM", "SimProfile"]


@dataclass(frozen=True)
class SimProfile(VllmProfile):
    """The simulator's profile: vLLM's, with timings from headers and the KV store named."""

    def request_timings(self, result: StreamResult) -> RequestTimings:
        headers = result.headers
        return RequestTimings(
            prefill_s=header_seconds(headers.get("x-sim-prefill-ms")),
            transfer_s=header_seconds(headers.get("x-sim-transfer-ms")),
            decode_s=header_seconds(headers.get("x-sim-decode-ms")),
            queue_s=header_seconds(headers.get("x-sim-queue-ms")),
            prompt_tokens=header_count(headers.get("x-sim-prompt-tokens")),
            cached_tokens=header_count(headers.get("x-sim-cached-tokens")),
        )

    def kv_store(self, end: Mapping[str, Snapshot]) -> str | None:
        """The KV store of `kvswarm_sim_info`: "mooncake" (the real store), else "in-process"."""
        for snapshot in end.values():
            for labels, _ in snapshot.series("kvswarm_sim_info"):
                store = labels.get("kv_store")
                if store is not None:
                    return "mooncake" if store == "mooncake" else "in-process"
        return None


SIM = register_engine(
    SimProfile(
        **(
            {f.name: getattr(VLLM, f.name) for f in fields(VLLM)}
            | {
                "name": "sim",
                "metrics_prefix": "kvswarm_sim",
                "reset_hint": "this simulated server has no /reset_prefix_cache (older kvswarm)",
                "cache_semantics": "kvswarm's simulator: a vLLM-like shared block prefix cache "
                "(LRU); in PD mode, the prefiller's",
            }
        )
    )
)
