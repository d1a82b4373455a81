"""Fault injection seen from a plain HTTP client, compared with the sim's own counters."""

from __future__ import annotations

from collections import Counter

from kvswarm.sim import CostModel, FaultConfig, start_stack
from tests.integration.test_sim_http import (
    Streamed,
    fast_options,
    metric_value,
    post,
    scrape,
    stream,
)

REQUESTS = 200
RATE = 0.1
STALL_S = 0.1


def _observed_fault(result: Streamed) -> str | None:
    if result.status != 200:
        return "error"
    if result.broken or not result.done:
        return "disconnect"
    if None in result.events:
        return "malformed_chunk"
    if any(isinstance(e, dict) and "error" in e for e in result.events):
        return "error_in_stream"
    if result.max_gap_s >= STALL_S * 0.95:  # normal gaps are ~1 ms
        return "stall"
    return None


def test_faults_are_injected_at_configured_rates_and_counted() -> None:
    faults = FaultConfig(
        error_rate=RATE,
        disconnect_rate=RATE,
        stall_rate=RATE,
        stall_s=STALL_S,
        malformed_chunk_rate=RATE,
        error_in_stream_rate=RATE,
    )
    options = fast_options(faults=faults, seed=7)
    with start_stack(options) as sim:
        seen = Counter(
            _observed_fault(
                stream(sim.root_url, {"prompt": f"r{i}", "max_tokens": 4}, "/v1/completions")
            )
            for i in range(REQUESTS)
        )
        text = scrape(sim.metrics_urls["server"])
    for kind in ("error", "disconnect", "stall", "malformed_chunk", "error_in_stream"):
        counted = metric_value(text, "kvswarm_sim_faults_injected_total", kind=kind)
        assert seen[kind] == counted, kind
        # Binomial(200, 0.1): mean 20, sd 4.2; a fixed seed makes this deterministic.
        assert abs(counted - REQUESTS * RATE) <= 13, kind


def test_same_seed_injects_the_same_faults() -> None:
    faults = FaultConfig(error_rate=0.3)

    def statuses() -> list[int]:
        with start_stack(fast_options(faults=faults, seed=3)) as sim:
            body = {"prompt": "a", "max_tokens": 1}
            return [post(sim.root_url, "/v1/completions", body)[0] for _ in range(30)]

    assert statuses() == statuses()


def test_injected_error_uses_configured_status() -> None:
    faults = FaultConfig(error_rate=1.0, error_status=503)
    with start_stack(fast_options(faults=faults)) as sim:
        status, _, body = post(sim.root_url, "/v1/completions", {"prompt": "a", "max_tokens": 2})
    assert status == 503
    assert body["error"]["code"] == 503


def test_disconnect_mid_stream_cuts_stream_after_half_the_tokens() -> None:
    with start_stack(fast_options(faults=FaultConfig(disconnect_rate=1.0))) as sim:
        result = stream(sim.root_url, {"prompt": "a", "max_tokens": 8}, "/v1/completions")
    assert result.broken or not result.done
    assert len(result.text_times_s) == 4


def test_slow_start_slows_requests_right_after_start_and_counts_them() -> None:
    cost = CostModel(prefill_base_ms=20.0, prefill_ms_per_token=0.0, decode_base_ms=1.0)
    faults = FaultConfig(slow_start_s=60.0, slow_start_factor=4.0)
    with start_stack(fast_options(cost=cost, faults=faults)) as sim:
        _, headers, _ = post(sim.root_url, "/v1/completions", {"prompt": "a", "max_tokens": 1})
        text = scrape(sim.metrics_urls["server"])
    assert float(headers["x-sim-prefill-ms"]) > 70  # about 4 x 20 ms
    assert metric_value(text, "kvswarm_sim_faults_injected_total", kind="slow_start") == 1
