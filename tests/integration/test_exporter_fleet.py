"""kvswarm's exporter in real Locust processes, the fleet's scraped by a real Prometheus.

Two load runs on the simulated PD stack (with its real mooncake_master, and injected
faults) serve every test here, each started with `kvswarm locust` as README says: a
standalone process, and a Locust master with 2 worker processes. Each runs with the web
UI (`--autostart`, no `--autoquit`), so it stays alive after its run and its exporter can
still be read. During the fleet's run a real Prometheus scrapes the master's exporter, the
prefiller, the decoder and the Mooncake master every second, as configs/prometheus.yml
says (targets replaced).

Checked: at each run's end the exporter's counters and histograms equal requests.csv
exactly, per scenario and mode; Prometheus holds the fleet's histograms, counters and
gauges (users, workers, requests in flight, each process's CPU), the stack's vLLM-named
metrics and the Mooncake master's metrics, both mirrored by the exporter during the run
and scraped directly; its last kvswarm_requests_total equals requests.csv; run.json's
server-metrics window has the stack's hit rate and the Mooncake put rate.
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kvswarm.sim import SimOptions, spawn_stack
from kvswarm.sim.faults import FaultConfig
from kvswarm.sim.stack import StackProcess
from tests.integration.test_sim_http import FAST
from tests.support.liveruns import (
    Samples,
    kvswarm_locust,
    read_rows,
    scrape,
    stop,
    wait_for_run_to_close,
)
from tests.support.processes import REPO, free_port
from tests.support.prometheus import (
    Prometheus,
    address,
    needs_prometheus,
    prometheus_config,
    start_prometheus,
)

pytestmark = needs_prometheus

MODE = "pd_disaggregated"
SCENARIOS = {
    "batch_processing": {"shared_tokens_min": 300, "shared_tokens_max": 400, "unique_tokens": 40},
    "cold_start": {"unique_tokens": 300},
}
USER_CLASSES = ("BatchProcessingUser", "ColdStartUser")
USERS = 4
RUN_TIME = "6s"
WORKERS = 2
# Two failure categories (http_503, disconnect) for the failure counters to count.
FAULTS = FaultConfig(error_rate=0.05, error_status=503, disconnect_rate=0.05)
# The counters and histogram counts the exporter keeps per scenario and mode.
LOAD_COUNTERS = (
    "kvswarm_requests_total",
    "kvswarm_failures_total",
    "kvswarm_prompt_tokens_total",
    "kvswarm_cached_tokens_total",
    "kvswarm_output_tokens_total",
    "kvswarm_designed_hits_total",
)
# Histogram -> the requests.csv column it observes (ms), on successful rows.
LATENCIES = {
    "kvswarm_ttft_seconds": "ttft_ms",
    "kvswarm_tpot_seconds": "tpot_ms",
    "kvswarm_itl_seconds": "itl_mean_ms",
    "kvswarm_e2e_seconds": "e2e_ms",
}
# Over the whole module: Prometheus keeps every sample of the run.
EVER = "[10m]"


@dataclass(frozen=True)
class FinishedRun:
    """A finished run: its directory and rows, and the exporter's /metrics read after the
    run closed (the process that served it still running)."""

    path: Path
    rows: list[dict[str, str]]
    exporter_samples: Samples


# ----------------------------------------------------------------------- the run --


@pytest.fixture(scope="module")
def pd_stack() -> Iterator[StackProcess]:
    options = SimOptions(mode=MODE, cost=FAST, kv_store="mooncake", faults=FAULTS)
    with spawn_stack(options.with_free_ports()) as stack:
        yield stack


@pytest.fixture(scope="module")
def exporter_port() -> int:
    """Where the fleet's master serves the exporter (Prometheus must know it first)."""
    return free_port()


@pytest.fixture(scope="module")
def prometheus(
    pd_stack: StackProcess, exporter_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    urls = pd_stack.metrics_urls
    targets = {
        "kvswarm": [f"127.0.0.1:{exporter_port}"],
        "vllm/prefiller": [address(urls["prefiller"])],
        "vllm/decoder": [address(urls["decoder"])],
        "mooncake-master": [address(urls["mooncake_master"])],
    }
    with start_prometheus(tmp_path_factory.mktemp("prometheus"), prometheus_config(targets)) as p:
        yield p


@pytest.fixture(scope="module")
def fleet_run(
    pd_stack: StackProcess,
    prometheus: Prometheus,
    exporter_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FinishedRun]:
    """The master's run, scraped by `prometheus`; the master and workers run on until the
    module's tests are done."""
    directory = tmp_path_factory.mktemp("fleet")
    with locust_run(pd_stack, directory, exporter_port, workers=WORKERS) as logs:
        yield finished_run(directory, exporter_port, logs)


@pytest.fixture(scope="module")
def standalone_run(pd_stack: StackProcess, tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    directory = tmp_path_factory.mktemp("standalone")
    port = free_port()
    with locust_run(pd_stack, directory, port, workers=0) as logs:
        return finished_run(directory, port, logs)


@pytest.fixture(params=["standalone", "fleet"])
def each_run(request: pytest.FixtureRequest) -> FinishedRun:
    return request.getfixturevalue(f"{request.param}_run")


def finished_run(directory: Path, exporter_port: int, logs: list[Path]) -> FinishedRun:
    path = wait_for_run_to_close(directory / "results", logs)
    return FinishedRun(
        path=path,
        rows=read_rows(path),
        exporter_samples=scrape(f"http://127.0.0.1:{exporter_port}/metrics"),
    )


def write_config(path: Path, stack: StackProcess) -> Path:
    endpoints = {name: url for name, url in stack.metrics_urls.items() if name != "proxy"}
    config = {
        "target": {"max_model_len": 4096},
        "generation": {"max_tokens": 4},
        "scenarios": SCENARIOS,
        "metrics_endpoints": endpoints,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def locust_run(
    stack: StackProcess, directory: Path, exporter_port: int, workers: int
) -> Iterator[list[Path]]:
    """One run with the web UI, started at once and kept running after the run: a
    standalone process (`workers` 0), or a master and `workers` workers. Yields their log
    files; stops every one of them on leaving."""
    config = write_config(directory / "config.yaml", stack)
    common = ["-f", str(REPO / "locustfiles"), "--kv-config", str(config)]
    first = [
        *common, "--web-host", "127.0.0.1", "--web-port", str(free_port()), "--autostart",
        "-u", str(USERS), "-r", str(USERS), "-t", RUN_TIME, "--host", stack.base_url,
        "--kv-mode", MODE, "--kv-results", str(directory / "results"),
        "--kv-exporter-port", str(exporter_port), "--kv-server-sample-interval", "1",
        *USER_CLASSES,
    ]  # fmt: skip
    commands = [("standalone", first)]
    if workers:
        master_port = str(free_port())
        commands = [
            ("master", [*first, "--master", "--master-bind-host", "127.0.0.1",
                        "--master-bind-port", master_port, "--expect-workers", str(workers)]),
            *[(f"worker-{n}", [*common, "--worker", "--master-host", "127.0.0.1",
                               "--master-port", master_port]) for n in range(workers)],
        ]  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for name, args in commands:
            logs.append(directory / f"{name}.log")
            processes.append(kvswarm_locust(args, directory, logs[-1]))
        yield logs
    finally:
        for process in processes:  # the master first: its workers quit with it
            stop(process)


# ------------------------------------------------------------ what requests.csv says --


def load_labels(row: dict[str, str], **more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"scenario": row["scenario"], "mode": row["mode"], **more}.items())


def status(row: dict[str, str]) -> str:
    if row["ok"] == "1":
        return "ok"
    return "cancelled" if row["failure"] == "cancelled" else "failed"


def counters_of(rows: list[dict[str, str]]) -> Samples:
    """The load counters as requests.csv counts them (series that count nothing left out)."""
    counts: Counter[tuple[str, frozenset[tuple[str, str]]]] = Counter()
    for row in rows:
        counts["kvswarm_requests_total", load_labels(row, status=status(row))] += 1
        if status(row) == "failed":
            category = row["failure"] or "unknown"
            counts["kvswarm_failures_total", load_labels(row, category=category)] += 1
        for column in ("prompt_tokens", "cached_tokens", "output_tokens"):
            counts[f"kvswarm_{column}_total", load_labels(row)] += int(row[column] or 0)
        counts["kvswarm_designed_hits_total", load_labels(row)] += row["expected_hit"] == "1"
    return {key: float(value) for key, value in counts.items() if value}


def latency_counts_of(rows: list[dict[str, str]]) -> Samples:
    """Each latency histogram's `_count`: the successful rows that have its column."""
    counts: Counter[tuple[str, frozenset[tuple[str, str]]]] = Counter()
    for row in rows:
        for histogram, column in LATENCIES.items():
            if row["ok"] == "1" and row[column]:
                counts[f"{histogram}_count", load_labels(row)] += 1
    return {key: float(value) for key, value in counts.items()}


def latency_sums_of(rows: list[dict[str, str]]) -> Samples:
    """Each latency histogram's `_sum` in seconds, from the rows' milliseconds."""
    sums: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for row in rows:
        for histogram, column in LATENCIES.items():
            if row["ok"] == "1" and row[column]:
                key = (f"{histogram}_sum", load_labels(row))
                sums[key] = sums.get(key, 0.0) + float(row[column]) / 1000.0
    return sums


def exported(samples: Samples, names: tuple[str, ...]) -> Samples:
    """The samples called one of `names`, series that count nothing left out."""
    return {key: value for key, value in samples.items() if key[0] in names and value}


# ------------------------------------------------------------------------- the tests --


def test_each_run_has_both_scenarios_and_failures_of_two_kinds(each_run: FinishedRun) -> None:
    """What the counter tests rely on: both scenarios, and failures to count by category."""
    assert json.loads((each_run.path / "run.json").read_text())["status"] == "finished"
    assert {row["scenario"] for row in each_run.rows} == set(SCENARIOS)
    assert {"http_503", "disconnect"} <= {row["failure"] for row in each_run.rows}


def test_the_fleet_runs_rows_come_from_both_workers(fleet_run: FinishedRun) -> None:
    meta = json.loads((fleet_run.path / "run.json").read_text())
    assert meta["fleet"]["lost_workers"] == []
    assert len({row["worker_id"] for row in fleet_run.rows}) == WORKERS


def test_the_exporters_counters_equal_requests_csv_at_the_runs_end(each_run: FinishedRun) -> None:
    """Requests by status, failures by category, prompt, cached and output tokens and
    designed hits, per scenario and mode: not one record lost or counted twice (on a
    master, of the records every worker shipped)."""
    assert exported(each_run.exporter_samples, LOAD_COUNTERS) == counters_of(each_run.rows)


def test_the_exporters_latency_histograms_count_every_successful_row(
    each_run: FinishedRun,
) -> None:
    names = tuple(f"{histogram}_count" for histogram in LATENCIES)
    assert exported(each_run.exporter_samples, names) == latency_counts_of(each_run.rows)


def test_the_exporters_latency_histograms_sum_the_rows_latencies_in_seconds(
    each_run: FinishedRun,
) -> None:
    names = tuple(f"{histogram}_sum" for histogram in LATENCIES)
    expected = latency_sums_of(each_run.rows)
    # requests.csv rounds its milliseconds: equal up to that rounding.
    assert exported(each_run.exporter_samples, names) == pytest.approx(expected, rel=1e-4)


def test_prometheus_ends_with_the_request_counts_of_requests_csv(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    labels = ("scenario", "mode", "status")
    expected = {
        tuple(dict(series)[label] for label in labels): value
        for (name, series), value in counters_of(fleet_run.rows).items()
        if name == "kvswarm_requests_total"
    }
    final = prometheus.wait_until(
        lambda: prometheus.series('kvswarm_requests_total{job="kvswarm"} > 0', labels),
        lambda seen: seen == expected,
    )
    assert final == expected


def test_prometheus_has_the_fleets_latency_histograms_per_scenario(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    for histogram in LATENCIES:
        counts = prometheus.series(f"max_over_time({histogram}_count{EVER})", ("scenario",))
        assert set(counts) == {(scenario,) for scenario in SCENARIOS}, histogram
        assert all(count > 0 for count in counts.values()), (histogram, counts)
        assert prometheus.value(f'max_over_time({histogram}_bucket{{le="+Inf"}}{EVER})') > 0


def test_prometheus_has_the_fleets_token_failure_and_designed_hit_counters(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    for name in LOAD_COUNTERS:
        assert prometheus.value(f'max_over_time({name}{{mode="{MODE}"}}{EVER})') > 0, name
    failures = prometheus.series(f"max_over_time(kvswarm_failures_total{EVER})", ("category",))
    assert {("http_503",), ("disconnect",)} <= set(failures)


def test_the_exporter_shows_the_users_the_workers_run_per_scenario(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    users = prometheus.series(f"max_over_time(kvswarm_users{EVER})", ("scenario",))
    assert set(users) == {(scenario,) for scenario in SCENARIOS}
    assert sum(users.values()) == USERS


def test_the_exporter_shows_the_workers_connected(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    workers = f'max_over_time(kvswarm_workers{{mode="{MODE}"}}{EVER})'
    assert prometheus.value(workers) == WORKERS


def test_the_exporter_shows_the_workers_requests_in_flight_during_the_run_and_none_after(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    during = prometheus.series(f"max_over_time(kvswarm_in_flight_requests{EVER})", ("scenario",))
    assert set(during) == {(scenario,) for scenario in SCENARIOS}
    assert 0 < sum(during.values()) <= USERS
    # Each worker's reports after its users stopped have nothing in flight.
    prometheus.wait_for("sum(kvswarm_in_flight_requests)", lambda value: value == 0)


def test_the_exporter_shows_the_cpu_use_of_the_master_and_of_each_worker(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    cpu = prometheus.series(f"max_over_time(kvswarm_load_generator_cpu_ratio{EVER})", ("process",))
    workers = {(row["worker_id"],) for row in fleet_run.rows}
    assert set(cpu) == {("master",), *workers}
    # The workers sent the load: each was busy.
    assert all(cpu[worker] > 0 for worker in workers), cpu


def test_prometheus_has_the_runs_info(fleet_run: FinishedRun, prometheus: Prometheus) -> None:
    (info,) = prometheus.query('kvswarm_run_info{job="kvswarm"}')
    assert info["metric"]["run_id"] == fleet_run.path.name
    assert info["metric"]["mode"] == MODE
    assert info["metric"]["engine"] == "sim"


def test_the_exporter_mirrored_the_stacks_vllm_metrics_during_the_run(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    """The prefiller's and decoder's vLLM-named metrics, mirrored with their `source`;
    Prometheus's own scrape of the servers has them too."""
    for source, name in (
        ("prefiller", "vllm:prefix_cache_queries_total"),
        ("prefiller", "vllm:prefix_cache_hits_total"),
        ("decoder", "vllm:prompt_tokens_total"),
    ):
        for job in ("kvswarm", "vllm"):
            selector = f'{name}{{job="{job}",source="{source}"}}'
            assert prometheus.value(f"max_over_time({selector}{EVER})") > 0, selector


def test_the_mooncake_masters_metrics_reach_prometheus_mirrored_and_directly(
    fleet_run: FinishedRun, prometheus: Prometheus
) -> None:
    for job in ("kvswarm", "mooncake-master"):
        for name in (
            "master_put_start_requests_total",
            "master_get_replica_list_requests_total",
            "master_key_count",
            "master_allocated_bytes",
        ):
            selector = f'{name}{{job="{job}",source="mooncake_master"}}'
            assert prometheus.value(f"max_over_time({selector}{EVER})") > 0, selector


def test_run_json_has_the_stacks_hit_rate_and_mooncake_put_rate_over_the_window(
    fleet_run: FinishedRun,
) -> None:
    section = json.loads((fleet_run.path / "run.json").read_text())["server_metrics"]
    assert section["warnings"] == []
    assert section["derived"]["prefix_cache_hit_rate"]["value"] > 0
    master = section["sources"]["mooncake_master"]["derived"]
    assert master["mooncake_put_rate_per_s"]["value"] > 0
    assert (fleet_run.path / "server_metrics.jsonl").stat().st_size > 0
