"""A real Prometheus for integration tests: Debian's `prometheus` binary on a free loopback
port, configured from configs/prometheus.yml with the test's own targets, read through its
HTTP API.

    with start_prometheus(directory, prometheus_config({"kvswarm": ["127.0.0.1:9646"]})) as p:
        p.wait_for("sum(kvswarm_requests_total)", lambda value: value > 0)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import gevent
import pytest
import yaml

from tests.support.processes import REPO, free_port

__all__ = [
    "PROMETHEUS_YML",
    "Prometheus",
    "address",
    "needs_prometheus",
    "prometheus_config",
    "start_prometheus",
]

PROMETHEUS_YML = REPO / "configs" / "prometheus.yml"

T = TypeVar("T")

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Prometheus is not installed: scripts/setup-system.sh --dev installs Debian's",
)


def address(url: str) -> str:
    """`host:port` of a URL, as a Prometheus target names it."""
    return urllib.parse.urlsplit(url).netloc


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
    """A running Prometheus: queries, waits on them, and stops (also on leaving a `with`)."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of `expression` now (each series' `metric` and `value`)."""
        query = urllib.parse.urlencode({"query": expression})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=5) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expression: str) -> float:
        """The sum of every series of `expression` (0 when it has none)."""
        return sum(float(series["value"][1]) for series in self.query(expression))

    def series(self, expression: str, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """Each series of `expression`, keyed by the values of `labels`."""
        return {
            tuple(series["metric"].get(label, "") for label in labels): float(series["value"][1])
            for series in self.query(expression)
        }

    def wait_until(
        self, read: Callable[[], T], check: Callable[[T], bool], timeout_s: float = 30.0
    ) -> T:
        """`read()` once `check` holds on it (polled every 0.25 s); AssertionError with the
        last reading and the targets' scrape errors after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = read()
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{value} after {timeout_s}s; {self.target_errors()}")
            gevent.sleep(0.25)

    def wait_for(
        self, expression: str, check: Callable[[float], bool], timeout_s: float = 30.0
    ) -> float:
        """The expression's summed value once `check(value)` holds."""
        return self.wait_until(lambda: self.value(expression), check, timeout_s)

    def target_errors(self) -> list[str]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as reply:
            targets = json.load(reply)["data"]["activeTargets"]
        return [f"{t['scrapeUrl']}: {t['lastError']}" for t in targets if t["lastError"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_prometheus(directory: Path, config: dict[str, Any]) -> Prometheus:
    """Prometheus with `config` on a free loopback port, its data and log in `directory`;
    returned once its /-/ready answers."""
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = directory / "prometheus.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                "prometheus", f"--config.file={config_file}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
            ],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"Prometheus exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as reply:
                if reply.status == 200:
                    return prometheus
        except OSError:
            pass
        gevent.sleep(0.2)
    prometheus.stop()
    raise AssertionError(f"Prometheus did not become ready: {log.read_text()[-2000:]}")
