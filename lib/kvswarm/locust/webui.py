"""kvswarm in Locust's web UI and HTML report, through Locust's own extension points.

`KvswarmWebUi(plugin).install()` (the plugin calls it when the web UI is on):

- a **kvswarm tab**: `web_ui.template_args["extendedTabs"]` and `["extendedTables"]`
  declare it; its rows (`kvswarm.locust.llmtable`) ride on Locust's own `/stats/requests`
  poll as `extended_stats` (a Flask `after_request` hook, as Locust's extend-web-UI example
  does), so the tab refreshes with Locust's tables. On a master they cover every worker:
  the rows come from the records the master keeps;
- **downloads** (`extendedCsvFiles`, Locust's Download Data page): the current or last
  run's requests.csv and run.json, and kvswarm's HTML report (`kvswarm report`, run in a
  child process so the load is not held up), on routes of `web_ui.app` behind
  `auth_required_if_enabled`;
- **live charts** (`/kvswarm/charts`, linked from the same page; Locust 2.47's React UI
  has no chart extension point): TTFT and TPOT p50/p99, output tokens/s and the cached
  share per scenario over the test, drawn from `/kvswarm/timeline`
  (`kvswarm.locust.timeline`);
- Locust's **Download Report** (`/stats/report`) gets the kvswarm table appended (the same
  `after_request` hook: `locust/html.py` has no extension hook).

`append_to_html_report(path, run_path)`: Locust writes `--html` after the test and before
its `quit` event, with no hook of its own; the plugin's `quit` listener appends the
kvswarm table, computed exactly from the run's requests.csv, to that file.
"""

from __future__ import annotations

import html
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvswarm.live import LiveLatency
from kvswarm.locust.llmtable import (
    COLUMNS,
    TableRow,
    exact_rows,
    live_rows,
    note_row,
    table_html,
)
from kvswarm.locust.tally import LiveTally
from kvswarm.locust.timeline import LiveTimeline

if TYPE_CHECKING:
    from kvswarm.locust.plugin import KvswarmPlugin
    from kvswarm.rundir import RunDirectory
    from kvswarm.sinks.server_metrics import ServerMetricsSection

__all__ = ["TAB_KEY", "KvswarmWebUi", "append_to_html_report", "watch_html_report"]

TAB_KEY = "kvswarm"
DOWNLOADS = (
    ("requests.csv", "kvswarm requests.csv (current or last run)"),
    ("run.json", "kvswarm run.json (current or last run)"),
    ("report.html", "kvswarm report (HTML, current or last run)"),
)
CHARTS_TITLE = "kvswarm live charts (TTFT, TPOT, tokens/s, cached share over time)"
CHARTS_PAGE = Path(__file__).with_name("charts.html")
LIVE_NOTE = (
    "Live view of the records the results-owning process has received (on a master, every "
    "worker's): percentiles from HDR histograms (0.1% precision), ITL as each request's mean "
    "gap; output tok/s since the test started. Exact figures: requests.csv, kvswarm report."
)
EXACT_NOTE = (
    "Computed from the run's requests.csv over the measured window (warm-up excluded): "
    "exact percentiles, ITL over every inter-token gap."
)


class KvswarmWebUi:
    """The kvswarm tab, downloads and report table of one plugin's web UI."""

    def __init__(self, plugin: KvswarmPlugin) -> None:
        self.plugin = plugin
        self.tally = LiveTally()
        self.timeline = LiveTimeline(time.time())
        self.run_path: Path | None = None
        self._started_unix_s: float | None = None
        self._server_cache: tuple[int, ServerMetricsSection | None] = (-1, None)
        from kvswarm.sinks.attach import default_readings

        # Its own readings: a CPU reading is the share since the previous one of the same
        # reader, so the exporter's scrapes and the tab's polls must not share one.
        self._readings = default_readings(plugin)

    def install(self) -> None:
        web_ui = self.plugin.environment.web_ui
        web_ui.template_args["extendedTabs"] = [{"title": "kvswarm", "key": TAB_KEY}]
        web_ui.template_args["extendedTables"] = [
            {"key": TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
        ]
        web_ui.template_args["extendedCsvFiles"] = [
            *({"href": f"./kvswarm/{name}", "title": title} for name, title in DOWNLOADS),
            {"href": "./kvswarm/charts", "title": CHARTS_TITLE},
        ]
        web_ui.app.after_request(self._after_request)
        self._add_download_routes()
        self._add_chart_routes()
        events = self.plugin.events
        events.run_opened.add_listener(self._on_run_opened)
        events.record_kept.add_listener(self._on_record_kept)

    def _on_run_opened(self, run: RunDirectory, **_kwargs: Any) -> None:
        self.tally = LiveTally()
        self.timeline = LiveTimeline(run.record.window.start_unix_s)
        self.run_path = run.path
        self._started_unix_s = run.record.window.start_unix_s
        self._server_cache = (-1, None)

    def _on_record_kept(self, record: Any, **_kwargs: Any) -> None:
        self.tally.add(record)
        self.timeline.add(record)

    # -- the tab's rows ------------------------------------------------------------------

    def rows(self) -> list[TableRow]:
        """The tab's rows now: scenarios, then the load generators and the server."""
        live = self.plugin.live or LiveLatency()
        elapsed = time.time() - self._started_unix_s if self._started_unix_s else None
        rows = live_rows(
            live.percentiles_ms(), self.tally, elapsed, _read(self._readings.in_flight)
        )
        cpu = _read(self._readings.cpu)
        if cpu:
            shares = ", ".join(f"{name} {share * 100:.0f}%" for name, share in sorted(cpu.items()))
            rows.append(note_row("load generators", f"CPU (1 core = 100%): {shares}"))
        server = self._server_figures()
        if server:
            rows.append(note_row("server (window so far)", server))
        return rows

    def _server_figures(self) -> str:
        exporter = self.plugin.exporter
        if exporter is None:
            return ""
        sampler = exporter.sampler
        if sampler is None:
            section = exporter.section
        else:
            # Recomputed only when the sampler has read something new.
            count = sum(r.snapshots for r in sampler.readings.values())
            if self._server_cache[0] != count:
                self._server_cache = (count, sampler.window_so_far())
            section = self._server_cache[1]
        return server_figures(section, self.plugin.engine.metrics) if section else ""

    # -- Flask ---------------------------------------------------------------------------

    def _after_request(self, response: Any) -> Any:
        from flask import request

        if request.path == "/stats/requests" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [
                {"key": TAB_KEY, "data": [row.to_json() for row in self.rows()]}
            ]
            response.set_data(_json(data))
        elif request.path == "/stats/report" and response.status_code == 200:
            page = response.get_data(as_text=True)
            section = table_html(self.rows(), "kvswarm", LIVE_NOTE)
            response.set_data(_with_section(page, section))
        return response

    def _add_download_routes(self) -> None:
        web_ui = self.plugin.environment.web_ui

        @web_ui.app.route("/kvswarm/<any('requests.csv', 'run.json', 'report.html'):name>")
        @web_ui.auth_required_if_enabled
        def kvswarm_download(name: str) -> Any:
            """A file of the current or last run (attachment)."""
            from flask import abort, send_file

            if self.run_path is None:
                abort(404, "no kvswarm run yet: start a test first")
            if name == "report.html":
                return send_file(
                    self._write_report(), as_attachment=True, download_name="kvswarm-report.html"
                )
            if self.plugin.run is not None:
                self.plugin.run.writer.flush()
            return send_file(self.run_path / name, as_attachment=True, max_age=0)

    def _add_chart_routes(self) -> None:
        web_ui = self.plugin.environment.web_ui

        @web_ui.app.route("/kvswarm/charts")
        @web_ui.auth_required_if_enabled
        def kvswarm_charts() -> Any:
            """The live charts page (it polls /kvswarm/timeline)."""
            return CHARTS_PAGE.read_text(encoding="utf-8")

        @web_ui.app.route("/kvswarm/timeline")
        @web_ui.auth_required_if_enabled
        def kvswarm_timeline() -> Any:
            """The charts' data: per scenario, the test's closed intervals so far."""
            from flask import Response

            return Response(_json(self.timeline.points()), mimetype="application/json")

    def _write_report(self) -> Path:
        """kvswarm's HTML report of the run, written by `kvswarm report` in a child process
        (gevent's subprocess: the users' greenlets run meanwhile)."""
        out = Path(tempfile.mkdtemp(prefix="kvswarm-report-"))
        assert self.run_path is not None
        subprocess.run(
            [sys.executable, "-m", "kvswarm.cli", "report", str(self.run_path),
             "--format", "html", "--output", str(out)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        return out / "report.html"


def server_figures(section: ServerMetricsSection, metrics: Any) -> str:
    """The server's figures over the window: prefix-cache hit rate, KV cache usage (last
    and max reading), Mooncake keys (last reading); "" where none was scraped."""
    from kvswarm.engines.mooncake import MOONCAKE_MASTER_METRICS
    from kvswarm.metrics_sources.snapshot import split_key

    parts = []
    hit = section.derived.get("prefix_cache_hit_rate")
    if hit is not None and hit.value is not None:
        parts.append(f"prefix-cache hit rate {hit.value * 100:.1f}%")
    usage = _gauges(section, metrics.kv_cache_usage, split_key)
    if usage:
        last = max(g.end for g in usage.values())
        peak = max(g.max for g in usage.values())
        parts.append(f"KV cache usage {last * 100:.1f}% (max {peak * 100:.1f}%)")
    keys = _gauges(section, MOONCAKE_MASTER_METRICS.key_count, split_key)
    if keys:
        parts.append(f"Mooncake keys {sum(g.end for g in keys.values()):g}")
    if not parts and section.warnings:
        parts.append(section.warnings[0])
    return "; ".join(parts)


def _gauges(section: ServerMetricsSection, name: str | None, split_key: Any) -> dict[str, Any]:
    if not name:
        return {}
    return {
        f"{source}:{key}": stats
        for source, window in section.sources.items()
        for key, stats in window.gauges.items()
        if split_key(key)[0] == name
    }


def _read(reading: Any) -> Mapping[str, float]:
    try:
        return reading() if reading is not None else {}
    except Exception:  # a reading must never break Locust's stats poll
        return {}


def _json(data: Any) -> bytes:
    import orjson

    return orjson.dumps(data)


def _with_section(page: str, section: str) -> str:
    at = page.rfind("</body>")
    return page[:at] + section + page[at:] if at >= 0 else page + section


def watch_html_report(plugin: KvswarmPlugin) -> None:
    """With Locust's `--html`: append the kvswarm table of the last run to that file when
    Locust quits (after it wrote the file). A failure is a warning: the run's own files
    are complete by then."""
    html_file = getattr(plugin.environment.parsed_options, "html_file", None)
    if not html_file:
        return
    runs: list[Path] = []

    def on_run_opened(run: RunDirectory, **_kwargs: Any) -> None:
        runs.append(run.path)

    def on_quit(**_kwargs: Any) -> None:
        # Locust substituted {u}, {r}, {t} in the option when it wrote the file.
        path = Path(plugin.environment.parsed_options.html_file)
        if not runs:
            return
        try:
            append_to_html_report(path, runs[-1])
        except Exception as exc:  # the report is a courtesy; the run's files are written
            print(f"kvswarm: warning: {path}: kvswarm table not added ({exc})", file=sys.stderr)

    plugin.events.run_opened.add_listener(on_run_opened)
    plugin.environment.events.quit.add_listener(on_quit)


def append_to_html_report(path: Path, run_path: Path) -> None:
    """Append the kvswarm table of the closed run at `run_path` to Locust's `--html` file."""
    if not path.is_file():
        return
    where = html.escape(str(run_path))
    links = [
        f"run directory: <code>{where}</code> (requests.csv, run.json); "
        f"<code>kvswarm report {where}</code> writes kvswarm's full report"
    ]
    section = table_html(exact_rows(run_path), "kvswarm", EXACT_NOTE, links)
    page = path.read_text(encoding="utf-8")
    path.write_text(_with_section(page, section), encoding="utf-8")
