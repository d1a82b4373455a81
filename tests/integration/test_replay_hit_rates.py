"""A trace's theoretical prefix hit rate against the one the simulated stack realises.

The trace: conversations of 64-token blocks, each turn its conversation's blocks so far
plus new ones, so every turn ends in a block no one has sent (a prefix cache never holds a
whole prompt) and the trace's block size is a multiple of the simulator's (16). Sent on
the completions endpoint (no chat template in front), one row at a time on the trace's
schedule: with a cache larger than the working set the server serves exactly what the
trace allows; with one a few blocks large it serves less, and kvswarm says so.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.support.processes import run_scenario, running_sim

BLOCK = 64
CONVERSATIONS = 4
TURNS = 6
GAP_MS = 150


def write_trace(path: Path) -> int:
    """The trace; its working set in the simulator's 16-token blocks."""
    rng = random.Random(11)
    histories = {c: [] for c in range(CONVERSATIONS)}
    next_id = 1000
    lines = []
    for turn in range(TURNS):
        for conversation in range(CONVERSATIONS):
            new = rng.randint(1, 3)
            histories[conversation] += list(range(next_id, next_id + new))
            next_id += new
            blocks = histories[conversation]
            stamp = (turn * CONVERSATIONS + conversation) * GAP_MS
            lines.append(json.dumps({"timestamp": stamp, "input_length": len(blocks) * BLOCK,
                                     "output_length": 2, "hash_ids": blocks}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return (next_id - 1000) * BLOCK // 16


def replay(tmp_path: Path, cache_blocks: int) -> dict:
    """The trace replayed against `kvswarm sim --cache-blocks cache_blocks`; run.json."""
    working_set = write_trace(tmp_path / "trace.jsonl")
    assert cache_blocks < working_set / 4 or cache_blocks > working_set * 2
    config = (
        "target: {endpoint: completions, max_model_len: 8192}\n"
        "generation: {max_tokens: 2}\n"
        "scenarios:\n"
        f"  replay: {{type: trace, path: {tmp_path / 'trace.jsonl'}, block_tokens: {BLOCK}}}\n"
    )
    sim_args = ("--cache-blocks", str(cache_blocks), "--prefill-ms-per-token", "0.01")
    with running_sim(tmp_path, *sim_args) as base_url:
        _, run = run_scenario(base_url, config, tmp_path, "replay", 1, 10)
    return run


def test_with_room_for_the_working_set_the_server_realises_the_theoretical_rate(
    tmp_path: Path,
) -> None:
    section = replay(tmp_path, cache_blocks=8192)["replay"]["replay"]
    assert section["rows_sent"] == CONVERSATIONS * TURNS
    assert section["theoretical_hit_rate"] > 0.5
    assert abs(section["gap_points"]) <= 2.0
    (summary,) = tmp_path.glob("results-replay-1/*/summary.txt")
    assert "realised the trace's theoretical rate" in summary.read_text()


def test_with_a_cache_too_small_the_server_realises_less_and_the_summary_says_why(
    tmp_path: Path,
) -> None:
    run = replay(tmp_path, cache_blocks=12)
    section = run["replay"]["replay"]
    assert section["gap_points"] < -2.0
    (summary,) = tmp_path.glob("results-replay-1/*/summary.txt")
    assert "points less than the trace allows" in summary.read_text()
