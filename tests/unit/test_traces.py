"""Trace files: loading, row validation (one-line errors naming file, line and field),
sampling, and the `kvswarm trace` verb."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from kvswarm.cli import main
from kvswarm.workloads.trace_file import TraceError, load_trace, select_rows

EXCERPT = Path(__file__).parents[1] / "data" / "mooncake_conversation_200.jsonl"


def write(tmp_path: Path, *lines: str, name: str = "t.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def row(ts: float = 0, inp: int = 1000, out: int = 10, ids: list[int] | None = None) -> str:
    ids = [0, 1] if ids is None else ids
    return orjson.dumps(
        {"timestamp": ts, "input_length": inp, "output_length": out, "hash_ids": ids}
    ).decode()


def error_of(path: Path, block_tokens: int = 512) -> str:
    with pytest.raises(TraceError) as caught:
        load_trace(path, block_tokens)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_excerpt_loads_every_row_in_order():
    trace = load_trace(EXCERPT)
    assert len(trace) == 200 and trace.timed
    assert [r.index for r in trace.rows] == list(range(200))
    assert trace.rows[0].hash_ids[:3] == (0, 1, 2) and trace.rows[0].input_length == 6758
    assert trace.duration_s == 72.0


def test_a_gzipped_trace_reads_the_same(tmp_path):
    packed = tmp_path / "t.jsonl.gz"
    packed.write_bytes(gzip.compress(EXCERPT.read_bytes()))
    assert load_trace(packed).rows == load_trace(EXCERPT).rows


def test_a_malformed_line_names_file_and_line(tmp_path):
    path = write(tmp_path, row(), "{not json", row())
    assert error_of(path).startswith(f"{path}: line 2: not valid JSON (")


def test_a_line_that_is_not_an_object_is_an_error(tmp_path):
    path = write(tmp_path, row(), "[1, 2]")
    assert error_of(path) == f"{path}: line 2: expected a JSON object, got a list"


def test_hash_ids_that_cannot_cover_input_length_are_an_error(tmp_path):
    path = write(tmp_path, row(), row(inp=1500, ids=[0, 1]))
    assert error_of(path) == (
        f"{path}: line 2: hash_ids: 2 ids of 512 tokens hold 513..1024 prompt tokens, but "
        "input_length is 1500 (3 ids needed; is the block size the trace's? "
        "--block-tokens / block_tokens)"
    )


def test_more_ids_than_input_length_needs_is_an_error(tmp_path):
    path = write(tmp_path, row(inp=100, ids=[0, 1]))
    assert error_of(path).startswith(f"{path}: line 1: hash_ids: 2 ids of 512 tokens hold")


def test_a_block_size_that_is_not_the_traces_is_caught_on_the_first_row():
    message = error_of(EXCERPT, block_tokens=16)
    assert message.startswith(f"{EXCERPT}: line 1: hash_ids: 14 ids of 16 tokens hold 209..224")


def test_a_negative_timestamp_is_an_error(tmp_path):
    path = write(tmp_path, row(ts=-5))
    assert error_of(path) == f"{path}: line 1: timestamp: must be a finite number >= 0, got -5"


def test_a_decreasing_timestamp_is_an_error(tmp_path):
    path = write(tmp_path, row(ts=100), row(ts=200), row(ts=150))
    assert error_of(path) == (
        f"{path}: line 3: timestamp: 150 is before the previous row's 200 "
        "(timestamps must not decrease)"
    )


def test_a_missing_field_is_named(tmp_path):
    path = write(tmp_path, '{"timestamp": 0, "input_length": 10, "hash_ids": [3]}')
    assert error_of(path) == f"{path}: line 1: output_length: required field is missing"


def test_a_bad_hash_id_is_named_by_position(tmp_path):
    path = write(tmp_path, row(ids=[0, "x"]))
    assert error_of(path) == f"{path}: line 1: hash_ids[1]: must be an integer >= 0, got 'x'"


def test_timestamps_on_some_rows_only_is_an_error(tmp_path):
    untimed = '{"input_length": 10, "output_length": 1, "hash_ids": [3]}'
    path = write(tmp_path, row(ts=0), untimed)
    assert error_of(path) == (
        f"{path}: line 2: timestamp: missing, but earlier rows have one (all rows or none)"
    )


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    path = write(tmp_path, row(), "", row(ts=1))
    assert [r.line for r in load_trace(path).rows] == [1, 3]


def test_an_empty_or_missing_file_is_one_line(tmp_path):
    assert error_of(write(tmp_path, "")).endswith("no rows (expected one JSON object per line)")
    assert error_of(tmp_path / "nope.jsonl") == f"{tmp_path / 'nope.jsonl'}: trace file not found"


def test_optional_fields_are_read(tmp_path):
    chat = {
        "session_id": 7,
        "delay": 250,
        "output_length": 5,
        "messages": [{"role": "user", "content": "hello there"}],
    }
    text = {"session_id": "s1", "output_length": 3, "text_input": "verbatim prompt"}
    path = write(tmp_path, orjson.dumps(chat).decode(), orjson.dumps(text).decode())
    first, second = load_trace(path).rows
    assert first.session_id == "7" and first.delay_ms == 250 and first.has_text
    assert first.messages == ({"role": "user", "content": "hello there"},)
    assert first.timestamp_ms is None and first.hash_ids == ()
    assert second.text_input == "verbatim prompt" and second.session_id == "s1"


def test_malformed_messages_are_an_error(tmp_path):
    path = write(tmp_path, '{"output_length": 1, "messages": [{"role": "user"}]}')
    assert error_of(path) == (
        f"{path}: line 1: messages[0]: must be an object with string 'role' and 'content', "
        "got an object"
    )


def test_select_rows_takes_a_stretch_of_the_scaled_timeline():
    trace = load_trace(EXCERPT)
    rows = select_rows(trace, start_s=5, end_s=10, time_scale=0.5)
    assert rows and all(10_000 <= r.timestamp_ms < 20_000 for r in rows)
    assert [r.index for r in rows] == sorted(r.index for r in rows)
    assert len(select_rows(trace, max_rows=7)) == 7


def test_trace_sample_rows_writes_a_trace_that_loads_in_order(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    assert main(["trace", "sample", str(EXCERPT), "--rows", "50", "-o", str(out)]) == 0
    sample, whole = load_trace(out), load_trace(EXCERPT)
    assert [(r.timestamp_ms, r.hash_ids, r.input_length) for r in sample.rows] == [
        (r.timestamp_ms, r.hash_ids, r.input_length) for r in whole.rows[:50]
    ]
    assert f"50 of 200 rows -> {out}" in capsys.readouterr().out


def test_trace_sample_seconds_scales_the_timestamps(tmp_path):
    out = tmp_path / "s.jsonl.gz"
    argv = ["trace", "sample", str(EXCERPT), "--seconds", "10", "--time-scale", "0.5"]
    assert main([*argv, "-o", str(out)]) == 0
    sample, whole = load_trace(out), load_trace(EXCERPT)
    expected = [r for r in whole.rows if r.timestamp_ms * 0.5 < 10_000]
    assert len(sample) == len(expected) > 1
    assert [r.timestamp_ms for r in sample.rows] == [r.timestamp_ms * 0.5 for r in expected]
    assert [r.hash_ids for r in sample.rows] == [r.hash_ids for r in expected]


def test_trace_analyze_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "a.json"
    argv = ["trace", "analyze", str(EXCERPT), "--cache-blocks", "100", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "requests" in printed and "infinite cache" in printed and "LRU, 100 blocks" in printed
    data = orjson.loads(out.read_bytes())
    assert data["requests"] == 200 and data["lru"]["cache_blocks"] == 100
    assert 0 < data["lru"]["rate"] < data["infinite"]["rate"] < 1


def test_trace_analyze_takes_a_capacity_in_gb(tmp_path, capsys):
    out = tmp_path / "a.json"
    argv = ["trace", "analyze", str(EXCERPT), "--cache-gb", "1", "--kv-bytes-per-token", "1000"]
    assert main([*argv, "--json", str(out)]) == 0
    data = orjson.loads(out.read_bytes())
    assert data["lru"]["cache_blocks"] == 1_000_000_000 // (1000 * 512)
    assert data["working_set_gb"] == data["working_set_tokens"] * 1000 / 1e9


@pytest.mark.parametrize(
    ("argv", "start"),
    [
        (["analyze", "{bad}", "--block-tokens", "16"], "kvswarm: {bad}: line 1: hash_ids: "),
        (["analyze", "{missing}"], "kvswarm: {missing}: trace file not found"),
        (["analyze", "{good}", "--cache-gb", "1"], "kvswarm: --cache-gb: needs --kv-bytes"),
        (["sample", "{good}", "-o", "{out}"], "kvswarm: trace sample: give --rows N"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, start):
    paths = {
        "bad": str(EXCERPT),
        "good": str(EXCERPT),
        "missing": str(tmp_path / "missing.jsonl"),
        "out": str(tmp_path / "o.jsonl"),
    }
    argv = [a.format(**paths) for a in argv]
    assert main(["trace", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(start.format(**paths)) and err.count("\n") == 1
