"""The Grafana dashboard: the committed JSON is what the code generates, and every metric
name its queries read is exported by kvswarm, an engine profile or the Mooncake master."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import asdict
from typing import Any

import pytest
import yaml

from kvswarm.engines import ENGINES
from kvswarm.engines.lmcache import LMCACHE_METRICS
from kvswarm.engines.mooncake import MOONCAKE_MASTER_METRICS
from kvswarm.sinks import EXPORTED_METRICS
from kvswarm.sinks.grafana import build_dashboard, dashboard_json, queries
from tests.support.processes import REPO

promql_parser = pytest.importorskip(
    "promql_parser", reason="promql-parser is not installed (requirements-dev.txt)"
)

GRAFANA = REPO / "configs" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "kvswarm.json"
HISTOGRAM_SUFFIXES = ("", "_bucket", "_sum", "_count")
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*\w+\)$")


def known_names() -> set[str]:
    """Every sample name something kvswarm knows exports."""
    names = {sample for metric in EXPORTED_METRICS for sample in metric.sample_names()}
    for profile in ENGINES.values():
        for name in asdict(profile.metrics).values():
            if name:
                names |= {name + suffix for suffix in HISTOGRAM_SUFFIXES}
    names |= set(MOONCAKE_MASTER_METRICS.names())
    names |= set(LMCACHE_METRICS.names())
    return names


def selector_names(node: Any) -> list[str]:
    """The metric names of every selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        return [node.name]
    if isinstance(node, promql_parser.MatrixSelector):
        return selector_names(node.vector_selector)
    children: list[Any] = []
    if isinstance(node, promql_parser.BinaryExpr):
        children = [node.lhs, node.rhs]
    elif isinstance(node, promql_parser.Call):
        children = list(node.args)
    elif isinstance(node, promql_parser.AggregateExpr):
        children = [node.expr, node.param]
    elif isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr
                    | promql_parser.SubqueryExpr):  # fmt: skip
        children = [node.expr]
    return [name for child in children if child is not None for name in selector_names(child)]


def unknown_names(expression: str) -> list[str]:
    match = LABEL_VALUES.match(expression)
    parsed = promql_parser.parse(match.group(1) if match else expression)
    names = selector_names(parsed)
    assert names, f"no metric selector found in {expression}"
    return sorted(set(names) - known_names())


def test_committed_dashboard_is_what_the_code_generates() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == dashboard_json(), (
        "configs/grafana/dashboards/kvswarm.json is stale: run "
        "python -m kvswarm.sinks.grafana configs/grafana/dashboards/kvswarm.json"
    )


def test_every_dashboard_query_reads_only_exported_metric_names() -> None:
    problems = [
        f"{title}: {expression}: {unknown}"
        for title, expression in queries(json.loads(DASHBOARD.read_text()))
        if (unknown := unknown_names(expression))
    ]
    assert not problems, "\n".join(problems)


def test_a_panel_querying_a_name_nothing_exports_is_caught() -> None:
    assert unknown_names("sum(rate(vllm:gpu_prefix_cache_hit_rate[1m]))") == [
        "vllm:gpu_prefix_cache_hit_rate"
    ]
    assert unknown_names('histogram_quantile(0.9, rate(kvswarm_ttft_bucket{mode="x"}[1m]))') == [
        "kvswarm_ttft_bucket"
    ]


def test_the_dashboard_covers_load_cache_and_mooncake() -> None:
    text = " ".join(expression for _title, expression in queries(build_dashboard()))
    for name in (
        "kvswarm_ttft_seconds_bucket", "kvswarm_tpot_seconds_bucket", "kvswarm_itl_seconds_bucket",
        "kvswarm_e2e_seconds_bucket", "kvswarm_requests_total", "kvswarm_output_tokens_total",
        "kvswarm_failures_total", "kvswarm_users", "kvswarm_load_generator_cpu_ratio",
        "vllm:prefix_cache_hits_total", "vllm:external_prefix_cache_hits_total",
        "vllm:kv_cache_usage_perc", "vllm:num_requests_running", "vllm:num_requests_waiting",
        "master_key_count", "master_allocated_bytes", "master_put_start_requests_total",
        "master_get_replica_list_requests_total",
    ):  # fmt: skip
        assert name in text, name


def test_panels_do_not_overlap() -> None:
    cells = set()
    for panel in build_dashboard()["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_provisioning_loads_the_dashboard_from_prometheus() -> None:
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = source["datasources"]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/kvswarm.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    variables = {v["name"]: v for v in build_dashboard()["templating"]["list"]}
    assert variables["datasource"]["query"] == datasource["type"]


def test_kvswarm_at_run_time_does_not_import_the_grafana_sdk() -> None:
    """The SDK is a developer's tool (requirements-dev.txt): the CLI, the sinks the Locust
    plugin attaches (the exporter) and the PNG renderer load without it."""
    code = (
        "import sys\n"
        "sys.modules['grafana_foundation_sdk'] = None\n"
        "import kvswarm.cli, kvswarm.sinks, kvswarm.sinks.dashboard_png\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
