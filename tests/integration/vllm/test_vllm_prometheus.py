"""kvswarm's exporter and a real Prometheus beside a real vLLM's own metrics.

One short run (`kvswarm locust` with the web UI and `--autostart`, so its exporter can
still be read after the run) of `BatchProcessingUser` against the session's vLLM server,
while a real Prometheus scrapes, every second, kvswarm's exporter (job `kvswarm`, which
mirrors the server's page with `source="target"`) and the server itself (job `vllm`), as
configs/prometheus.yml says with its targets replaced.

Checked: vLLM's prefix-cache counters reach Prometheus both ways; what kvswarm counted
(`kvswarm_cached_tokens_total`, `kvswarm_prompt_tokens_total`) equals requests.csv and
the server's own counters over the run (`vllm:prompt_tokens_cached_total`,
`vllm:prompt_tokens_total`), and Prometheus ends with the same figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from kvswarm.vllm.server import VllmServer
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

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), needs_prometheus]

CONFIG = {
    "target": {"model": "tiny", "engine": "vllm", "max_model_len": 4096},
    "generation": {"max_tokens": 8, "temperature": 1.0},
    "timeouts": {"ttft_s": 60, "idle_s": 30},
    "scenarios": {
        "batch_processing": {"shared_tokens_min": 400, "shared_tokens_max": 600,
                             "unique_tokens": 32},
    },
}  # fmt: skip
# Over the whole module: Prometheus keeps every sample of the run.
EVER = "[10m]"


@dataclass(frozen=True)
class ObservedRun:
    rows: list[dict[str, str]]
    exporter: Samples  # the exporter's page after the run closed
    before: Samples  # the server's page before the run
    after: Samples  # ... and after it
    prometheus: Prometheus


def total(samples: Samples, name: str) -> float:
    """Every sample called `name`, whatever its labels, added up."""
    return sum(value for (sample, _), value in samples.items() if sample == name)


def grew(run: ObservedRun, name: str) -> float:
    return total(run.after, name) - total(run.before, name)


def column(rows: list[dict[str, str]], name: str) -> int:
    return sum(int(row[name] or 0) for row in rows)


@pytest.fixture(scope="module")
def observed(
    vllm_server: VllmServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObservedRun]:
    directory = tmp_path_factory.mktemp("vllm-prometheus")
    config = directory / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    exporter = free_port()
    targets = {"kvswarm": [f"127.0.0.1:{exporter}"], "vllm/target": [address(vllm_server.base_url)]}
    server_page = f"{vllm_server.base_url}/metrics"
    log = directory / "locust.log"
    (directory / "prometheus").mkdir()
    with start_prometheus(directory / "prometheus", prometheus_config(targets)) as prometheus:
        before = scrape(server_page)
        process = kvswarm_locust(
            [
                "-f", str(REPO / "locustfiles"), "BatchProcessingUser", "--kv-config", str(config),
                "--web-host", "127.0.0.1", "--web-port", str(free_port()), "--autostart",
                "-u", "2", "-r", "2", "-t", "6s", "--stop-timeout", "60",
                "--host", vllm_server.base_url, "--kv-results", str(directory / "results"),
                "--kv-exporter-port", str(exporter), "--kv-server-sample-interval", "1",
                # The server's counters over the run must be the load's alone.
                "--kv-skip-preflight",
            ],
            directory,
            log,
        )  # fmt: skip
        try:
            run = wait_for_run_to_close(directory / "results", [log], timeout_s=240)
            yield ObservedRun(
                rows=read_rows(run),
                exporter=scrape(f"http://127.0.0.1:{exporter}/metrics"),
                before=before,
                after=scrape(server_page),
                prometheus=prometheus,
            )
        finally:
            stop(process)


def test_the_run_sends_requests_that_hit_vllms_prefix_cache(observed: ObservedRun) -> None:
    assert len(observed.rows) >= 4
    assert all(row["ok"] == "1" for row in observed.rows)
    assert column(observed.rows, "cached_tokens") > 0


def test_the_exporters_cached_tokens_equal_requests_csv_and_vllms_counter(
    observed: ObservedRun,
) -> None:
    cached = column(observed.rows, "cached_tokens")
    assert total(observed.exporter, "kvswarm_cached_tokens_total") == cached
    assert grew(observed, "vllm:prompt_tokens_cached_total") == cached


def test_the_exporters_prompt_tokens_equal_requests_csv_and_vllms_counter(
    observed: ObservedRun,
) -> None:
    prompt = column(observed.rows, "prompt_tokens")
    assert total(observed.exporter, "kvswarm_prompt_tokens_total") == prompt
    assert grew(observed, "vllm:prompt_tokens_total") == prompt


def test_prometheus_has_vllms_prefix_cache_counters_mirrored_and_scraped_directly(
    observed: ObservedRun,
) -> None:
    for name in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"):
        for job in ("kvswarm", "vllm"):
            selector = f'{name}{{job="{job}",source="target"}}'
            assert observed.prometheus.value(f"max_over_time({selector}{EVER})") > 0, selector


def test_prometheus_ends_with_what_kvswarm_and_vllm_counted(observed: ObservedRun) -> None:
    """The last scrapes: kvswarm's requests and cached tokens as in requests.csv, and the
    server's cached-token counter where the server's page ended."""
    prometheus, rows = observed.prometheus, observed.rows
    prometheus.wait_for("sum(kvswarm_requests_total)", lambda value: value == len(rows))
    cached = column(rows, "cached_tokens")
    prometheus.wait_for("sum(kvswarm_cached_tokens_total)", lambda value: value == cached)
    server_cached = total(observed.after, "vllm:prompt_tokens_cached_total")
    prometheus.wait_for(
        'sum(vllm:prompt_tokens_cached_total{job="vllm"})', lambda value: value == server_cached
    )
