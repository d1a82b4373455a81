"""The dashboard drawn from Prometheus data: panels where their gridPos puts them, each
query one query_range call over the time range with the template variables expanded,
series named by their legendFormat; a fake Prometheus answers."""

from __future__ import annotations

import json
import math
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kvswarm.sinks.dashboard_png import (
    PanelData,
    PrometheusRange,
    TimeRange,
    dashboard_layout,
    draw,
    expand_variables,
    fetch_panels,
    format_value,
    parse_duration,
    save_png,
    variable_values,
)
from tests.support.processes import REPO

WHEN = TimeRange(start_s=1_700_000_000.0, end_s=1_700_000_060.0, step_s=5.0)
LOAD = 'scenario=~"$scenario",mode=~"$mode"'


def panel(title: str, x: int, y: int, w: int, *targets: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "timeseries", "title": title, "gridPos": {"x": x, "y": y, "w": w, "h": 8},
        "fieldConfig": {"defaults": {"unit": "s"}}, "targets": list(targets),
    }  # fmt: skip


def dashboard(*panels: dict[str, Any]) -> dict[str, Any]:
    variable = {"current": {"text": "All", "value": "$__all"}, "allValue": ".*"}
    return {
        "title": "test",
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "current": {"value": "prometheus"}},
                {"name": "scenario", **variable},
                {"name": "mode", "current": {"text": "pd", "value": "pd"}},
            ]
        },
        "panels": [
            {"type": "row", "title": "Latency", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}},
            *panels,
        ],
    }


class FakePrometheus:
    """Answers every range query with `answers[expr]` (a list of (labels, values)), a
    point every step from the start; records the URLs asked."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.urls: list[str] = []

    def __call__(self, url: str) -> dict[str, Any]:
        self.urls.append(url)
        parameters = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        answer = self.answers.get(parameters["query"], [])
        if isinstance(answer, str):
            return {"status": "error", "errorType": "bad_data", "error": answer}
        start, step = float(parameters["start"]), float(parameters["step"])
        result = [
            {"metric": labels, "values": [[start + n * step, str(v)] for n, v in enumerate(values)]}
            for labels, values in answer
        ]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    def params(self) -> list[dict[str, str]]:
        return [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(u).query)) for u in self.urls]


def render(board: dict[str, Any], prometheus: FakePrometheus) -> tuple[Figure, list[PanelData]]:
    panels = fetch_panels(
        dashboard_layout(board), PrometheusRange("http://p:9090/", prometheus), WHEN
    )
    return draw(board["title"], panels, WHEN), panels


def axes_titled(figure: Figure) -> dict[str, Axes]:
    return {axes.get_title(loc="left"): axes for axes in figure.axes}


def legend_texts(axes: Axes) -> list[str]:
    legend = axes.get_legend()
    return [] if legend is None else [text.get_text() for text in legend.get_texts()]


def test_panels_are_placed_where_their_grid_pos_puts_them() -> None:
    board = dashboard(panel("left", 0, 1, 12), panel("right", 12, 1, 12), panel("wide", 0, 9, 24))
    figure, _ = render(board, FakePrometheus({}))
    boxes = {title: axes.get_position() for title, axes in axes_titled(figure).items()}
    left, right, wide = boxes["left"], boxes["right"], boxes["wide"]
    assert left.x0 < 0.5 < right.x0
    assert left.y1 == pytest.approx(right.y1)
    assert wide.y1 < left.y0
    assert left.x0 == pytest.approx(wide.x0)
    assert wide.width == pytest.approx(left.width * 2, rel=0.1)
    assert "Latency" in [text.get_text() for text in figure.texts]


def test_each_query_is_one_query_range_call_with_the_variables_expanded() -> None:
    board = dashboard(
        panel("TTFT", 0, 1, 12, {"expr": f"sum(rate(kvswarm_ttft_seconds_count{{{LOAD}}}[1m]))"},
              {"expr": "up", "hide": True}, {"expr": "kvswarm_users", "legendFormat": "u"}),
    )  # fmt: skip
    fake = FakePrometheus({})
    render(board, fake)
    assert [urllib.parse.urlsplit(url).path for url in fake.urls] == ["/api/v1/query_range"] * 2
    first, second = fake.params()
    assert first == {
        "query": 'sum(rate(kvswarm_ttft_seconds_count{scenario=~".*",mode=~"pd"}[1m]))',
        "start": "1700000000.000",
        "end": "1700000060.000",
        "step": "5",
    }
    assert second["query"] == "kvswarm_users"


def test_series_are_named_by_their_legend_format() -> None:
    board = dashboard(
        panel("TTFT", 0, 1, 12, {"expr": "a", "legendFormat": "p50 {{scenario}} {{mode}}"},
              {"expr": "b"}),
    )  # fmt: skip
    fake = FakePrometheus({
        "a": [({"scenario": "chat", "mode": "pd"}, [0.1, 0.2]), ({"scenario": "rag"}, [0.3])],
        "b": [({"__name__": "up", "job": "kvswarm"}, [1, 1])],
    })  # fmt: skip
    figure, _ = render(board, fake)
    assert legend_texts(axes_titled(figure)["TTFT"]) == [
        "p50 chat pd",
        "p50 rag",
        'up{job="kvswarm"}',
    ]


def test_every_series_is_drawn_over_its_points_in_time() -> None:
    board = dashboard(panel("TTFT", 0, 1, 12, {"expr": "a"}))
    figure, _ = render(board, FakePrometheus({"a": [({"s": "x"}, [0.1, 0.2, 0.3])]}))
    (line,) = axes_titled(figure)["TTFT"].get_lines()
    assert list(line.get_ydata()) == [0.1, 0.2, 0.3]
    assert len(line.get_xdata()) == 3


def test_missing_points_break_the_line() -> None:
    board = dashboard(panel("TTFT", 0, 1, 12, {"expr": "a"}))

    def gappy(url: str) -> dict[str, Any]:
        values = [[WHEN.start_s, "1"], [WHEN.start_s + 5, "2"], [WHEN.start_s + 30, "3"]]
        result = [{"metric": {}, "values": values}]
        return {"status": "success", "data": {"resultType": "matrix", "result": result}}

    panels = fetch_panels(dashboard_layout(board), PrometheusRange("http://p", gappy), WHEN)
    figure = draw("test", panels, WHEN)
    (line,) = axes_titled(figure)["TTFT"].get_lines()
    values = list(line.get_ydata())
    assert values[:2] == [1.0, 2.0] and math.isnan(values[2]) and values[3] == 3.0


def test_a_legend_with_no_room_left_ends_with_a_count_of_the_rest() -> None:
    board = dashboard(panel("many", 0, 1, 12, {"expr": "a", "legendFormat": "{{n}}"}))
    series = [({"n": f"series {n}"}, [n]) for n in range(80)]
    figure, _ = render(board, FakePrometheus({"a": series}))
    texts = legend_texts(axes_titled(figure)["many"])
    assert 1 < len(texts) < 80
    assert texts[-1] == f"+{80 - len(texts) + 1} more"
    assert len(axes_titled(figure)["many"].get_lines()) == 80


def test_a_refused_query_is_reported_and_drawn_not_raised() -> None:
    board = dashboard(panel("broken", 0, 1, 12, {"expr": "sum("}, {"expr": "up"}))
    figure, panels = render(board, FakePrometheus({"sum(": "parse error: unclosed"}))
    assert panels[1].errors == ("sum(: bad_data: parse error: unclosed",)
    texts = [text.get_text() for text in axes_titled(figure)["broken"].texts]
    assert texts == ["query failed: sum(: bad_data: parse error: unclosed"]


def test_a_panel_without_series_says_no_data() -> None:
    figure, _ = render(dashboard(panel("empty", 0, 1, 12, {"expr": "up"})), FakePrometheus({}))
    assert [text.get_text() for text in axes_titled(figure)["empty"].texts] == ["No data"]


def test_template_variables_take_their_current_values() -> None:
    values = variable_values(dashboard())
    assert values == {"datasource": "prometheus", "scenario": ".*", "mode": "pd"}
    assert expand_variables('x{a=~"$scenario",b="${mode}"} $unknown', values) == (
        'x{a=~".*",b="pd"} $unknown'
    )


def test_the_committed_dashboard_lays_out_every_panel_with_its_queries() -> None:
    board = json.loads((REPO / "configs/grafana/dashboards/kvswarm.json").read_text())
    layout = dashboard_layout(board)
    assert [p.title for p in layout] == [p["title"] for p in board["panels"]]
    graphs = [p for p in layout if not p.is_row]
    assert graphs and all(p.queries and p.unit for p in graphs)
    assert not [q.expr for p in graphs for q in p.queries if "$" in q.expr]


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.25, "s", "250 ms"), (1.5, "s", "1.5 s"), (0.5, "percentunit", "50%"),
        (3 * 1024**2, "bytes", "3 MiB"), (1500, "short", "1.5 K"), (12, "short", "12"),
        (2, "reqps", "2 req/s"), (0.5, "ops", "0.5 ops/s"), (0, "s", "0"),
    ],
)  # fmt: skip
def test_ticks_are_written_in_grafanas_units(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_durations_read_as_prometheus_writes_them() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("now-30m") == 1800
    assert parse_duration("1h30m") == 5400


def test_the_png_is_written_where_asked(tmp_path: Path) -> None:
    figure, _ = render(dashboard(panel("p", 0, 1, 12, {"expr": "up"})), FakePrometheus({}))
    save_png(figure, tmp_path / "out" / "dashboard.png")
    assert (tmp_path / "out" / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_byte_axes_tick_at_round_binary_sizes() -> None:
    board = dashboard(panel("bytes", 0, 1, 12, {"expr": "a"}))
    board["panels"][1]["fieldConfig"]["defaults"]["unit"] = "bytes"
    figure, _ = render(board, FakePrometheus({"a": [({}, [0, 50 * 1024**2, 100 * 1024**2])]}))
    axes = axes_titled(figure)["bytes"]
    low, high = axes.get_ylim()
    ticks = [v for v in axes.yaxis.get_major_locator()() if low <= v <= high]
    assert len(ticks) >= 2
    assert all(v % (5 * 1024**2) == 0 for v in ticks), [format_value(v, "bytes") for v in ticks]
