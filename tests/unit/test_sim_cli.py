"""`kvswarm sim`'s flags: every knob is a flag, and options survive a round trip."""

from __future__ import annotations

import argparse

import pytest

from kvswarm.errors import KvswarmError
from kvswarm.sim import CostModel, FaultConfig, SimOptions
from kvswarm.sim.cli import add_sim_arguments, options_from_args, options_to_argv, register


def parse(argv: list[str]) -> SimOptions:
    parser = argparse.ArgumentParser()
    add_sim_arguments(parser)
    return options_from_args(parser.parse_args(argv))


def test_defaults_parse_to_default_options() -> None:
    assert parse([]) == SimOptions()


def test_options_round_trip_through_argv() -> None:
    options = SimOptions(
        mode="pd_disaggregated",
        port=0,
        seed=5,
        ground_truth="/tmp/gt.jsonl",
        cost=CostModel(decode_base_ms=3.5, cache_blocks=10),
        faults=FaultConfig(stall_rate=0.25, stall_s=0.5),
    )
    assert parse(options_to_argv(options)) == options


def test_fault_knobs_have_the_fault_prefix() -> None:
    assert parse(["--fault-error-rate", "0.2"]).faults.error_rate == 0.2


def test_out_of_bounds_flag_is_a_kvswarm_error() -> None:
    with pytest.raises(KvswarmError, match="^--max-num-seqs: must be >= 1, got 0$"):
        parse(["--max-num-seqs", "0"])


def test_help_says_it_is_a_simulator_and_shows_defaults() -> None:
    parser = argparse.ArgumentParser(prog="kvswarm")
    register(parser.add_subparsers())
    help_text = parser._subparsers._group_actions[0].choices["sim"].format_help()  # type: ignore[union-attr]
    assert "SIMULATOR" in help_text
    assert "--prefill-ms-per-token" in help_text and "(default: 0.1)" in help_text
