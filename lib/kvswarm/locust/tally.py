"""Running per-scenario counts of a test, for the web UI's kvswarm tab.

`LiveLatency` (kvswarm.live) keeps the latency percentiles; `LiveTally` keeps what the tab
shows beside them, per scenario and mode: requests, failures by category, output tokens,
designed hits, server-reported cached tokens, and the per-request PD split (HDR
histograms of the stack's prefill, KV transfer and decode times, where recorded). It is a
`record_kept` sink on the results-owning process (on a master: every worker's records),
attached only when the web UI is on; each record costs a handful of increments.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

from kvswarm.records import RequestRecord

__all__ = ["PD_PHASES", "LiveTally", "ScenarioTally"]

# The per-request PD split: phase -> the record's field (seconds).
PD_PHASES = {
    "prefill": "server_prefill_s",
    "transfer": "server_transfer_s",
    "decode": "server_decode_s",
}
_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000
_SIGNIFICANT_DIGITS = 3


@dataclass
class ScenarioTally:
    """One scenario and mode so far. `prompt_tokens`/`cached_tokens` count only successful
    requests whose usage reported both (the same basis as the summary's cached share)."""

    requests: int = 0  # finished, cancelled ones left out (as the summary counts)
    cancelled: int = 0
    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    output_tokens: int = 0
    designed_hits: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    pd: dict[str, HdrHistogram] = field(default_factory=dict)

    @property
    def designed_hit_share(self) -> float | None:
        return self.designed_hits / self.ok if self.ok else None

    @property
    def cached_share(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None

    def pd_median_ms(self, phase: str) -> float | None:
        histogram = self.pd.get(phase)
        if histogram is None or not histogram.get_total_count():
            return None
        return histogram.get_value_at_percentile(50.0) / 1000.0


class LiveTally:
    """Per (scenario, mode) `ScenarioTally`, fed one record at a time (`add`)."""

    def __init__(self) -> None:
        self.scenarios: dict[tuple[str, str], ScenarioTally] = {}

    def add(self, record: RequestRecord, **_kwargs: object) -> None:
        """Take one record (a `record_kept` listener)."""
        key = (record.scenario, record.mode)
        tally = self.scenarios.get(key)
        if tally is None:
            tally = self.scenarios[key] = ScenarioTally()
        if record.cancelled:
            tally.cancelled += 1
            return
        tally.requests += 1
        if not record.ok:
            tally.failures[record.failure or "unknown"] += 1
            return
        tally.ok += 1
        tally.output_tokens += record.output_tokens
        if record.expected_hit:
            tally.designed_hits += 1
        if record.prompt_tokens is not None and record.cached_tokens is not None:
            tally.prompt_tokens += record.prompt_tokens
            tally.cached_tokens += record.cached_tokens
        for phase, name in PD_PHASES.items():
            seconds = getattr(record, name)
            if seconds is not None:
                histogram = tally.pd.get(phase)
                if histogram is None:
                    histogram = tally.pd[phase] = HdrHistogram(
                        _LOWEST_US, _HIGHEST_US, _SIGNIFICANT_DIGITS
                    )
                histogram.record_value(min(max(int(seconds * 1e6), _LOWEST_US), _HIGHEST_US))
