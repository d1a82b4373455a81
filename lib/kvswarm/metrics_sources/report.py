"""`ServerReport`: what a run keeps of the server side (run.json's `server` section)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServerReport", "SourceReport"]


@dataclass(frozen=True)
class SourceReport:
    """One metrics source over the measurement window.

    `deltas`: end - start of every accumulating sample (counters, histogram sums, counts
    and buckets), by sample key; `end`: every other sample (gauges, info) at the end. Both
    are None when a snapshot failed, and `warning` says why.
    """

    url: str
    warning: str | None = None
    deltas: dict[str, float] | None = None
    end: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "warning": self.warning, "deltas": self.deltas, "end": self.end}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SourceReport:
        return cls(
            url=data["url"],
            warning=data.get("warning"),
            deltas=_floats(data.get("deltas")),
            end=_floats(data.get("end")),
        )


@dataclass(frozen=True)
class ServerReport:
    """The engine, its server-reported cache numbers, and every source's window.

    `cached_share` is the share of prompt tokens served from the prefix cache, by the
    engine's own formula (`cached_share_formula`), summed over `cached_share_sources` (the
    sources holding the prefix cache: the prefiller(s) in PD mode, else every source, each
    URL once). `external_cached_share`: tokens loaded through a KV connector (vLLM +
    LMCache) over those queried, summed over every source. `kv_store`: which KV store
    served the run, when the engine says ("mooncake" or "in-process" for the simulator).
    `prompt_tokens_by_source`: per metrics source that reports it, the window's prompt
    tokens by where their KV came from (vLLM: `local_compute`, `local_cache_hit`,
    `external_kv_transfer`); a PD prefiller's and decoder's are kept apart, since they
    count the same prompts twice.
    """

    engine: str
    cache_semantics: str = ""
    cached_share: float | None = None
    cached_share_formula: str | None = None
    cached_share_sources: tuple[str, ...] = ()
    external_cached_share: float | None = None
    kv_store: str | None = None
    prompt_tokens_by_source: dict[str, dict[str, float]] = field(default_factory=dict)
    sources: dict[str, SourceReport] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "cache_semantics": self.cache_semantics,
            "cached_share": self.cached_share,
            "cached_share_formula": self.cached_share_formula,
            "cached_share_sources": list(self.cached_share_sources),
            "external_cached_share": self.external_cached_share,
            "kv_store": self.kv_store,
            "prompt_tokens_by_source": self.prompt_tokens_by_source,
            "sources": {name: source.to_dict() for name, source in self.sources.items()},
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerReport:
        return cls(
            engine=data["engine"],
            cache_semantics=data.get("cache_semantics", ""),
            cached_share=data.get("cached_share"),
            cached_share_formula=data.get("cached_share_formula"),
            cached_share_sources=tuple(data.get("cached_share_sources", ())),
            external_cached_share=data.get("external_cached_share"),
            kv_store=data.get("kv_store"),
            prompt_tokens_by_source={
                name: _floats(by_source) or {}
                for name, by_source in (data.get("prompt_tokens_by_source") or {}).items()
            },
            sources={
                name: SourceReport.from_dict(source)
                for name, source in data.get("sources", {}).items()
            },
            warnings=tuple(data.get("warnings", ())),
        )


def _floats(values: Mapping[str, Any] | None) -> dict[str, float] | None:
    return None if values is None else {key: float(value) for key, value in values.items()}
