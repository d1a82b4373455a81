"""A replay held against its trace: rows sent, the degraded verdict, prompt lengths and
the realised against the theoretical prefix hit rate (kvswarm.analysis.replay)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvswarm.analysis.replay import replay_lines, replay_sections
from kvswarm.analysis.runs import load_run
from kvswarm.analysis.summary import format_summary, summarize
from kvswarm.records import RecordWriter, RequestRecord
from kvswarm.runrecord import ReplaySection, RunRecord

BLOCK = 4
# Row 0 opens blocks 1, 2; row 1 reuses both and adds 3; row 2 starts afresh (9) then
# repeats 1 and 2, which a prefix cache cannot serve after an unseen block; row 3 reuses 1.
TRACE = [
    {"timestamp": 0, "input_length": 8, "output_length": 2, "hash_ids": [1, 2]},
    {"timestamp": 100, "input_length": 10, "output_length": 2, "hash_ids": [1, 2, 3]},
    {"timestamp": 200, "input_length": 12, "output_length": 2, "hash_ids": [9, 1, 2]},
    {"timestamp": 300, "input_length": 3, "output_length": 2, "hash_ids": [1]},
]
# The infinite cache's hit tokens per row, in trace order: 0, 8 (blocks 1-2), 0, 3.
THEORETICAL = (0 + 8 + 0 + 3) / (8 + 10 + 12 + 3)


def write_replay_run(
    directory: Path,
    *,
    rows: list[int],
    lags_ms: list[float],
    cached: list[int | None],
    prompt_extra: int = 0,
    lag_bound_ms: float | None = None,
) -> Path:
    trace = directory / "trace.jsonl"
    trace.write_text("".join(json.dumps(row) + "\n" for row in TRACE))
    scenario = {"type": "trace", "path": str(trace), "block_tokens": BLOCK}
    if lag_bound_ms is not None:
        scenario["lag_bound_ms"] = lag_bound_ms
    writer = RecordWriter(directory / "requests.csv")
    for n, (row, lag, hit) in enumerate(zip(rows, lags_ms, cached, strict=True)):
        writer.append(
            RequestRecord(
                request_id=f"w-1-{n}", worker_id="w", user_id=1, scenario="replay",
                mode="non_disaggregated", endpoint="chat", streamed=True,
                start_unix_s=1000.0 + n, ok=True, output_tokens=2, ttft_s=0.01, e2e_s=0.02,
                prompt_tokens=TRACE[row]["input_length"] + prompt_extra, cached_tokens=hit,
                scheduled_unix_s=1000.0 + n, send_lag_s=lag / 1000, trace_row=row,
            )
        )  # fmt: skip
    writer.close()
    record = RunRecord(run_id="r", config={"scenarios": {"replay": scenario}})
    (directory / "run.json").write_text(json.dumps(record.to_dict()))
    return directory


def section_of(directory: Path) -> ReplaySection:
    (section,) = replay_sections(load_run(directory)).values()
    return section


def test_the_rows_sent_are_counted_against_the_selection_and_twice_sent_rows_flagged(
    tmp_path: Path,
) -> None:
    run = write_replay_run(tmp_path, rows=[0, 1, 1], lags_ms=[1, 2, 3], cached=[0, 8, 8])
    section = section_of(run)
    assert (section.rows_selected, section.rows_sent, section.rows_sent_twice) == (4, 2, 1)


def test_the_theoretical_hit_rate_is_that_of_the_rows_sent_in_trace_order(
    tmp_path: Path,
) -> None:
    run = write_replay_run(
        tmp_path, rows=[3, 2, 1, 0], lags_ms=[1] * 4, cached=[3, 0, 8, 0]
    )  # sent out of order; the trace's order decides what a cache could serve
    section = section_of(run)
    assert section.theoretical_hit_rate == pytest.approx(THEORETICAL)
    assert section.server_hit_rate == pytest.approx(THEORETICAL)
    assert section.gap_points == pytest.approx(0.0)
    # Without row 1 (not sent), row 3 still reuses block 1 from row 0.
    (tmp_path / "partial").mkdir()
    partial = write_replay_run(
        tmp_path / "partial", rows=[0, 2, 3], lags_ms=[1] * 3, cached=[0, 0, 3]
    )
    assert section_of(partial).theoretical_hit_rate == pytest.approx(3 / (8 + 12 + 3))


def test_a_replay_is_degraded_when_its_lag_p99_exceeds_the_scenarios_bound(
    tmp_path: Path,
) -> None:
    kept = write_replay_run(tmp_path, rows=[0, 1, 2, 3], lags_ms=[1, 2, 3, 40], cached=[0] * 4)
    assert not section_of(kept).degraded  # the default bound: 50 ms
    (tmp_path / "strict").mkdir()
    strict = write_replay_run(
        tmp_path / "strict", rows=[0, 1, 2, 3], lags_ms=[1, 2, 3, 40], cached=[0] * 4,
        lag_bound_ms=20,
    )  # fmt: skip
    section = section_of(strict)
    assert section.degraded and section.lag_bound_ms == 20
    assert section.lag_p99_ms == pytest.approx(38.89, abs=0.01)
    assert (
        "DEGRADED: send lag p99 38.9 ms is above lag_bound_ms 20"
        in replay_lines({"replay": section})[0]
    )


def test_server_prompt_tokens_more_than_2_percent_off_the_trace_are_a_warning(
    tmp_path: Path,
) -> None:
    close = write_replay_run(tmp_path, rows=[0, 1, 2, 3], lags_ms=[1] * 4, cached=[0] * 4)
    assert not section_of(close).prompt_tokens_off
    (tmp_path / "off").mkdir()
    off = write_replay_run(
        tmp_path / "off", rows=[0, 1, 2, 3], lags_ms=[1] * 4, cached=[0] * 4, prompt_extra=1
    )
    section = section_of(off)
    assert (section.trace_input_tokens, section.server_prompt_tokens) == (33, 37)
    assert section.prompt_tokens_off
    assert any("WARNING: more than 2% apart" in line for line in replay_lines({"r": section}))


def test_a_server_below_the_theoretical_rate_is_said_so_in_words(tmp_path: Path) -> None:
    run = write_replay_run(tmp_path, rows=[0, 1, 2, 3], lags_ms=[1] * 4, cached=[0, 0, 0, 3])
    section = section_of(run)
    assert section.gap_points == pytest.approx((3 / 33 - THEORETICAL) * 100)
    text = "\n".join(replay_lines({"replay": section}))
    assert "points less than the trace allows" in text


def test_run_json_carries_the_section_and_the_summary_prints_it(tmp_path: Path) -> None:
    run_dir = write_replay_run(tmp_path, rows=[0, 1, 2, 3], lags_ms=[1] * 4, cached=[0, 8, 0, 3])
    section = section_of(run_dir)
    record = RunRecord.from_dict(json.loads((run_dir / "run.json").read_text()))
    record = record.with_changes(replay={"replay": section})
    assert RunRecord.from_dict(record.to_dict()).replay == {"replay": section}
    (run_dir / "run.json").write_text(json.dumps(record.to_dict()))
    run = load_run(run_dir)
    text = format_summary(summarize(run), str(run_dir), run)
    assert "trace replay replay: 4 of 4 rows sent" in text
    assert "realised the trace's theoretical rate" in text


def test_the_report_has_a_trace_replay_section_with_the_verdict_and_both_rates(
    tmp_path: Path,
) -> None:
    from kvswarm.analysis.report import build_report

    run_dir = write_replay_run(
        tmp_path, rows=[0, 1, 2, 3], lags_ms=[1, 2, 3, 90], cached=[0, 0, 0, 3]
    )
    record = RunRecord.from_dict(json.loads((run_dir / "run.json").read_text()))
    record = record.with_changes(replay=replay_sections(load_run(run_dir)))
    (run_dir / "run.json").write_text(json.dumps(record.to_dict()))
    document = build_report(load_run(run_dir), tmp_path / "report", with_charts=False)
    (section,) = [s for s in document.sections if s.title == "Trace replay"]
    schedule, hits = section.tables
    assert schedule.rows[0][-1] == "DEGRADED"
    assert hits.rows[0][1:3] == ("33.3%", "9.1%")  # theoretical 11 of 33, server 3 of 33
    assert "points less than the trace allows" in section.paragraphs[0]
    assert document.data["replay"]["replay"]["degraded"] is True
