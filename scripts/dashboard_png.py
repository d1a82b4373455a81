"""Draw docs/images/dashboard.png: the Grafana dashboard's panels over real data.

    .venv/bin/python scripts/dashboard_png.py [--seconds 150] [--users 10] [--out PATH]

It starts the simulated PD stack with its real mooncake_master (`kvswarm sim`'s
`spawn_stack`), a real Prometheus (Debian's `prometheus`) scraping kvswarm's exporter, the
prefiller, the decoder and the Mooncake master with configs/prometheus.yml's jobs and
labels, and runs `kvswarm locust --headless` with the exporter on, every scenario of the
demo's config at once, the users ramping up. Then it draws the dashboard from Prometheus
with `python -m kvswarm.sinks.dashboard_png` over the run, and stops everything. The
numbers come from a simulator: the picture shows what the dashboard shows, not how fast
any real stack is.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from kvswarm.demo import write_config
from kvswarm.sim import SimOptions, spawn_stack
from kvswarm.sinks import dashboard_png

REPO = Path(__file__).resolve().parents[1]
MODE = "pd_disaggregated"
SCRAPE_INTERVAL = "2s"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def address(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def prometheus_config(targets: dict[str, str]) -> dict[str, Any]:
    """configs/prometheus.yml, each job's groups replaced by one target per `source`
    (`targets` maps `job/source`, or `job` for a job without one, to host:port)."""
    config = yaml.safe_load((REPO / "configs" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, scrape_timeout=SCRAPE_INTERVAL)
    jobs = []
    for job in config["scrape_configs"]:
        groups, seen = [], set()
        for group in job["static_configs"]:
            source = group.get("labels", {}).get("source")
            key = f"{job['job_name']}/{source}" if source else job["job_name"]
            if key in targets and key not in seen:
                seen.add(key)
                groups.append({**group, "targets": [targets[key]]})
        if groups:
            jobs.append({**job, "static_configs": groups})
    return {**config, "scrape_configs": jobs}


@contextmanager
def prometheus(directory: Path, config: dict[str, Any]) -> Iterator[str]:
    """Prometheus on a free loopback port; yields its URL once /-/ready answers."""
    if shutil.which("prometheus") is None:
        raise SystemExit("prometheus is not installed: bash scripts/setup-system.sh --dev")
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    with open(directory / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                "prometheus", f"--config.file={directory / 'prometheus.yml'}",
                f"--web.listen-address={address(url)}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"Prometheus did not start; see {directory / 'prometheus.log'}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def run_load(args: argparse.Namespace, base_url: str, config: Path, port: int, work: Path) -> None:
    kvswarm = Path(sys.executable).with_name("kvswarm")
    command = [
        str(kvswarm), "locust", "-f", str(REPO / "locustfiles"), "--headless",
        "-u", str(args.users),
        "-r", f"{args.users / (args.seconds / 2):.3f}", "-t", f"{args.seconds}s",
        "--host", base_url, "--kv-mode", MODE, "--kv-config", str(config),
        "--kv-results", str(work / "results"), "--kv-exporter-port", str(port), "--only-summary",
    ]  # fmt: skip
    print("load:", " ".join(command), flush=True)
    with open(work / "locust.log", "w", encoding="utf-8") as log:
        completed = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    # Locust exits 1 when a request failed: the run still measured.
    if completed.returncode not in (0, 1):
        raise SystemExit(f"the load test failed (exit {completed.returncode}); see {log.name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=150, help="load time (users ramp up "
                        "over the first half)")  # fmt: skip
    parser.add_argument("--users", type=int, default=10, help="users at the end of the ramp")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "dashboard.png")
    parser.add_argument("--keep", type=Path, help="keep the stack's, Prometheus's and "
                        "Locust's files in this directory")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvswarm-dashboard-") as temporary:
        work = args.keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        options = SimOptions(mode=MODE, kv_store="mooncake").with_free_ports()
        with spawn_stack(options, log_path=work / "sim.log") as stack:
            endpoints = {k: v for k, v in stack.metrics_urls.items() if k != "proxy"}
            config = work / "config.yaml"
            write_config(config, "sim", endpoints)
            exporter_port = free_port()
            targets = {
                "kvswarm": f"127.0.0.1:{exporter_port}",
                "vllm/prefiller": address(endpoints["prefiller"]),
                "vllm/decoder": address(endpoints["decoder"]),
                "mooncake-master/mooncake_master": address(endpoints["mooncake_master"]),
            }
            with prometheus(work, prometheus_config(targets)) as url:
                started = time.time()
                run_load(args, stack.base_url, config, exporter_port, work)
                time.sleep(3)  # the last scrapes of the stack after the load
                ended = time.time()
                draw = [
                    "--prometheus", url, "--out", str(args.out),
                    "--last", f"{round(ended - started) + 10}s", "--end", f"{ended:.0f}",
                ]  # fmt: skip
                print("draw: python -m kvswarm.sinks.dashboard_png", " ".join(draw), flush=True)
                return dashboard_png.main(draw)


if __name__ == "__main__":
    raise SystemExit(main())
