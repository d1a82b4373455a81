"""`--kv-prime`: every shared prefix sent once before the load, so the measured phase
starts warm: on the simulator's real prefix cache, each prefix's first use in the load
is a hit, designed and reported; without the pass it is a miss."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import run_scenario, running_sim

CONFIG = """\
generation: {max_tokens: 4}
scenarios:
  code_generation: {reuse_ratio: 1.0, pool_size: 3, shared_tokens_min: 600,
                    shared_tokens_max: 600, unique_tokens: 32}
  cold_start: {unique_tokens: 64}
"""


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_sim(tmp_path_factory.mktemp("prime-sim")) as base_url:
        yield base_url


def first_uses(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Each pool prefix's first request in the load (by start)."""
    first: dict[str, dict[str, str]] = {}
    for row in sorted(rows, key=lambda r: float(r["start_unix_s"])):
        if row["prefix_id"] and row["ok"] == "1":
            first.setdefault(row["prefix_id"], row)
    return list(first.values())


def test_a_primed_run_finds_every_prefix_cached_from_its_first_use(simulator, tmp_path) -> None:
    rows, meta = run_scenario(
        simulator, CONFIG, tmp_path, "code_generation", 2, 3, "--kv-reset-cache", "--kv-prime"
    )
    assert meta["cache_prime"]["prefixes"] == {"code_generation": 3}
    assert meta["cache_prime"]["failed"] == {} and meta["options"]["prime"] is True
    firsts = first_uses(rows)
    assert len(firsts) == 3
    for row in firsts:
        assert row["expected_hit"] == "1", row
        assert int(row["cached_tokens"]) >= int(row["prefix_tokens"]) * 0.8, row


def test_without_the_pass_each_first_use_is_a_miss(simulator, tmp_path) -> None:
    rows, meta = run_scenario(
        simulator, CONFIG, tmp_path, "code_generation", 2, 3, "--kv-reset-cache"
    )
    assert meta["cache_prime"] is None and meta["cache_reset"]["status"] == "reset"
    firsts = first_uses(rows)
    assert len(firsts) == 3
    assert all(int(row["cached_tokens"] or 0) < int(row["prefix_tokens"]) for row in firsts)
    # The design counts one first use (a miss) per prefix, whichever user sent it first.
    misses = [row["prefix_id"] for row in rows if row["prefix_id"] and row["expected_hit"] == "0"]
    assert sorted(misses) == sorted(row["prefix_id"] for row in firsts)


def test_cold_start_sends_nothing_to_prime(simulator, tmp_path) -> None:
    rows, meta = run_scenario(simulator, CONFIG, tmp_path, "cold_start", 1, 2, "--kv-prime")
    assert meta["cache_prime"]["requests"] == 0
    assert rows and all(row["expected_hit"] == "0" for row in rows)


def test_without_a_reset_a_second_run_finds_the_first_runs_prefixes(simulator, tmp_path) -> None:
    """The cache state a run starts from is the previous run's unless reset: run.json says
    it was left as it was, and the server reports hits the design counts as misses."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    run_scenario(simulator, CONFIG, first, "code_generation", 2, 2)
    rows, meta = run_scenario(simulator, CONFIG, second, "code_generation", 2, 2)
    assert meta["cache_reset"] is None
    firsts = first_uses(rows)
    assert len(firsts) == 3
    for row in firsts:
        assert int(row["cached_tokens"]) >= int(row["prefix_tokens"]) * 0.8, row
