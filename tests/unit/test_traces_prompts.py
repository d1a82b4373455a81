"""Prompts from hash ids: exact lengths, shared prefixes byte-identical, blocks disjoint; the
`trace` workload type."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvswarm.config import ScenarioConfig, parse_config
from kvswarm.errors import ConfigError
from kvswarm.sim.tokenizer import split_text
from kvswarm.tokens import RatioSizer
from kvswarm.workloads import SharedMaterial, make_workload
from kvswarm.workloads.trace_blocks import BlockText
from kvswarm.workloads.trace_file import load_trace

EXCERPT = Path(__file__).parents[1] / "data" / "mooncake_conversation_200.jsonl"


class SimSizer:
    """The simulator's tokenizer (one token per whitespace-separated word) as a sizer."""

    method = "sim"
    local = True

    def count(self, text: str) -> int:
        return len(split_text(text))


def test_prompts_have_exactly_input_length_tokens_with_the_sims_tokenizer():
    blocks = BlockText(SimSizer(), 512)
    for row in load_trace(EXCERPT).rows[:40]:
        prompt = blocks.prompt(row.hash_ids, row.input_length)
        assert len(split_text(prompt.text)) == prompt.tokens == row.input_length


def test_every_block_is_exactly_block_tokens_long():
    blocks = BlockText(SimSizer(), 64)
    assert all(len(split_text(blocks.block(i).text)) == 64 for i in range(200))


def test_prompts_sized_by_a_ratio_add_up_to_input_length():
    sizer = RatioSizer(4.0)
    blocks = BlockText(sizer, 512)
    row = load_trace(EXCERPT).rows[0]
    prompt = blocks.prompt(row.hash_ids, row.input_length)
    assert prompt.tokens == row.input_length
    assert sizer.count(prompt.text) == pytest.approx(row.input_length, rel=0.002)


def test_equal_leading_ids_give_byte_identical_prefixes_in_any_process():
    one, other = BlockText(SimSizer(), 128, seed=5), BlockText(SimSizer(), 128, seed=5)
    a = one.prompt([0, 1, 2, 9], 128 * 3 + 50)
    b = other.prompt([0, 1, 2, 7, 8], 128 * 4 + 10)
    shared = "".join(one.block(i).text for i in (0, 1, 2))
    assert a.text.startswith(shared) and b.text.startswith(shared)
    assert a.text[len(shared) :][:20] != b.text[len(shared) :][:20]


def test_a_prompt_ending_inside_a_block_holds_a_prefix_of_that_block():
    blocks = BlockText(SimSizer(), 128)
    cut = blocks.prompt([3, 4], 128 + 40)
    assert (
        cut.text
        == blocks.block(3).text + blocks.block(4).text[: len(cut.text) - len(blocks.block(3).text)]
    )


def test_different_ids_share_no_16_token_window():
    blocks = BlockText(SimSizer(), 512)
    owner: dict[tuple[str, ...], int] = {}
    for hash_id in range(60):
        words = split_text(blocks.block(hash_id).text)
        for start in range(len(words) - 15):
            window = tuple(words[start : start + 16])
            assert owner.setdefault(window, hash_id) == hash_id, (window, hash_id)


def test_a_seed_changes_every_block():
    a, b = BlockText(SimSizer(), 64, seed=1), BlockText(SimSizer(), 64, seed=2)
    assert all(a.block(i).text != b.block(i).text for i in range(20))


def test_the_block_cache_is_bounded_and_regenerates_identically():
    blocks = BlockText(SimSizer(), 64, cache_blocks=8)
    first = blocks.block(0).text
    for hash_id in range(1, 50):
        blocks.block(hash_id)
    assert len(blocks) == 8 and blocks.generated == 50
    assert blocks.block(0).text == first and blocks.generated == 51


def trace_config(**keys: object) -> ScenarioConfig:
    return ScenarioConfig(type="trace", path=str(EXCERPT), **keys)


def trace_workload(config: ScenarioConfig, max_model_len: int = 200_000):
    sizer = SimSizer()
    return make_workload(
        "conversation",
        config,
        seed=0,
        run_id="r",
        worker_id="w",
        user_id=0,
        sizer=sizer,
        max_model_len=max_model_len,
        max_tokens=64,
        material=SharedMaterial(sizer),
    )


def test_a_trace_scenario_is_a_workload_type_with_validated_keys():
    config = parse_config(
        {"scenarios": {"conv": {"type": "trace", "path": "x.jsonl", "end_s": 60, "max_rows": 9}}}
    ).scenarios["conv"]
    assert (config.type, config.block_tokens, config.time_scale) == ("trace", 512, 1.0)
    with pytest.raises(ConfigError, match=r"scenarios\.conv: end_s \(5\.0\) must be > start_s"):
        parse_config({"scenarios": {"conv": {"type": "trace", "start_s": 10.0, "end_s": 5.0}}})


def test_the_trace_workload_turns_rows_into_requests():
    workload = trace_workload(trace_config(max_rows=20))
    rows = workload.trace.rows
    first, second = workload.next_request(), workload.next_request()
    assert first.max_tokens == rows[0].output_length and first.request_id == "row-0"
    assert len(split_text(first.prompt)) == first.prompt_tokens_sized == rows[0].input_length
    assert not first.expected_hit
    # row 1 starts with row 0's first block (id 0): a designed hit of 512 tokens
    assert second.expected_hit and second.prefix_tokens == 512
    assert second.prompt.startswith(workload.blocks.block(0).text)
    assert workload.stats.requests == 2


def test_a_trace_scenario_without_a_path_is_refused():
    with pytest.raises(ConfigError, match=r"^scenarios\.conversation\.path: required"):
        trace_workload(ScenarioConfig(type="trace"))


def test_an_invalid_trace_is_refused_naming_the_scenario_key():
    with pytest.raises(ConfigError, match=r"^scenarios\.conversation\.path: .*: line 1: hash_ids"):
        trace_workload(trace_config(block_tokens=16))


def test_rows_longer_than_the_context_window_are_refused():
    with pytest.raises(ConfigError, match=r"do not fit max_model_len 8192 \(\d+ of 200 rows"):
        trace_workload(trace_config(), max_model_len=8192)
