"""The kvswarm table: per scenario and mode, the LLM figures of a test, as the web UI's
kvswarm tab and Locust's HTML report show them.

One row per scenario and mode (`TableRow`): requests, failures by category, p50 / p90 / p99
of TTFT, TPOT, ITL and E2E (ms), output tokens/s, designed hit share, server-reported
cached share and the PD split medians; then one row for the load generators' CPU and one
for the server's windowed figures (`note_row`). Rows are built two ways:

- `live_rows`: while a test runs, from the live HDR view (`LiveLatency`, 0.1% precision;
  its ITL is the per-request mean gap) and the running counts (`LiveTally`);
- `exact_rows`: from a closed run's requests.csv (the analysis package's summary: exact
  percentiles, ITL over every gap), for the `--html` report.

`COLUMNS` is the table's structure (key, title) as Locust's `extendedTables` takes it;
`table_html` renders rows as a self-contained HTML section.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kvswarm.live import LIVE_PERCENTILES, METRICS
from kvswarm.locust.tally import PD_PHASES, LiveTally, ScenarioTally

__all__ = [
    "COLUMNS",
    "TableRow",
    "exact_rows",
    "latency_cell",
    "live_rows",
    "note_row",
    "parse_latency_cell",
    "table_html",
]

# Keys are single lowercase words: Locust's front end camel-cases the JSON it receives.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("scenario", "Scenario"),
    ("mode", "Mode"),
    ("requests", "Requests"),
    ("failures", "Failures"),
    ("ttft", "TTFT p50 / p90 / p99 (ms)"),
    ("tpot", "TPOT p50 / p90 / p99 (ms)"),
    ("itl", "ITL p50 / p90 / p99 (ms)"),
    ("e2e", "E2E p50 / p90 / p99 (ms)"),
    ("tokens", "Output tok/s"),
    ("designed", "Designed hits"),
    ("cached", "Cached share"),
    ("pd", "PD p50 prefill / transfer / decode (ms)"),
    ("detail", "Detail"),
)


@dataclass(frozen=True)
class TableRow:
    """One row; every cell is text as shown ("" where nothing applies)."""

    scenario: str
    mode: str = ""
    requests: str = ""
    failures: str = ""
    ttft: str = ""
    tpot: str = ""
    itl: str = ""
    e2e: str = ""
    tokens: str = ""
    designed: str = ""
    cached: str = ""
    pd: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def latency_cell(values: Sequence[float | None]) -> str:
    """The cell "p50 / p90 / p99" (ms); "" when nothing was measured."""
    if all(v is None for v in values):
        return ""
    return " / ".join(_ms(v) for v in values)


def parse_latency_cell(cell: str) -> tuple[float | None, ...]:
    """The values `latency_cell` wrote (for tests and scripts reading the tab)."""
    return tuple(None if part == "-" else float(part) for part in cell.split(" / "))


def _share(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def _failures(failures: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(failures.items()))


def _cancelled(count: int) -> str:
    return f"{count} cancelled" if count else ""


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def note_row(label: str, detail: str) -> TableRow:
    """A row that is not a scenario: the load generators, the server."""
    return TableRow(scenario=label, detail=detail)


def live_rows(
    percentiles_ms: Mapping[str, Mapping[str, Mapping[str, Any]]],
    tally: LiveTally,
    elapsed_s: float | None,
    in_flight: Mapping[str, float],
) -> list[TableRow]:
    """Rows of a running test: `percentiles_ms` as `LiveLatency.percentiles_ms()` gives
    them; `elapsed_s` the seconds the test has run (output tokens/s over them)."""
    rows = []
    for (scenario, mode), counts in sorted(tally.scenarios.items()):
        latency = percentiles_ms.get(scenario, {})
        cells = {
            metric: latency_cell(
                [latency[metric][f"p{p:g}"] for p in LIVE_PERCENTILES] if metric in latency else []
            )
            for metric in METRICS
        }
        tokens = counts.output_tokens / elapsed_s if elapsed_s else None
        flying = in_flight.get(scenario)
        detail = [f"{flying:g} in flight" if flying else "", _cancelled(counts.cancelled)]
        rows.append(
            TableRow(
                scenario=scenario,
                mode=mode,
                requests=str(counts.requests),
                failures=_failures(counts.failures),
                tokens=_rate(tokens),
                designed=_share(counts.designed_hit_share),
                cached=_share(counts.cached_share),
                pd=_pd_cell(counts),
                detail=", ".join(part for part in detail if part),
                **cells,
            )
        )
    return rows


def _pd_cell(counts: ScenarioTally) -> str:
    medians = [counts.pd_median_ms(phase) for phase in PD_PHASES]
    return latency_cell(medians)


def exact_rows(run_path: Any) -> list[TableRow]:
    """Rows of a closed run, computed exactly from its requests.csv (and run.json)."""
    # The analysis package imports pandas: loaded when a report is written, not at import.
    from kvswarm.analysis.metrics import PD_COLUMNS, median, successful
    from kvswarm.analysis.runs import load_run
    from kvswarm.analysis.summary import summarize

    run = load_run(run_path)
    scenarios = run.scenarios
    rows = []
    for summary in summarize(run):
        if summary.scenario not in scenarios:
            continue  # the "all" line of the text summary
        ok = successful(scenarios[summary.scenario])
        pd = latency_cell([median(ok[column]) for column in PD_COLUMNS.values()])
        rows.append(
            TableRow(
                scenario=summary.scenario,
                mode=run.record.mode,
                requests=str(summary.requests),
                failures=_failures(summary.failures),
                tokens=_rate(summary.output_tokens_per_s),
                designed=_share(summary.designed_hit_share),
                cached=_share(summary.cached_share),
                pd=pd,
                detail=_cancelled(summary.cancelled),
                **{
                    metric: latency_cell([summary.latency[metric][p] for p in (50, 90, 99)])
                    for metric in METRICS
                },
            )
        )
    return rows


_STYLE = """
#kvswarm { font-family: system-ui, sans-serif; margin: 2em; }
#kvswarm table { border-collapse: collapse; font-size: 0.9em; }
#kvswarm th, #kvswarm td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
#kvswarm th { background: #f4f4f4; }
#kvswarm p { color: #555; max-width: 60em; }
"""


def table_html(rows: Sequence[TableRow], title: str, note: str, links: Sequence[str] = ()) -> str:
    """A `<section id="kvswarm">` holding the table, `note` under it, and `links`
    (already HTML) after it."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(getattr(row, key))}</td>" for key, _ in COLUMNS)
        + "</tr>"
        for row in rows
    )
    after = "".join(f"<li>{link}</li>" for link in links)
    return (
        f'<section id="kvswarm"><style>{_STYLE}</style><h2>{html.escape(title)}</h2>'
        f'<table class="kvswarm-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        f"</table><p>{html.escape(note)}</p>"
        + (f"<ul>{after}</ul>" if after else "")
        + "</section>"
    )
