"""kvswarm's Grafana dashboard, generated from code with the Grafana Foundation SDK.

The panels are declared here as data (`Row`, `Graph`, `Query`) and built with the SDK's
builders (`grafana-foundation-sdk`, its types for Grafana 11.1, the image
docker-compose.yml runs; pinned in requirements-dev.txt, a developer's tool: nothing at run
time imports this module). The SDK places the panels on Grafana's 24-column grid itself,
two to a line under each row.

The metric names in the queries come from the exporter (`EXPORTED_METRICS`), the vLLM
engine profile (`VLLM_METRICS`), LMCache's (`LMCACHE_METRICS`) and the Mooncake master's
names (`MOONCAKE_MASTER_METRICS`), so a renamed metric changes the dashboard with it. The JSON
is committed as configs/grafana/dashboards/kvswarm.json (Grafana provisions it from
there); regenerate it after a change with

    python -m kvswarm.sinks.grafana configs/grafana/dashboards/kvswarm.json

Server-side series may arrive twice, scraped directly (jobs `vllm`, `mooncake-master`)
and mirrored by kvswarm's exporter (job `kvswarm`), both with the same `source` label:
queries sum within a job, then take `max` over jobs, so either copy alone or both give
the same line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from kvswarm.engines.lmcache import LMCACHE_METRICS
from kvswarm.engines.mooncake import MOONCAKE_MASTER_METRICS
from kvswarm.engines.vllm import VLLM_METRICS

__all__ = [
    "DASHBOARD_UID",
    "Graph",
    "Query",
    "Row",
    "build_dashboard",
    "dashboard_json",
    "queries",
]

DASHBOARD_UID = "kvswarm"
TITLE = "kvswarm: load, latency and KV cache"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
LOAD = 'scenario=~"$scenario",mode=~"$mode"'
RATE = "1m"
QUANTILES = (0.5, 0.9, 0.99)
PANEL_HEIGHT = 8
PANEL_WIDTH = 12  # of Grafana's 24 columns: two panels to a line


@dataclass(frozen=True)
class Query:
    """One PromQL expression of a panel and its legend (Grafana's `{{label}}` format)."""

    expr: str
    legend: str


@dataclass(frozen=True)
class Graph:
    """A time-series panel: its title, its Grafana unit and its queries."""

    title: str
    unit: str
    queries: tuple[Query, ...]


@dataclass(frozen=True)
class Row:
    """A row header; the graphs after it, up to the next row, are under it."""

    title: str


def _percentiles(metric: str) -> tuple[Query, ...]:
    return tuple(
        Query(
            f"histogram_quantile({q}, sum by (le, scenario, mode) "
            f"(rate({metric}_bucket{{{LOAD}}}[{RATE}])))",
            f"p{round(q * 100)} {{{{scenario}}}} {{{{mode}}}}",
        )
        for q in QUANTILES
    )


def _load_rate(counter: str, by: str = "scenario, mode") -> str:
    return f"sum by ({by}) (rate({counter}{{{LOAD}}}[{RATE}]))"


def _server_rate(counter: str) -> str:
    """Per source, per second; one copy when both direct and mirrored series exist."""
    return f"max by (source) (sum by (source, job) (rate({counter}[{RATE}])))"


def _server_gauge(gauge: str) -> str:
    return f"max by (source) (sum by (source, job) ({gauge}))"


def _server_quantile(histogram: str, q: float = 0.9) -> str:
    buckets = f"sum by (le, source, job) (rate({histogram}_bucket[{RATE}]))"
    return f"histogram_quantile({q}, max by (le, source) ({buckets}))"


def _ratio(top: str, bottom: str) -> str:
    return f"{top} / {bottom}"


def panels() -> list[Row | Graph]:
    """Every row and graph of the dashboard, in order."""
    vllm, store, lmcache = VLLM_METRICS, MOONCAKE_MASTER_METRICS, LMCACHE_METRICS
    return [
        Row("Latency (kvswarm, per scenario and mode)"),
        Graph("TTFT", "s", _percentiles("kvswarm_ttft_seconds")),
        Graph("TPOT", "s", _percentiles("kvswarm_tpot_seconds")),
        Graph("ITL (mean gap per request)", "s", _percentiles("kvswarm_itl_seconds")),
        Graph("E2E", "s", _percentiles("kvswarm_e2e_seconds")),
        Row("Throughput and failures"),
        Graph("Requests/s by status", "reqps", (
            Query(_load_rate("kvswarm_requests_total", "scenario, mode, status"),
                  "{{status}} {{scenario}} {{mode}}"),
        )),
        Graph("Tokens/s", "short", (
            Query(_load_rate("kvswarm_output_tokens_total"), "output {{scenario}} {{mode}}"),
            Query(_load_rate("kvswarm_prompt_tokens_total"), "prompt {{scenario}} {{mode}}"),
        )),
        Graph("Failures/s by category", "reqps", (
            Query(_load_rate("kvswarm_failures_total", "category, scenario, mode"),
                  "{{category}} {{scenario}} {{mode}}"),
        )),
        Graph("Users and workers", "short", (
            Query(f"sum by (scenario, mode) (kvswarm_users{{{LOAD}}})",
                  "users {{scenario}} {{mode}}"),
            Query("max by (mode) (kvswarm_workers)", "workers {{mode}}"),
            Query("sum by (mode) (kvswarm_in_flight_requests)", "in flight {{mode}}"),
        )),
        Graph("Load generator CPU (1.0 = one core)", "percentunit", (
            Query("kvswarm_load_generator_cpu_ratio", "{{process}}"),
        )),
        Row("Cache hits"),
        Graph("Hit rates", "percentunit", (
            Query(_ratio(_load_rate("kvswarm_designed_hits_total"),
                         _load_rate("kvswarm_requests_total")),
                  "designed {{scenario}} {{mode}}"),
            Query(_ratio(_load_rate("kvswarm_cached_tokens_total"),
                         _load_rate("kvswarm_prompt_tokens_total")),
                  "cached tokens (usage) {{scenario}} {{mode}}"),
            Query(_ratio(_server_rate(vllm.prefix_cache_hits),
                         _server_rate(vllm.prefix_cache_queries)),
                  "prefix cache {{source}}"),
            Query(_ratio(_server_rate(vllm.external_prefix_cache_hits),
                         _server_rate(vllm.external_prefix_cache_queries)),
                  "external (KV connector) {{source}}"),
            Query(_ratio(_server_rate(lmcache.hit_tokens),
                         _server_rate(lmcache.requested_tokens)),
                  "LMCache retrieve {{source}}"),
        )),
        Graph("KV cache usage", "percentunit", (
            Query(_server_gauge(vllm.kv_cache_usage), "{{source}}"),
        )),
        Graph("Requests running and waiting (server)", "short", (
            Query(_server_gauge(vllm.requests_running), "running {{source}}"),
            Query(_server_gauge(vllm.requests_waiting), "waiting {{source}}"),
        )),
        Graph("Server-side p90: TTFT, queue, prefill, decode", "s", (
            Query(_server_quantile(vllm.ttft_seconds), "TTFT {{source}}"),
            Query(_server_quantile(vllm.queue_seconds), "queue {{source}}"),
            Query(_server_quantile(vllm.prefill_seconds), "prefill {{source}}"),
            Query(_server_quantile(vllm.decode_seconds), "decode {{source}}"),
        )),
        Row("Mooncake master"),
        Graph("Mooncake key count", "short", (
            Query(_server_gauge(store.key_count), "keys {{source}}"),
        )),
        Graph("Mooncake allocated bytes", "bytes", (
            Query(_server_gauge(store.allocated_bytes), "allocated {{source}}"),
            Query(_server_gauge(store.capacity_bytes), "capacity {{source}}"),
        )),
        Graph("Mooncake put and get rates", "ops", (
            Query(_server_rate(store.put_requests), "put (PutStart) {{source}}"),
            Query(_server_rate(store.get_requests), "get (GetReplicaList) {{source}}"),
        )),
    ]  # fmt: skip


def _timeseries(graph: Graph, panel_id: int) -> timeseries.Panel:
    legend = (
        common_builder.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(graph.title)
        .unit(graph.unit)
        .datasource(DATASOURCE)
        .height(PANEL_HEIGHT)
        .span(PANEL_WIDTH)
        .legend(legend)
    )
    for ref_id, query in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", graph.queries, strict=False):
        panel.with_target(
            prometheus.Dataquery()
            .ref_id(ref_id)
            .datasource(DATASOURCE)
            .expr(query.expr)
            .legend_format(query.legend)
        )
    return panel


def _load_variable(label: str) -> dashboard_builder.QueryVariable:
    """A multi-value variable over the values of one label of kvswarm's requests."""
    query = f"label_values(kvswarm_requests_total, {label})"
    return (
        dashboard_builder.QueryVariable(label)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": label})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .current(model.VariableOption(text="All", value="$__all"))
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def _datasource_variable() -> dashboard_builder.DatasourceVariable:
    return (
        dashboard_builder.DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(model.VariableOption(text="Prometheus", value="prometheus"))
    )


def dashboard() -> model.Dashboard:
    """The dashboard as the SDK's model."""
    builder = (
        dashboard_builder.Dashboard(TITLE)
        .uid(DASHBOARD_UID)
        .tags(["kvswarm", "vllm", "mooncake"])
        .timezone("browser")
        .editable()
        .version(1)
        .refresh("5s")
        .time("now-30m", "now")
        .annotations([])
        .with_variable(_datasource_variable())
        .with_variable(_load_variable("scenario"))
        .with_variable(_load_variable("mode"))
    )
    for panel_id, panel in enumerate(panels(), start=1):
        if isinstance(panel, Row):
            builder.with_row(dashboard_builder.Row(panel.title).id(panel_id))
        else:
            builder.with_panel(_timeseries(panel, panel_id))
    return builder.build()


def dashboard_json() -> str:
    """The dashboard as the committed file holds it."""
    return json.dumps(dashboard(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def build_dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    return json.loads(dashboard_json())


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query of a dashboard, variables included."""
    found = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append((f"variable {variable['name']}", query["query"]))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kvswarm.sinks.grafana OUTPUT.json", file=sys.stderr)
        return 2
    Path(argv[0]).write_text(dashboard_json(), encoding="utf-8")
    print(argv[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
