"""The simulator's cost model: prefill, decode and KV-transfer arithmetic, and its knobs."""

from __future__ import annotations

import pytest

from kvswarm.errors import KvswarmError
from kvswarm.sim.model import CostModel


def test_prefill_time_counts_only_uncached_tokens() -> None:
    cost = CostModel(prefill_base_ms=5.0, prefill_ms_per_token=0.5)
    assert cost.prefill_s(100) == pytest.approx(0.055)
    assert cost.prefill_s(0) == pytest.approx(0.005)


def test_tpot_grows_with_running_requests() -> None:
    cost = CostModel(decode_base_ms=10.0, decode_ms_per_seq=0.5)
    assert cost.tpot_s(1) == pytest.approx(0.010)
    assert cost.tpot_s(21) == pytest.approx(0.020)


def test_tpot_includes_interference_while_prefilling() -> None:
    cost = CostModel(decode_base_ms=10.0, decode_ms_per_seq=0.0, prefill_interference_ms=3.0)
    assert cost.tpot_s(1, prefilling=True) == pytest.approx(0.013)


def test_transfer_time_comes_from_kv_bytes_and_bandwidth() -> None:
    cost = CostModel(kv_bytes_per_token=1_000_000, kv_bandwidth_gb_s=2.0, kv_transfer_base_ms=1.0)
    assert cost.transfer_s(100) == pytest.approx(0.051)


def test_kv_blocks_round_partial_blocks_up() -> None:
    assert CostModel(block_size=16).kv_blocks(17) == 2


def test_out_of_bounds_knob_names_its_flag() -> None:
    with pytest.raises(KvswarmError, match=r"^--decode-base-ms: must be >= 0, got -1"):
        CostModel(decode_base_ms=-1)
