"""A Grafana dashboard drawn as one PNG from a Prometheus's data, without Grafana.

Every time-series panel's queries are run over a time range with Prometheus's HTTP API
(`/api/v1/query_range`), and the panels are drawn with matplotlib where the dashboard's
`gridPos` puts them (24 columns), with their titles, units and legends (`legendFormat`).
Template variables take their current value (`All` becomes the variable's `allValue`).
It is the dashboard's layout and queries over real data, not a Grafana screenshot: only
time-series panels and row headers are drawn, in one style.

    python -m kvswarm.sinks.dashboard_png --prometheus http://127.0.0.1:9090 \\
        --out dashboard.png --last 10m

- `dashboard_layout(dashboard) -> list[PanelLayout]`: rows and panels, queries expanded;
- `PrometheusRange(url).query_range(expr, when) -> list[RawSeries]`;
- `fetch_panels(layout, prometheus, when) -> list[PanelData]`: every panel's series,
  named by their legends, and the queries Prometheus refused;
- `draw(title, panels, when) -> Figure`, `save_png(figure, path)`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib import dates, ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from PIL import Image

from kvswarm.errors import KvswarmError

__all__ = [
    "GridPos",
    "PanelData",
    "PanelLayout",
    "PanelQuery",
    "PrometheusRange",
    "QueryError",
    "RawSeries",
    "Series",
    "TimeRange",
    "dashboard_layout",
    "draw",
    "expand_variables",
    "fetch_panels",
    "format_value",
    "legend_name",
    "parse_duration",
    "save_png",
    "variable_values",
]

GRID_COLUMNS = 24
DEFAULT_DASHBOARD = Path(__file__).resolve().parents[3] / "configs/grafana/dashboards/kvswarm.json"
POINTS = 240  # per series, over the whole range

# Figure geometry, in inches: 18 wide, a grid unit a little taller than Grafana's 30 px
FIGURE_WIDTH_IN = 18.0
UNIT_HEIGHT_IN = 0.38
HEADER_IN = 0.75
GAP_IN = 0.05
PAD_IN = {"left": 0.62, "right": 0.15, "top": 0.34, "bottom": 0.3}
LEGEND_FONT = 6.5
LEGEND_CHAR_IN = 0.05  # the mean width of a legend character, about
LEGEND_HANDLE_IN = 0.4  # a legend entry's line, gap and column spacing
LEGEND_COLUMNS = 4
LEGEND_ROW_IN = 0.125
LEGEND_SHARE = 0.4  # of a panel's height, at most
DPI = 90

# Grafana's dark theme and its classic palette.
PAGE = "#111217"
PANEL = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
MUTED = "#8e8ea0"
ERROR = "#f2495c"
PALETTE = (
    "#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0",
    "#508642", "#cca300", "#447ebc", "#c15c17", "#890f02", "#0a437c", "#6d1f62", "#584477",
    "#b7dbab", "#f4d598", "#70dbed", "#f9ba8f", "#f29191", "#82b5d8", "#e5a8e2", "#aea2e0",
)  # fmt: skip


@dataclass(frozen=True)
class GridPos:
    """A panel's place on Grafana's grid: columns (of 24) and rows of 30 px."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class PanelQuery:
    """A query of a panel, template variables expanded."""

    expr: str
    legend: str


@dataclass(frozen=True)
class PanelLayout:
    """A row header (`type == "row"`) or a panel with its unit and queries."""

    title: str
    type: str
    grid: GridPos
    unit: str = ""
    queries: tuple[PanelQuery, ...] = ()

    @property
    def is_row(self) -> bool:
        return self.type == "row"


@dataclass(frozen=True)
class TimeRange:
    """What every query reads: from `start_s` to `end_s` (Unix seconds), a point each
    `step_s`."""

    start_s: float
    end_s: float
    step_s: float

    @classmethod
    def last(cls, seconds: float, end_s: float | None = None, points: int = POINTS) -> TimeRange:
        """The `seconds` up to `end_s` (default: now), about `points` points a series."""
        end = time.time() if end_s is None else end_s
        return cls(end - seconds, end, max(1.0, math.ceil(seconds / points)))


@dataclass(frozen=True)
class RawSeries:
    """One series of a range query's answer: its labels and its points."""

    labels: Mapping[str, str]
    times_s: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Series:
    """A series as a panel draws it: named by the query's legend."""

    name: str
    times_s: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class PanelData:
    """A panel and what its queries returned; `errors` holds the queries Prometheus
    refused, with its message."""

    layout: PanelLayout
    series: tuple[Series, ...]
    errors: tuple[str, ...] = ()


class QueryError(Exception):
    """Prometheus refused a query (bad PromQL, a limit): its own message."""


# -- the dashboard's JSON ----------------------------------------------------------------


def variable_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Each template variable's current value as a query would read it: `All` becomes
    the variable's `allValue` (`.*` when it has none)."""
    values = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        current = variable.get("current") or {}
        value = current.get("value", "")
        if isinstance(value, list):
            value = "|".join(value)
        if value == "$__all":
            value = variable.get("allValue") or ".*"
        values[variable["name"]] = str(value)
    return values


VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def expand_variables(text: str, values: Mapping[str, str]) -> str:
    """`text` with `$name` and `${name}` replaced by their values; unknown names stay."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return VARIABLE.sub(replace, text)


def _grid(panel: Mapping[str, Any]) -> GridPos:
    grid = panel["gridPos"]
    return GridPos(int(grid["x"]), int(grid["y"]), int(grid["w"]), int(grid["h"]))


def dashboard_layout(dashboard: Mapping[str, Any]) -> list[PanelLayout]:
    """The dashboard's rows and panels in its order, their queries' variables expanded.
    Panels inside a collapsed row are hidden, as Grafana shows them."""
    values = variable_values(dashboard)
    found = []
    for panel in dashboard.get("panels", []):
        queries = tuple(
            PanelQuery(
                expand_variables(target["expr"], values),
                target.get("legendFormat", ""),
            )
            for target in panel.get("targets", [])
            if target.get("expr") and not target.get("hide")
        )
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        found.append(
            PanelLayout(panel.get("title", ""), panel["type"], _grid(panel), unit, queries)
        )
    return found


# -- Prometheus --------------------------------------------------------------------------


def _get_json(url: str) -> Any:
    """The JSON answer of a GET; Prometheus answers a refused query with 4xx and JSON."""
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as exc:
        try:
            return json.load(exc)
        except ValueError:
            raise KvswarmError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise KvswarmError(f"cannot reach Prometheus: {url.split('?')[0]}: {reason}") from None


class PrometheusRange:
    """Range queries against one Prometheus (`fetch` takes a URL and returns its JSON
    answer; the default is an HTTP GET)."""

    def __init__(self, url: str, fetch: Callable[[str], Any] = _get_json) -> None:
        self.url = url.rstrip("/")
        self.fetch = fetch

    def query_range(self, expr: str, when: TimeRange) -> list[RawSeries]:
        """Every series of `expr` over `when`; QueryError when Prometheus refuses it."""
        parameters = {
            "query": expr,
            "start": f"{when.start_s:.3f}",
            "end": f"{when.end_s:.3f}",
            "step": f"{when.step_s:g}",
        }
        answer = self.fetch(f"{self.url}/api/v1/query_range?{urllib.parse.urlencode(parameters)}")
        if answer.get("status") != "success":
            raise QueryError(f"{answer.get('errorType', 'error')}: {answer.get('error', answer)}")
        return [
            RawSeries(
                dict(result.get("metric", {})),
                tuple(float(t) for t, _v in result["values"]),
                tuple(float(v) for _t, v in result["values"]),
            )
            for result in answer["data"]["result"]
        ]


LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend_name(legend: str, labels: Mapping[str, str], expr: str) -> str:
    """A series' name as Grafana gives it: `legendFormat` with `{{label}}` replaced by
    the series' label (empty when it has none); without a format, `name{labels}`."""
    if legend.strip():
        return " ".join(LEGEND_LABEL.sub(lambda m: labels.get(m.group(1), ""), legend).split())
    others = {k: v for k, v in labels.items() if k != "__name__"}
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(others.items()))
    name = labels.get("__name__", "")
    return f"{name}{{{inner}}}" if name or inner else expr


def fetch_panels(
    layout: Sequence[PanelLayout], prometheus: PrometheusRange, when: TimeRange
) -> list[PanelData]:
    """Every panel's series over `when` (rows have none), in the layout's order."""
    found = []
    for panel in layout:
        series: list[Series] = []
        errors: list[str] = []
        for query in panel.queries:
            try:
                answer = prometheus.query_range(query.expr, when)
            except QueryError as exc:
                errors.append(f"{query.expr}: {exc}")
                continue
            series += [
                Series(legend_name(query.legend, raw.labels, query.expr), raw.times_s, raw.values)
                for raw in answer
            ]
        found.append(PanelData(panel, tuple(series), tuple(errors)))
    return found


# -- units -------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:.3g}"


def _scaled(value: float, steps: Sequence[tuple[float, str]]) -> str:
    """`value` in the largest unit of `steps` (factor, suffix) it reaches."""
    for factor, suffix in reversed(steps):
        if abs(value) >= factor:
            return f"{_number(value / factor)}{suffix}"
    return f"{_number(value / steps[0][0])}{steps[0][1]}"


SECONDS = ((1e-6, " µs"), (1e-3, " ms"), (1.0, " s"), (60.0, " min"), (3600.0, " h"))
BYTES = ((1, " B"), (1024, " KiB"), (1024**2, " MiB"), (1024**3, " GiB"), (1024**4, " TiB"))
SHORT = ((1, ""), (1e3, " K"), (1e6, " Mil"), (1e9, " Bil"))
RATES = {"reqps": " req/s", "ops": " ops/s", "rps": " rd/s", "wps": " wr/s"}


def format_value(value: float, unit: str) -> str:
    """An axis tick in Grafana's unit (`s`, `ms`, `percentunit`, `percent`, `bytes`,
    `short`, `reqps`, `ops`, ...), each tick scaled on its own as Grafana does."""
    if value == 0:
        return "0"
    if unit == "s":
        return _scaled(value, SECONDS)
    if unit == "ms":
        return _scaled(value / 1000, SECONDS)
    if unit == "percentunit":
        return f"{_number(value * 100)}%"
    if unit == "percent":
        return f"{_number(value)}%"
    if unit == "bytes":
        return _scaled(value, BYTES)
    if unit in RATES:
        return f"{_scaled(value, SHORT)}{RATES[unit]}"
    return _scaled(value, SHORT)


# -- drawing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Box:
    """A rectangle on the figure, in inches from its top-left corner."""

    left: float
    top: float
    width: float
    height: float

    def fraction(self, figure_height_in: float) -> tuple[float, float, float, float]:
        """(left, bottom, width, height) as fractions of the figure, as matplotlib wants."""
        return (
            self.left / FIGURE_WIDTH_IN,
            1 - (self.top + self.height) / figure_height_in,
            self.width / FIGURE_WIDTH_IN,
            self.height / figure_height_in,
        )


def _cell(grid: GridPos) -> _Box:
    column = FIGURE_WIDTH_IN / GRID_COLUMNS
    return _Box(
        grid.x * column + GAP_IN,
        HEADER_IN + grid.y * UNIT_HEIGHT_IN + GAP_IN,
        grid.w * column - 2 * GAP_IN,
        grid.h * UNIT_HEIGHT_IN - 2 * GAP_IN,
    )


@dataclass(frozen=True)
class _LegendPlan:
    """What a panel's legend shows: its entries (names cut to fit their column, the last
    one `+N more` when not all fit) in `columns` and `rows`."""

    names: tuple[str, ...]
    columns: int
    rows: int


def _legend_plan(cell: _Box, names: Sequence[str]) -> _LegendPlan:
    """As many columns as the longest name allows, rows up to LEGEND_SHARE of the panel."""
    if not names:
        return _LegendPlan((), 1, 0)
    width = cell.width - PAD_IN["left"]
    longest = max(len(name) for name in names) * LEGEND_CHAR_IN + LEGEND_HANDLE_IN
    columns = max(1, min(len(names), LEGEND_COLUMNS, int(width // longest)))
    fits = max(4, int((width / columns - LEGEND_HANDLE_IN) / LEGEND_CHAR_IN))
    cut = [name if len(name) <= fits else name[: fits - 1] + "…" for name in names]
    rows = min(max(1, int(cell.height * LEGEND_SHARE // LEGEND_ROW_IN)), -(-len(cut) // columns))
    room = columns * rows
    if len(cut) > room:
        cut = [*cut[: room - 1], f"+{len(cut) - room + 1} more"]
    return _LegendPlan(tuple(cut), columns, rows)


def _with_gaps(series: Series, step_s: float) -> tuple[list[datetime], list[float]]:
    """The series' points as datetimes, a NaN wherever points are missing, so the line
    breaks there as Grafana's does."""
    times: list[datetime] = []
    values: list[float] = []
    previous = None
    for t, v in zip(series.times_s, series.values, strict=True):
        if previous is not None and t - previous > 1.5 * step_s:
            times.append(datetime.fromtimestamp(previous + step_s))
            values.append(math.nan)
        times.append(datetime.fromtimestamp(t))
        values.append(v)
        previous = t
    return times, values


class _BinaryLocator(ticker.MaxNLocator):
    """Ticks at round numbers of the power of 1024 the axis reaches (32 MiB, not 33.6 MB)."""

    def tick_values(self, vmin: float, vmax: float) -> Any:
        largest = max(abs(vmin), abs(vmax), 1.0)
        scale = 1024 ** int(math.log(largest, 1024))
        return super().tick_values(vmin / scale, vmax / scale) * scale


def _style(axes: Axes, unit: str, when: TimeRange) -> None:
    axes.set_facecolor(PANEL)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.grid(color=TEXT, alpha=0.12, linewidth=0.6)
    axes.tick_params(colors=MUTED, labelsize=7, length=0)
    axes.set_xlim(datetime.fromtimestamp(when.start_s), datetime.fromtimestamp(when.end_s))
    axes.xaxis.set_major_locator(dates.AutoDateLocator(minticks=3, maxticks=7))
    axes.xaxis.set_major_formatter(dates.DateFormatter("%H:%M:%S"))
    locator_type = _BinaryLocator if unit == "bytes" else ticker.MaxNLocator
    axes.yaxis.set_major_locator(locator_type(nbins=4, steps=[1, 2, 2.5, 5, 10], min_n_ticks=2))
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: format_value(v, unit)))


def _legend(axes: Axes, plan: _LegendPlan, lines: Sequence[Line2D], cell: _Box) -> None:
    """The legend below the axes, under the time ticks, in rows as Grafana lists it."""
    shown = list(lines[: len(plan.names)])
    if len(lines) > len(plan.names):
        shown[-1] = Line2D([], [], color=PANEL)  # the `+N more` entry
    # matplotlib fills a legend column by column: reorder so it reads row by row.
    order = [r * plan.columns + c for c in range(plan.columns) for r in range(plan.rows)]
    order = [i for i in order if i < len(shown)]
    below = PAD_IN["bottom"] * 0.8 / _axes_height(cell, plan.rows)
    axes.legend(
        [shown[i] for i in order], [plan.names[i] for i in order], loc="upper left",
        bbox_to_anchor=(0, -below), ncol=plan.columns, frameon=False, fontsize=LEGEND_FONT,
        labelcolor=TEXT, handlelength=1.2, handletextpad=0.4, columnspacing=1.0,
        borderaxespad=0, borderpad=0, labelspacing=0.3,
    )  # fmt: skip


def _axes_height(cell: _Box, legend_rows: int) -> float:
    return cell.height - PAD_IN["top"] - PAD_IN["bottom"] - legend_rows * LEGEND_ROW_IN


def _axes_box(cell: _Box, legend_rows: int) -> _Box:
    return _Box(
        cell.left + PAD_IN["left"],
        cell.top + PAD_IN["top"],
        cell.width - PAD_IN["left"] - PAD_IN["right"],
        _axes_height(cell, legend_rows),
    )


def _background(figure: Figure, cell: _Box, height_in: float) -> None:
    left, bottom, width, height = cell.fraction(height_in)
    figure.add_artist(
        Rectangle((left, bottom), width, height, transform=figure.transFigure,
                  facecolor=PANEL, edgecolor=BORDER, linewidth=0.8, zorder=-1)
    )  # fmt: skip


def _notice(axes: Axes, data: PanelData) -> None:
    """A refused query's message, else `No data`, in the middle of the panel."""
    if data.errors:
        text, color, size = "query failed: " + data.errors[0][:160], ERROR, 7
    else:
        text, color, size = "No data", MUTED, 10
    axes.text(0.5, 0.5, text, transform=axes.transAxes, ha="center", va="center",
              color=color, fontsize=size, wrap=True)  # fmt: skip


def _draw_panel(figure: Figure, height_in: float, data: PanelData, when: TimeRange) -> Axes:
    cell = _cell(data.layout.grid)
    _background(figure, cell, height_in)
    shown = [s for s in data.series if s.times_s]
    plan = _legend_plan(cell, [s.name for s in shown])
    axes = figure.add_axes(_axes_box(cell, plan.rows).fraction(height_in))
    _style(axes, data.layout.unit, when)
    axes.set_title(data.layout.title, loc="left", fontsize=9, color=TEXT, pad=6)
    lines = []
    for number, series in enumerate(shown):
        times, values = _with_gaps(series, when.step_s)
        (line,) = axes.plot(times, values, color=PALETTE[number % len(PALETTE)], lw=1.1)
        lines.append(line)
    if lines:
        _legend(axes, plan, lines, cell)
    if data.errors or not lines:
        _notice(axes, data)
    return axes


def _draw_row(figure: Figure, height_in: float, row: PanelLayout) -> None:
    cell = _cell(row.grid)
    left, bottom, _width, height = cell.fraction(height_in)
    figure.text(left, bottom + height / 2, row.title, color=TEXT, fontsize=11,
                fontweight="bold", va="center")  # fmt: skip


def _when_text(when: TimeRange) -> str:
    start, end = (datetime.fromtimestamp(t) for t in (when.start_s, when.end_s))
    return f"{start:%Y-%m-%d %H:%M:%S} to {end:%H:%M:%S}, a point every {when.step_s:g} s"


def draw(title: str, panels: Sequence[PanelData], when: TimeRange, subtitle: str = "") -> Figure:
    """The panels on one figure, each where its gridPos puts it; the figure is as tall as
    the grid. Every time-series axes is titled with its panel's title."""
    bottom = max((p.layout.grid.y + p.layout.grid.h for p in panels), default=0)
    height_in = HEADER_IN + bottom * UNIT_HEIGHT_IN + GAP_IN
    figure = Figure(figsize=(FIGURE_WIDTH_IN, height_in), facecolor=PAGE)
    top = 1 - 0.12 / height_in
    figure.text(GAP_IN / FIGURE_WIDTH_IN, top, title, color=TEXT, fontsize=14,
                fontweight="bold", va="top")  # fmt: skip
    lines = [_when_text(when), *([subtitle] if subtitle else [])]
    figure.text(GAP_IN / FIGURE_WIDTH_IN, top - 0.3 / height_in, "   ".join(lines),
                color=MUTED, fontsize=8, va="top")  # fmt: skip
    for panel in panels:
        if panel.layout.is_row:
            _draw_row(figure, height_in, panel.layout)
        else:
            _draw_panel(figure, height_in, panel, when)
    return figure


def save_png(figure: Figure, path: Path) -> None:
    """The figure as a PNG of 256 colours (a dashboard has few; the file stays small)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, facecolor=figure.get_facecolor())
    buffer.seek(0)
    with Image.open(buffer) as image:
        path.parent.mkdir(parents=True, exist_ok=True)
        quantized = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        quantized.save(path, format="PNG", optimize=True)


# -- command line ------------------------------------------------------------------------

DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
DURATION_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus/Grafana duration (`90s`, `10m`, `1h30m`; `now-30m` too)."""
    body = text.removeprefix("now-")
    parts = DURATION.findall(body)
    if not parts or "".join(n + u for n, u in parts) != body:
        raise KvswarmError(f"--last: expected a duration such as 90s, 10m or 1h; found {text!r}")
    return sum(float(number) * DURATION_S[unit] for number, unit in parts)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m kvswarm.sinks.dashboard_png",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--prometheus", required=True, help="Prometheus's base URL")
    parser.add_argument("--out", required=True, type=Path, help="the PNG to write")
    parser.add_argument("--dashboard", type=Path, default=DEFAULT_DASHBOARD,
                        help="the dashboard's JSON")  # fmt: skip
    parser.add_argument("--last", help="the time range drawn, up to --end (default: the "
                        "dashboard's own, as its time.from says)")  # fmt: skip
    parser.add_argument("--end", type=float, help="end of the range, Unix seconds "
                        "(default: now)")  # fmt: skip
    return parser


def _load_dashboard(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise KvswarmError(f"--dashboard {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KvswarmError(f"--dashboard {path}: not JSON: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        dashboard = _load_dashboard(args.dashboard)
        last = args.last or dashboard.get("time", {}).get("from", "now-30m")
        when = TimeRange.last(parse_duration(last), args.end)
        prometheus = PrometheusRange(args.prometheus)
        panels = fetch_panels(dashboard_layout(dashboard), prometheus, when)
    except KvswarmError as exc:
        print(f"kvswarm: {exc}", file=sys.stderr)
        return 2
    for panel in panels:
        for error in panel.errors:
            print(f"{panel.layout.title}: {error}", file=sys.stderr)
    subtitle = f"Prometheus {prometheus.url}; drawn by kvswarm.sinks.dashboard_png, not Grafana"
    save_png(draw(dashboard.get("title", ""), panels, when, subtitle), args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
