"""The PD stack with a real Mooncake store: a mooncake_master from the `mooncake` extra's
wheel, started and stopped by the sim, sees the KV chunks put and fetched."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from kvswarm.metrics_sources import ServerWindow
from kvswarm.sim import SimOptions, spawn_stack
from kvswarm.sim.stack import StackProcess
from tests.integration.test_sim_http import FAST, metric_value, post, scrape, words

# 200-token prompts in 64-token chunks: 3 full chunks and a tail, 4 keys per prompt.
OPTIONS = SimOptions(
    mode="pd_disaggregated",
    kv_store="mooncake",
    kv_chunk_tokens=64,
    mooncake_segment_mb=32,
    cost=FAST,
).with_free_ports()
PROMPTS = 5
KEYS_PER_PROMPT = 4


@pytest.fixture(scope="module")
def mooncake_sim() -> Iterator[StackProcess]:
    with spawn_stack(OPTIONS) as stack:
        yield stack


def test_pd_load_increases_mooncake_master_put_and_get_counters(
    mooncake_sim: StackProcess,
) -> None:
    master = mooncake_sim.metrics_urls["mooncake_master"]
    before = scrape(master)
    for index in range(PROMPTS):
        body = {"prompt": words(200, f"m{index}-"), "max_tokens": 2}
        status, _, _ = post(mooncake_sim.root_url, "/v1/completions", body)
        assert status == 200
    after = scrape(master)
    for name in ("master_put_start_requests_total", "master_get_replica_list_requests_total"):
        assert metric_value(after, name) - metric_value(before, name) >= PROMPTS * KEYS_PER_PROMPT
    assert metric_value(after, "master_key_count") >= PROMPTS * KEYS_PER_PROMPT


def test_repeated_prompt_is_not_stored_twice(mooncake_sim: StackProcess) -> None:
    master = mooncake_sim.metrics_urls["mooncake_master"]
    body = {"prompt": words(200, "again-"), "max_tokens": 2}
    post(mooncake_sim.root_url, "/v1/completions", body)
    before = metric_value(scrape(master), "master_put_start_requests_total")
    post(mooncake_sim.root_url, "/v1/completions", body)
    assert metric_value(scrape(master), "master_put_start_requests_total") == before


def test_stopping_the_sim_stops_its_mooncake_master() -> None:
    stack = spawn_stack(OPTIONS.with_free_ports())
    master = stack.metrics_urls["mooncake_master"]
    scrape(master)
    stack.stop()
    assert stack.process.returncode == 0
    with pytest.raises((urllib.error.URLError, OSError)):
        urllib.request.urlopen(master, timeout=2)


def test_server_report_names_the_mooncake_store(mooncake_sim: StackProcess) -> None:
    report = ServerWindow.open(mooncake_sim.base_url, "auto").close()
    assert report.engine == "sim" and report.kv_store == "mooncake"
