"""The single-run report and loading: every number in the tables from a synthetic run
with known values, formats by name, one-line errors naming file and column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kvswarm.analysis.formats import FORMATS, resolve_formats
from kvswarm.analysis.runs import load_run, open_run, read_requests
from kvswarm.analysis.synthetic import SyntheticScenario, write_synthetic_run
from kvswarm.cli import main
from kvswarm.errors import KvswarmError
from kvswarm.records import CSV_COLUMNS
from kvswarm.registry import UnknownNameError

SCENARIOS = [
    SyntheticScenario("batch_processing", 300, 0.9, 30.0, 100.0, itl_gaps=5, failure_share=0.05,
                      pd_split=True),
    SyntheticScenario("cold_start", 200, 0.0, 30.0, 100.0, itl_gaps=5, cached_reported=False),
]  # fmt: skip


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_synthetic_run(tmp_path / "run", SCENARIOS, "pd_disaggregated", window_s=50.0)


def md_rows(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_every_number_in_the_report_tables_matches_the_data(run_dir: Path, tmp_path: Path) -> None:
    assert main(["report", str(run_dir), "-o", str(tmp_path / "out"), "--format", "md",
                 "--format", "json"]) == 0  # fmt: skip
    text = (tmp_path / "out" / "report.md").read_text()
    csv = pd.read_csv(run_dir / "requests.csv", keep_default_na=False, na_values=[""])
    summary = {r[0]: r for r in md_rows(text, "| scenario | requests |")}
    latency = {(r[0], r[1]): r for r in md_rows(text, "| scenario | metric |")}
    cache = {r[0]: r for r in md_rows(text, "| scenario | split by |")}
    for name, rows in csv.groupby("scenario"):
        ok = rows[rows["ok"] == 1]
        assert summary[name][1:3] == [str(len(rows)), str(len(ok))]
        assert summary[name][4] == f"{len(ok) / 50.0:.3f}"
        assert summary[name][5] == f"{ok['output_tokens'].sum() / 50.0:.1f}"
        failures = len(rows) - len(ok)
        assert summary[name][3] == (f"http_503 {failures}" if failures else "none")
        for metric, column in (("TTFT", "ttft_ms"), ("TPOT", "tpot_ms"), ("E2E", "e2e_ms")):
            expected = np.percentile(ok[column], [50, 90, 95, 99, 100])
            assert latency[(name, metric)][3:] == [f"{v:.2f}" for v in expected]
        gaps = np.concatenate([np.array(c.split(";"), float) for c in ok["itl_ms"]])
        assert latency[(name, "ITL")][2] == str(len(gaps))
        assert latency[(name, "ITL")][3:] == [
            f"{v:.2f}" for v in np.percentile(gaps, [50, 90, 95, 99, 100])
        ]
        if name == "batch_processing":  # cached tokens reported: split by them
            hits = ok[ok["cached_tokens"] > 0]
            assert cache[name][1] == "cached tokens"
        else:  # not reported: split by design
            hits = ok[ok["expected_hit"] == 1]
            assert cache[name][1] == "design"
        assert cache[name][2:4] == [str(len(hits)), str(len(ok) - len(hits))]
        if len(hits):
            assert cache[name][4] == f"{np.median(hits['ttft_ms']):.2f}"
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {r["scenario"] for r in data["summary"]} == {"batch_processing", "cold_start"}
    assert "| batch_processing | prefill |" in text  # the PD split


def test_html_is_one_self_contained_page_with_the_charts(run_dir: Path, tmp_path: Path) -> None:
    assert main(["report", str(run_dir), "-o", str(tmp_path / "out")]) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(
        list((tmp_path / "out/charts").glob("*.png"))
    )
    assert 'src="charts/' not in html and "<script" not in html
    assert (tmp_path / "out" / "report.md").exists()


def test_report_formats_are_resolved_by_name_through_the_registry() -> None:
    assert FORMATS.names() == ("md", "html", "json")
    assert resolve_formats(["both", "json"]) == ["md", "html", "json"]
    with pytest.raises(UnknownNameError, match="known: md, html, json"):
        resolve_formats(["pdf"])


def test_columns_get_explicit_dtypes_and_itl_is_parsed_on_demand(run_dir: Path) -> None:
    run = load_run(run_dir)
    frame = run.requests
    assert isinstance(frame["scenario"].dtype, pd.CategoricalDtype)
    assert isinstance(frame["failure"].dtype, pd.CategoricalDtype)
    assert frame["ok"].dtype == bool and frame["ttft_ms"].dtype == "float64"
    assert str(frame["prompt_tokens"].dtype) == "Int64"
    assert "itl" not in run.__dict__
    assert len(run.itl.of(frame[frame["ok"]])) == 5 * int(frame["ok"].sum())


def test_a_malformed_cell_is_one_line_naming_the_file_and_column(run_dir: Path) -> None:
    path = run_dir / "requests.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("ttft_ms")] = "fast"
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(KvswarmError) as error:
        load_run(run_dir)
    assert str(error.value) == f"{path}: column ttft_ms: line 4: 'fast' is not a float"


@pytest.mark.parametrize("value", ["1e30", "inf", "1e400", "9" * 25, "2.5"])
def test_a_number_that_is_no_integer_is_named_without_a_warning(
    run_dir: Path, value: str, recwarn: pytest.WarningsRecorder
) -> None:
    path = run_dir / "requests.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[2, "prompt_tokens"] = value
    frame.to_csv(path, index=False)
    with pytest.raises(KvswarmError) as error:
        load_run(run_dir)
    assert str(error.value) == f"{path}: column prompt_tokens: line 4: {value!r} is not an int"
    assert not recwarn.list


def test_a_missing_column_or_file_exits_2_in_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.read_csv(run_dir / "requests.csv", dtype=str, keep_default_na=False)
    frame.drop(columns=["e2e_ms"]).to_csv(run_dir / "requests.csv", index=False)
    assert main(["report", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip() == f"kvswarm: {run_dir}/requests.csv: column e2e_ms is missing "
        "(not a kvswarm requests.csv?)"
    )
    assert main(["compare", str(tmp_path / "nowhere")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_requests_csv_written_before_a_column_was_added_reads_it_as_empty(
    run_dir: Path,
) -> None:
    frame = pd.read_csv(run_dir / "requests.csv", dtype=str, keep_default_na=False)
    frame.drop(columns=["created_cache_tokens"]).to_csv(run_dir / "requests.csv", index=False)
    requests = read_requests(run_dir / "requests.csv")
    assert list(requests.columns) == list(CSV_COLUMNS)
    assert requests["created_cache_tokens"].isna().all()


def test_a_locust_csv_prefix_alone_gives_what_its_files_allow(tmp_path: Path) -> None:
    prefix = tmp_path / "run"
    columns = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
               "Average Response Time", "Min Response Time", "Max Response Time",
               "Average Content Size", "Requests/s", "Failures/s", "50%", "66%", "75%", "80%",
               "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]  # fmt: skip
    rows = [["LLM", "s", 100, 2, 600, 610, 500, 900, 32, 5.0, 0.1, 600, 0, 0, 0, 700, 750, 0,
             800, 0, 0, 900],
            ["TTFT", "s", 98, 0, 40, 45, 20, 90, 0, 4.9, 0, 40, 0, 0, 0, 60, 70, 0, 80, 0, 0, 90],
            ["", "Aggregated", 198, 2, 300, 300, 20, 900, 16, 9.9, 0.1, 300, 0, 0, 0, 700, 750,
             0, 800, 0, 0, 900]]  # fmt: skip
    pd.DataFrame(rows, columns=columns).to_csv(f"{prefix}_stats.csv", index=False)
    run = open_run(prefix, mode="pd_disaggregated")
    assert not run.has_requests and run.record.mode == "pd_disaggregated"
    assert main(["report", str(prefix), "-o", str(tmp_path / "out"), "--format", "md"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| s | 100 | 98 |" in text and "| s | TTFT | 98 | 40.00 |" in text


def test_the_report_gives_the_hit_rate_three_ways(run_dir: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from kvswarm.runrecord import read_run_record, write_run_record
    from kvswarm.sinks.server_metrics import DerivedFigure, ServerMetricsSection

    record = read_run_record(run_dir)
    sampled = ServerMetricsSection(
        interval_s=5.0,
        file="server_metrics.jsonl",
        derived={"prefix_cache_hit_rate": DerivedFigure(0.68, "Δhits / Δqueries", "ratio")},
    )
    write_run_record(run_dir, replace(record, server_metrics=sampled))
    assert main(["report", str(run_dir), "-o", str(tmp_path / "out"), "--format", "md"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    ok = (
        pd.read_csv(run_dir / "requests.csv")
        .query("ok == 1")
        .dropna(subset=["cached_tokens", "prompt_tokens"])
    )
    client = ok["cached_tokens"].sum() / ok["prompt_tokens"].sum()
    rows = {r[0]: r for r in md_rows(text, "| source | value | formula |")}
    assert rows["client: cached / prompt tokens in usage"][1] == f"{client:.1%}"
    assert rows["sampled window: prefix_cache_hit_rate"][1:] == ["68.0%", "Δhits / Δqueries"]
    assert "server counters" in rows


def test_a_cut_off_last_line_is_left_out_and_the_summary_says_so(run_dir: Path) -> None:
    """What a run killed while writing leaves behind: every whole row still reads."""
    from kvswarm.analysis.summary import format_summary, summarize

    whole = len(read_requests(run_dir / "requests.csv"))
    text = (run_dir / "requests.csv").read_bytes()
    last_line_start = text.rstrip(b"\n").rfind(b"\n") + 1
    (run_dir / "requests.csv").write_bytes(text[: last_line_start + 25])
    run = load_run(run_dir)
    assert len(run.requests) == whole - 1
    assert "cut-off line" in format_summary(summarize(run), str(run_dir), run)


def test_a_whole_file_reads_every_row_and_says_nothing_of_a_cut(run_dir: Path) -> None:
    run = load_run(run_dir)
    assert not run.requests.attrs["torn_last_line"]
