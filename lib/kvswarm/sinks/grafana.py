"""kvswarm's Grafana dashboard, generated from code.

The metric names in its queries come from the exporter (`EXPORTED_METRICS`), the vLLM
engine profile (`VLLM_METRICS`) and the Mooncake master's names
(`MOONCAKE_MASTER_METRICS`), so a renamed metric changes the dashboard with it. The JSON
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
from pathlib import Path
from typing import Any

from kvswarm.engines.mooncake import MOONCAKE_MASTER_METRICS
from kvswarm.engines.vllm import VLLM_METRICS

__all__ = ["DASHBOARD_UID", "build_dashboard", "dashboard_json", "queries"]

DASHBOARD_UID = "kvswarm"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
LOAD = 'scenario=~"$scenario",mode=~"$mode"'
RATE = "1m"
QUANTILES = (0.5, 0.9, 0.99)
WIDTH = 24


def _percentiles(metric: str) -> list[dict[str, str]]:
    return [
        {
            "expr": f"histogram_quantile({q}, sum by (le, scenario, mode) "
            f"(rate({metric}_bucket{{{LOAD}}}[{RATE}])))",
            "legendFormat": f"p{round(q * 100)} {{{{scenario}}}} {{{{mode}}}}",
        }
        for q in QUANTILES
    ]


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


def _panels() -> list[tuple[str, str, list[dict[str, str]]]]:
    """(title, unit, targets) of every panel, in order; rows are titles with no targets."""
    vllm, store = VLLM_METRICS, MOONCAKE_MASTER_METRICS
    load_rate = f"sum by (scenario, mode) (rate({{name}}{{{{{LOAD}}}}}[{RATE}]))"
    return [
        ("Latency (kvswarm, per scenario and mode)", "", []),
        ("TTFT", "s", _percentiles("kvswarm_ttft_seconds")),
        ("TPOT", "s", _percentiles("kvswarm_tpot_seconds")),
        ("ITL (mean gap per request)", "s", _percentiles("kvswarm_itl_seconds")),
        ("E2E", "s", _percentiles("kvswarm_e2e_seconds")),
        ("Throughput and failures", "", []),
        ("Requests/s by status", "reqps", [{
            "expr": f"sum by (scenario, mode, status) "
                    f"(rate(kvswarm_requests_total{{{LOAD}}}[{RATE}]))",
            "legendFormat": "{{status}} {{scenario}} {{mode}}",
        }]),
        ("Tokens/s", "short", [
            {"expr": load_rate.format(name="kvswarm_output_tokens_total"),
             "legendFormat": "output {{scenario}} {{mode}}"},
            {"expr": load_rate.format(name="kvswarm_prompt_tokens_total"),
             "legendFormat": "prompt {{scenario}} {{mode}}"},
        ]),
        ("Failures/s by category", "reqps", [{
            "expr": f"sum by (category, scenario, mode) "
                    f"(rate(kvswarm_failures_total{{{LOAD}}}[{RATE}]))",
            "legendFormat": "{{category}} {{scenario}} {{mode}}",
        }]),
        ("Users and workers", "short", [
            {"expr": f"sum by (scenario, mode) (kvswarm_users{{{LOAD}}})",
             "legendFormat": "users {{scenario}} {{mode}}"},
            {"expr": "max by (mode) (kvswarm_workers)", "legendFormat": "workers {{mode}}"},
            {"expr": "sum by (mode) (kvswarm_in_flight_requests)",
             "legendFormat": "in flight {{mode}}"},
        ]),
        ("Load generator CPU (1.0 = one core)", "percentunit", [{
            "expr": "kvswarm_load_generator_cpu_ratio", "legendFormat": "{{process}}",
        }]),
        ("Cache hits", "", []),
        ("Hit rates", "percentunit", [
            {"expr": _ratio(load_rate.format(name="kvswarm_designed_hits_total"),
                            load_rate.format(name="kvswarm_requests_total")),
             "legendFormat": "designed {{scenario}} {{mode}}"},
            {"expr": _ratio(load_rate.format(name="kvswarm_cached_tokens_total"),
                            load_rate.format(name="kvswarm_prompt_tokens_total")),
             "legendFormat": "cached tokens (usage) {{scenario}} {{mode}}"},
            {"expr": _ratio(_server_rate(vllm.prefix_cache_hits),
                            _server_rate(vllm.prefix_cache_queries)),
             "legendFormat": "prefix cache {{source}}"},
            {"expr": _ratio(_server_rate(vllm.external_prefix_cache_hits),
                            _server_rate(vllm.external_prefix_cache_queries)),
             "legendFormat": "external (KV connector) {{source}}"},
        ]),
        ("KV cache usage", "percentunit", [
            {"expr": _server_gauge(vllm.kv_cache_usage), "legendFormat": "{{source}}"},
        ]),
        ("Requests running and waiting (server)", "short", [
            {"expr": _server_gauge(vllm.requests_running), "legendFormat": "running {{source}}"},
            {"expr": _server_gauge(vllm.requests_waiting), "legendFormat": "waiting {{source}}"},
        ]),
        ("Server-side p90: TTFT, queue, prefill, decode", "s", [
            {"expr": _server_quantile(vllm.ttft_seconds), "legendFormat": "TTFT {{source}}"},
            {"expr": _server_quantile(vllm.queue_seconds), "legendFormat": "queue {{source}}"},
            {"expr": _server_quantile(vllm.prefill_seconds),
             "legendFormat": "prefill {{source}}"},
            {"expr": _server_quantile(vllm.decode_seconds), "legendFormat": "decode {{source}}"},
        ]),
        ("Mooncake master", "", []),
        ("Mooncake key count", "short", [
            {"expr": _server_gauge(store.key_count), "legendFormat": "keys {{source}}"},
        ]),
        ("Mooncake allocated bytes", "bytes", [
            {"expr": _server_gauge(store.allocated_bytes), "legendFormat": "allocated {{source}}"},
            {"expr": _server_gauge(store.capacity_bytes), "legendFormat": "capacity {{source}}"},
        ]),
        ("Mooncake put and get rates", "ops", [
            {"expr": _server_rate(store.put_requests), "legendFormat": "put (PutStart) {{source}}"},
            {"expr": _server_rate(store.get_requests),
             "legendFormat": "get (GetReplicaList) {{source}}"},
        ]),
    ]  # fmt: skip


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def build_dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    panels: list[dict[str, Any]] = []
    x = y = 0
    for index, (title, unit, targets) in enumerate(_panels(), start=1):
        if not targets:
            y += 8 if x else 0
            x = 0
            panels.append(
                {"id": index, "type": "row", "title": title, "collapsed": False,
                 "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}, "panels": []}
            )  # fmt: skip
            y += 1
            continue
        panels.append(
            {
                "id": index,
                "type": "timeseries",
                "title": title,
                "datasource": DATASOURCE,
                "gridPos": {"h": 8, "w": WIDTH // 2, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + n), "datasource": DATASOURCE, **target}
                    for n, target in enumerate(targets)
                ],
            }
        )
        x, y = (WIDTH // 2, y) if x == 0 else (0, y + 8)
    return {
        "uid": DASHBOARD_UID,
        "title": "kvswarm: load, latency and KV cache",
        "tags": ["kvswarm", "vllm", "mooncake"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "5s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {"text": "Prometheus", "value": "prometheus"},
                },
                _variable("scenario", "scenario", "label_values(kvswarm_requests_total, scenario)"),
                _variable("mode", "mode", "label_values(kvswarm_requests_total, mode)"),
            ]  # fmt: skip
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json() -> str:
    """The dashboard as the committed file holds it."""
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"


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
