"""configs/prometheus.yml: promtool accepts it, it scrapes kvswarm's exporter, vLLM,
LMCache and the Mooncake master, and the tests' rewriting of its targets; an endpoint the
exporter's sampler cannot reach is a warning, not a failure.

A real Prometheus scraping a real fleet (a Locust master and 2 workers on the simulated PD
stack with its real mooncake_master) is in test_exporter_fleet.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import gevent
import yaml
from locust.env import Environment

from kvswarm.locust.plugin import KvswarmPlugin
from kvswarm.sinks import attach_exporter
from tests.support.prometheus import PROMETHEUS_YML, needs_prometheus, prometheus_config


@needs_prometheus
def test_configs_prometheus_yml_passes_promtool() -> None:
    completed = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_configs_prometheus_yml_scrapes_kvswarm_mooncake_vllm_and_lmcache() -> None:
    jobs = {
        job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    }
    assert set(jobs) == {"kvswarm", "vllm", "lmcache", "mooncake-master"}
    targets = {
        name: {t for group in job["static_configs"] for t in group["targets"]}
        for name, job in jobs.items()
    }
    assert targets["kvswarm"] == {"locust-master:9646"}
    assert "mooncake-master:9003" in targets["mooncake-master"]
    assert {"vllm-prefiller:8100", "vllm-decoder:8200", "vllm-server:8000"} <= targets["vllm"]


def test_prometheus_config_for_the_test_rewrites_targets_by_job_and_source() -> None:
    """The rewriting itself: every target replaced by the test's, by job and source."""
    config = prometheus_config({"kvswarm": ["127.0.0.1:1"], "mooncake-master": ["127.0.0.1:2"]})
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"kvswarm", "mooncake-master"}
    assert jobs["mooncake-master"]["static_configs"] == [
        {"targets": ["127.0.0.1:2"], "labels": {"source": "mooncake_master"}}
    ]


def test_an_endpoint_that_cannot_be_reached_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    environment = Environment(user_classes=[])
    environment.create_local_runner()
    plugin = KvswarmPlugin.recording(environment, tmp_path)
    exporter = attach_exporter(plugin, port=0, interval_s=60.0)
    plugin.events.run_opened.fire(environment=environment, run=plugin.run)
    gevent.sleep(0)
    plugin.events.run_closing.fire(environment=environment, run=plugin.run)
    lines = (plugin.run.path / "server_metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # the first reading and the last (the target does not answer)
    assert exporter.section is not None and exporter.section.warnings
