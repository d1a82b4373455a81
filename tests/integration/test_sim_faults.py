"""Fault injection seen from a plain HTTP client, compared with the sim's own counters,
and from kvswarm's client: the failure category each fault lands in."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from kvswarm.client import CompletionRequest as ClientRequest
from kvswarm.client import StreamingClient, StreamResult, Timeouts
from kvswarm.sim import CostModel, FaultConfig, SimOptions, start_stack
from kvswarm.sim.faults import read_fault_log
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
    """The fault a plain client can tell from what it read, timing aside."""
    if result.status != 200:
        return "error"
    if result.broken or not result.done:
        return "disconnect"
    if None in result.events:
        return "malformed_chunk"
    if any(isinstance(e, dict) and "error" in e for e in result.events):
        return "error_in_stream"
    return None


def test_faults_are_injected_at_configured_rates_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "faults.jsonl"
    faults = FaultConfig(
        error_rate=RATE,
        disconnect_rate=RATE,
        stall_rate=RATE,
        stall_s=STALL_S,
        malformed_chunk_rate=RATE,
        error_in_stream_rate=RATE,
        log=str(log),
    )
    options = fast_options(faults=faults, seed=7)
    with start_stack(options) as sim:
        seen = {
            f"r{i}": stream(
                sim.root_url,
                {"prompt": f"r{i}", "max_tokens": 4},
                "/v1/completions",
                headers={"X-Request-Id": f"r{i}"},
            )
            for i in range(REQUESTS)
        }
        text = scrape(sim.metrics_urls["server"])
    injected = {e["request_id"]: e["fault"] for e in read_fault_log(log)}
    for request_id, result in seen.items():
        fault = injected.get(request_id)
        if fault == "stall":
            # A stall is a silence of at least stall_s; a busy machine can make other
            # requests' gaps long too, so only the stalled ones are checked for it.
            assert _observed_fault(result) is None, request_id
            assert result.max_gap_s >= STALL_S * 0.95, request_id
        else:
            assert _observed_fault(result) == fault, request_id
    logged = Counter(injected.values())
    for kind in ("error", "disconnect", "stall", "malformed_chunk", "error_in_stream"):
        counted = metric_value(text, "kvswarm_sim_faults_injected_total", kind=kind)
        assert logged[kind] == counted, kind
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


# What kvswarm's client makes of each fault (timeouts below the sim's stall; "ok": a
# correct client takes it in its stride). README's failure table says the same.
EXPECTED_CATEGORY = {
    "error": "http_500",
    "rate_limited": "http_429",
    "unavailable": "http_503",
    "disconnect_before_head": "disconnect",
    "not_sse": "bad_chunk",
    "stall_first_token": "timeout_ttft",
    "refuse_connections": "",  # this request is served; the next connections are refused
    "disconnect": "disconnect",
    "stall": "timeout_idle",
    "malformed_chunk": "bad_chunk",
    "error_in_stream": "server_error",
    "huge_chunk": "",
    "utf8_split": "",
    "never_ending": "timeout_total",
    "no_done": "",
}
CLIENT_TIMEOUTS = Timeouts(connect_s=5, ttft_s=0.5, idle_s=0.5, total_s=1.0)


def _one_request(base_url: str, request_id: str) -> StreamResult:
    client = StreamingClient(base_url, timeouts=CLIENT_TIMEOUTS)
    try:
        return client.complete(
            ClientRequest(
                endpoint="chat",
                model=SimOptions().model,
                max_tokens=6,
                messages=[{"role": "user", "content": "hello there"}],
                request_id=request_id,
            )
        )
    finally:
        client.close()


@pytest.mark.parametrize("kind", sorted(EXPECTED_CATEGORY))
def test_each_fault_lands_in_its_category_and_is_logged_with_the_request_id(
    kind: str, tmp_path: Path
) -> None:
    log = tmp_path / "faults.jsonl"
    faults = FaultConfig(
        **{f"{kind}_rate": 1.0},
        stall_s=1.0,
        huge_chunk_bytes=3_000_000,
        refuse_s=0.3,
        log=str(log),
    )
    with start_stack(fast_options(faults=faults)) as sim:
        result = _one_request(sim.base_url, "req-1")
    assert result.failure == EXPECTED_CATEGORY[kind], result.error
    (entry,) = [e for e in read_fault_log(log) if e["request_id"] is not None]
    assert (entry["request_id"], entry["fault"]) == ("req-1", kind)


def test_retry_after_comes_with_its_share_of_429s() -> None:
    faults = FaultConfig(rate_limited_rate=1.0, retry_after_share=0.5, retry_after_s=7)
    with start_stack(fast_options(faults=faults, seed=5)) as sim:
        results = [_one_request(sim.base_url, f"r{i}") for i in range(40)]
    assert {r.failure for r in results} == {"http_429"}
    with_header = [r for r in results if "(Retry-After: 7)" in r.error]
    assert 0 < len(with_header) < len(results)


def test_connections_are_refused_for_a_while_after_a_refuse_connections_fault(
    tmp_path: Path,
) -> None:
    log = tmp_path / "faults.jsonl"
    faults = FaultConfig(refuse_connections_rate=1.0, refuse_s=0.5, log=str(log))
    with start_stack(fast_options(faults=faults)) as sim:
        first = _one_request(sim.base_url, "first")
        refused = _one_request(sim.base_url, "refused")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(read_fault_log(log)) < 2:
            time.sleep(0.05)
        again = _one_request(sim.base_url, "again")
    assert first.ok and again.ok
    assert refused.failure == "connect"
    assert "refused" in refused.error.lower()
    window = next(e for e in read_fault_log(log) if e["fault"] == "not_listening")
    assert window["from_unix_s"] <= refused.start_unix_s <= window["until_unix_s"]
    # The response that began the pause said Connection: close, so its client let go.
    assert first.headers.get("connection") == "close"
