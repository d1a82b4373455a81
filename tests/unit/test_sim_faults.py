"""Fault selection with a seeded RNG, and the slow-start factor."""

from __future__ import annotations

from collections import Counter

import pytest

from kvswarm.errors import KvswarmError
from kvswarm.sim.faults import RANDOM_FAULTS, FaultConfig, FaultInjector, fault_token_index

DRAWS = 20_000


def test_fault_rates_match_configuration_with_fixed_seed() -> None:
    config = FaultConfig(
        error_rate=0.05,
        disconnect_rate=0.10,
        stall_rate=0.02,
        malformed_chunk_rate=0.03,
        error_in_stream_rate=0.01,
    )
    injector = FaultInjector(config, seed=1, started_s=0.0)
    counts = Counter(_kind(injector.draw()) for _ in range(DRAWS))
    expected = {
        "error": 0.05,
        "disconnect": 0.10,
        "stall": 0.02,
        "malformed_chunk": 0.03,
        "error_in_stream": 0.01,
    }
    for kind, rate in expected.items():
        sd = (DRAWS * rate * (1 - rate)) ** 0.5
        assert abs(counts[kind] - DRAWS * rate) < 4 * sd, kind
    assert counts[None] + sum(counts[k] for k in expected) == DRAWS


def _kind(draw) -> str | None:
    return draw.kind if draw is not None else None


def test_every_kind_is_drawn_at_its_rate() -> None:
    rate = 1 / (len(RANDOM_FAULTS) + 1)
    config = FaultConfig(**{f"{kind}_rate": rate for kind in RANDOM_FAULTS})
    injector = FaultInjector(config, seed=2, started_s=0.0)
    counts = Counter(_kind(injector.draw()) for _ in range(DRAWS))
    sd = (DRAWS * rate * (1 - rate)) ** 0.5
    for kind in (*RANDOM_FAULTS, None):
        assert abs(counts[kind] - DRAWS * rate) < 4 * sd, kind


def test_retry_after_goes_with_its_share_of_429_and_503_only() -> None:
    config = FaultConfig(rate_limited_rate=0.3, unavailable_rate=0.3, retry_after_share=0.25)
    injector = FaultInjector(config, seed=4, started_s=0.0)
    draws = [d for d in (injector.draw() for _ in range(DRAWS)) if d]
    with_header = sum(d.retry_after for d in draws)
    assert abs(with_header - len(draws) * 0.25) < 4 * (len(draws) * 0.25 * 0.75) ** 0.5
    only_errors = FaultInjector(FaultConfig(error_rate=1.0, retry_after_share=1.0), 4, 0.0)
    assert not any(only_errors.draw().retry_after for _ in range(100))


def test_same_seed_draws_the_same_faults() -> None:
    config = FaultConfig(error_rate=0.5)
    one = FaultInjector(config, seed=9, started_s=0.0)
    two = FaultInjector(config, seed=9, started_s=0.0)
    assert [one.draw() for _ in range(100)] == [two.draw() for _ in range(100)]


def test_no_faults_by_default() -> None:
    injector = FaultInjector(FaultConfig(), seed=0, started_s=0.0)
    assert {injector.draw() for _ in range(1000)} == {None}


def test_rates_adding_up_to_more_than_one_are_rejected() -> None:
    with pytest.raises(KvswarmError, match="add up to 1.2"):
        FaultConfig(error_rate=0.6, stall_rate=0.6)


def test_rate_above_one_names_its_flag() -> None:
    with pytest.raises(KvswarmError, match="^--fault-stall-rate: must be <= 1"):
        FaultConfig(stall_rate=1.5)


def test_slow_start_factor_falls_linearly_to_one() -> None:
    injector = FaultInjector(
        FaultConfig(slow_start_s=10.0, slow_start_factor=5.0), seed=0, started_s=100.0
    )
    assert injector.slowdown(100.0) == pytest.approx(5.0)
    assert injector.slowdown(105.0) == pytest.approx(3.0)
    assert injector.slowdown(110.0) == 1.0


def test_slow_start_off_by_default() -> None:
    assert FaultInjector(FaultConfig(), seed=0, started_s=0.0).slowdown(0.0) == 1.0


def test_mid_stream_faults_happen_after_half_the_tokens() -> None:
    assert fault_token_index(64) == 32
    assert fault_token_index(1) == 1
