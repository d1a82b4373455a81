"""kvswarm's exporter scraped by a real Prometheus, during load on the simulated PD stack
with its real mooncake_master: kvswarm's histograms and counters, the mirrored vLLM-named
metrics and the Mooncake master's metrics reach Prometheus; at the run's end the
exporter's counters equal requests.csv; configs/prometheus.yml passes promtool.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import pytest
import yaml
from locust.env import Environment

from kvswarm.client import CompletionRequest, StreamingClient
from kvswarm.config import parse_config
from kvswarm.engines import SIM
from kvswarm.locust.plugin import KvswarmPlugin
from kvswarm.records import build_record
from kvswarm.sim import SimOptions, spawn_stack
from kvswarm.sim.stack import StackProcess
from kvswarm.sinks import Exporter, attach_exporter
from tests.integration.test_sim_http import FAST
from tests.support.processes import REPO

PROMETHEUS_YML = REPO / "configs" / "prometheus.yml"
MODE = "pd_disaggregated"
SCENARIOS = ("batch_processing", "cold_start")

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Prometheus is not installed: scripts/setup-system.sh --dev installs Debian's",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def address(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


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


# ------------------------------------------------------------------- the real thing --


def prometheus_config(targets: dict[str, list[str]], interval: str = "1s") -> dict[str, Any]:
    """configs/prometheus.yml with its targets replaced: `targets` maps a job to its new
    targets, or `job/source` to the targets of that source; other jobs are left out."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval=interval, scrape_timeout=interval)
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        groups = []
        for group in job["static_configs"]:
            source = group.get("labels", {}).get("source")
            new = targets.get(f"{name}/{source}") or targets.get(name)
            if new and all(new != g["targets"] for g in groups):
                groups.append({**group, "targets": new})
        if groups:
            jobs.append({**job, "static_configs": groups})
    config["scrape_configs"] = jobs
    return config


class Prometheus:
    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    def query(self, expression: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=5) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expression: str) -> float:
        result = self.query(expression)
        return sum(float(series["value"][1]) for series in result)

    def wait_for(self, expression: str, check: Any, timeout_s: float = 30.0) -> float:
        """The expression's summed value once `check(value)` holds (polled each 0.25 s)."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            if self.query(expression):
                value = self.value(expression)
                if check(value):
                    return value
            gevent.sleep(0.25)
        raise AssertionError(f"{expression}: {value} after {timeout_s}s; {self.target_errors()}")

    def target_errors(self) -> list[str]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as reply:
            targets = json.load(reply)["data"]["activeTargets"]
        return [f"{t['scrapeUrl']}: {t['lastError']}" for t in targets if t["lastError"]]


def start_prometheus(tmp_path: Path, config: dict[str, Any]) -> Prometheus:
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            "prometheus", f"--config.file={config_file}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as reply:
                if reply.status == 200:
                    return prometheus
        except OSError:
            pass
        gevent.sleep(0.2)
    process.kill()
    raise AssertionError("Prometheus did not become ready")


@pytest.fixture(scope="module")
def pd_stack() -> Iterator[StackProcess]:
    options = SimOptions(mode=MODE, cost=FAST, kv_store="mooncake").with_free_ports()
    with spawn_stack(options) as stack:
        yield stack


def send_load(plugin: KvswarmPlugin, base_url: str, requests_per_user: int) -> None:
    """Real requests from 4 greenlets, their records kept by the plugin (as users do)."""

    def user(number: int) -> None:
        client = StreamingClient(base_url)
        scenario = SCENARIOS[number % 2]
        shared = "shared document " * 60
        try:
            for sequence in range(requests_per_user):
                unique = f"user {number} request {sequence} " * 3
                prompt = shared + unique if scenario == "batch_processing" else unique * 20
                request = CompletionRequest("completions", SimOptions().model, 4, prompt=prompt)
                result = client.complete(request)
                record = build_record(
                    result, SIM.request_timings(result),
                    request_id=f"local-{number}-{sequence}", worker_id="local", user_id=number,
                    scenario=scenario, mode=MODE, endpoint="completions",
                    expected_hit=scenario == "batch_processing" and sequence > 0,
                )  # fmt: skip
                plugin.recorder.report_now(record)
        finally:
            client.close()

    gevent.joinall([gevent.spawn(user, number) for number in range(4)], raise_error=True)


def requests_csv(run_path: Path) -> list[dict[str, str]]:
    with open(run_path / "requests.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def counter(exporter: Exporter, name: str, **labels: str) -> float:
    """The sum of every sample called `name` whose labels include `labels`."""
    total = 0.0
    for family in exporter.registry.collect():
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def test_prometheus_scrapes_load_mirrored_vllm_and_mooncake_metrics(
    pd_stack: StackProcess, tmp_path: Path
) -> None:
    urls = pd_stack.metrics_urls
    environment = Environment(user_classes=[])
    environment.create_local_runner()
    config = parse_config({"metrics_endpoints": {k: v for k, v in urls.items() if k != "proxy"}})
    plugin = KvswarmPlugin.recording(environment, tmp_path / "results", config)
    plugin.settings = dataclasses.replace(plugin.settings, base_url=pd_stack.base_url, mode=MODE)
    plugin.engine = SIM
    port = free_port()
    exporter = attach_exporter(plugin, "127.0.0.1", port, interval_s=1.0)
    prometheus = start_prometheus(
        tmp_path,
        prometheus_config(
            {
                "kvswarm": [f"127.0.0.1:{port}"],
                "vllm/prefiller": [address(urls["prefiller"])],
                "vllm/decoder": [address(urls["decoder"])],
                "mooncake-master": [address(urls["mooncake_master"])],
            }
        ),
    )
    try:
        assert plugin.run is not None
        run = plugin.run
        plugin.events.run_opened.fire(environment=environment, run=run)
        send_load(plugin, pd_stack.base_url, requests_per_user=6)
        rows = len(requests_csv_after_flush(run))
        assert rows == 24

        # kvswarm's own: every request counted, histograms filled.
        prometheus.wait_for('sum(kvswarm_requests_total{job="kvswarm"})', lambda v: v == rows)
        for name in ("ttft", "tpot", "itl", "e2e"):
            count = prometheus.value(f"sum(kvswarm_{name}_seconds_count)")
            assert count > 0, name
        for scenario in SCENARIOS:
            assert prometheus.value(f'kvswarm_ttft_seconds_count{{scenario="{scenario}"}}') > 0
        assert prometheus.value("sum(kvswarm_prompt_tokens_total)") > 0
        assert prometheus.value("sum(kvswarm_output_tokens_total)") > 0
        assert prometheus.value("sum(kvswarm_designed_hits_total)") > 0
        assert prometheus.value('sum(kvswarm_users{mode="pd_disaggregated"})') == 0
        info = prometheus.query("kvswarm_run_info")
        assert info and info[0]["metric"]["run_id"] == run.path.name

        # The stack's metrics, mirrored by kvswarm with `source` (the sampler reads every
        # second), and scraped directly: both copies present and non-zero.
        mirrored = 'vllm:prefix_cache_queries_total{job="kvswarm",source="prefiller"}'
        prometheus.wait_for(f"sum({mirrored})", lambda v: v > 0)
        prometheus.wait_for('sum(vllm:prompt_tokens_total{job="kvswarm",source="decoder"})',
                            lambda v: v > 0)  # fmt: skip
        assert prometheus.value('sum(vllm:prefix_cache_queries_total{job="vllm"})') > 0
        for job in ("kvswarm", "mooncake-master"):
            selector = f'{{job="{job}",source="mooncake_master"}}'
            prometheus.wait_for(f"sum(master_put_start_requests_total{selector})", lambda v: v > 0)
            assert prometheus.value(f"sum(master_get_replica_list_requests_total{selector})") > 0
            assert prometheus.value(f"sum(master_key_count{selector})") > 0
            assert prometheus.value(f"sum(master_allocated_bytes{selector})") > 0

        plugin.events.run_closing.fire(environment=environment, run=run)
        run.finish()
        assert_counters_equal_requests_csv(exporter, requests_csv(run.path))
        section = exporter.section
        assert section is not None
        assert not section.warnings, section.warnings
        assert section.derived["prefix_cache_hit_rate"].value > 0
        master = section.sources["mooncake_master"].derived
        assert master["mooncake_put_rate_per_s"].value > 0
        assert (run.path / "server_metrics.jsonl").stat().st_size > 0
    finally:
        prometheus.process.terminate()
        prometheus.process.wait(timeout=30)
        exporter.close()


def requests_csv_after_flush(run: Any) -> list[dict[str, str]]:
    run.writer.flush()
    return requests_csv(run.path)


def assert_counters_equal_requests_csv(exporter: Exporter, rows: list[dict[str, str]]) -> None:
    """Every counter against the rows it counts, per scenario."""
    for scenario in {row["scenario"] for row in rows}:
        mine = [row for row in rows if row["scenario"] == scenario]

        def value(name: str, **labels: str) -> float:
            return counter(exporter, name, scenario=scenario, **labels)  # noqa: B023

        ok = [row for row in mine if row["ok"] == "1"]
        cancelled = [row for row in mine if row["failure"] == "cancelled"]
        failed = [row for row in mine if row["ok"] == "0" and row["failure"] != "cancelled"]
        assert value("kvswarm_requests_total", status="ok") == len(ok)
        assert value("kvswarm_requests_total", status="failed") == len(failed)
        assert value("kvswarm_requests_total", status="cancelled") == len(cancelled)
        for category in {row["failure"] for row in failed}:
            expected = sum(row["failure"] == category for row in failed)
            assert value("kvswarm_failures_total", category=category) == expected
        for column, name in (
            ("prompt_tokens", "kvswarm_prompt_tokens_total"),
            ("cached_tokens", "kvswarm_cached_tokens_total"),
            ("output_tokens", "kvswarm_output_tokens_total"),
        ):
            assert value(name) == sum(int(row[column] or 0) for row in mine), column
        assert value("kvswarm_designed_hits_total") == sum(
            row["expected_hit"] == "1" for row in mine
        )
        assert value("kvswarm_ttft_seconds_count") == sum(bool(row["ttft_ms"]) for row in ok)
        assert value("kvswarm_e2e_seconds_count") == sum(bool(row["e2e_ms"]) for row in ok)


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
