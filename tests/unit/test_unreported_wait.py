"""The summary's warning for a wait before the first token that the server does not report.

Values recorded on llama.cpp (build 11434, CUDA, 64 slots) on an H200, cold_start with 64
users started at once (bench/README.md, "Against a real GPU engine")."""

from __future__ import annotations

from pathlib import Path

from kvswarm.analysis.runs import load_run
from kvswarm.analysis.summary import format_summary, summarize
from tests.unit.test_records_summary import make, write_run

# (client TTFT ms, the engine's timings.prompt_ms), from requests.csv of that run.
RECORDED = [
    (22315.0, 122.0),  # its slot's prompt entered a batch only after ~22 s of waiting
    (21493.0, 142.0),
    (22484.0, 22468.0),  # started at once, starved inside prompt_ms: the engine counted it
    (98.0, 75.0),
    (349.0, 130.0),
    (114.0, 72.0),
]


def summary_of(tmp_path: Path, pairs: list[tuple[float, float | None]]) -> str:
    records = [
        make(
            i,
            ttft_s=ttft / 1000,
            e2e_s=ttft / 1000 + 2.5,
            server_prefill_s=prompt and prompt / 1000,
        )
        for i, (ttft, prompt) in enumerate(pairs)
    ]
    run = load_run(write_run(tmp_path, records))
    return format_summary(summarize(run), "r", run)


def test_a_first_token_far_later_than_the_servers_prompt_time_is_a_warning(tmp_path: Path) -> None:
    text = summary_of(tmp_path, RECORDED)
    assert "warning: 2 of 6 requests waited more than 1000 ms for their first token" in text
    assert "the server's timings do not show this wait" in text


def test_waits_the_server_counts_in_its_own_prompt_time_are_no_warning(tmp_path: Path) -> None:
    text = summary_of(tmp_path, [(22484.0, 22468.0), (98.0, 75.0)])
    assert "beyond the server's own account" not in text


def test_without_server_timings_there_is_no_warning(tmp_path: Path) -> None:
    text = summary_of(tmp_path, [(22315.0, None), (98.0, None)])
    assert "beyond the server's own account" not in text
