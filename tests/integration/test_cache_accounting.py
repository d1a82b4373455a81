"""The figures that make a KV-reuse tester different, against the simulated stack.

Designed misses stay misses when a run is repeated; the server's own cached share reaches
run.json (labelled counters, the prefiller in PD mode); the per-request PD split reaches
requests.csv; counter deltas leave out the warm-up; the KV store that served a PD run is
named.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kvswarm.sim import SimOptions, spawn_stack
from kvswarm.sim.stack import StackProcess
from tests.integration.test_sim_http import FAST
from tests.support.processes import REPO, run_dirs, run_locust

SCENARIOS = {
    "cold_start": {"unique_tokens": 300},
    "batch_processing": {"shared_tokens_min": 300, "shared_tokens_max": 400, "unique_tokens": 40},
}


def write_config(path: Path, stack: StackProcess, **results: float) -> Path:
    extra = {name: url for name, url in stack.metrics_urls.items() if name not in ("server",)}
    config = {
        "target": {"max_model_len": 4096},
        "generation": {"max_tokens": 4},
        "scenarios": SCENARIOS,
        "metrics_endpoints": extra,
        "results": results,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_scenario(
    stack: StackProcess, tmp_path: Path, name: str, user_class: str, *, mode: str, **results: float
) -> tuple[list[dict[str, str]], dict]:
    config = write_config(tmp_path / f"{name}.yaml", stack, **results)
    out = tmp_path / name
    completed = run_locust(
        [
            "-f", str(REPO / "locustfiles"), user_class, "--headless", "-u", "2", "-r", "2",
            "-t", "4s", "--host", stack.base_url, "--kv-mode", mode, "--kv-config", str(config),
            "--kv-results", str(out),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(out)
    with open(run / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((run / "run.json").read_text())


@pytest.fixture(scope="module")
def sim() -> Iterator[StackProcess]:
    with spawn_stack(SimOptions(cost=FAST).with_free_ports()) as stack:
        yield stack


@pytest.fixture(scope="module")
def pd_sim() -> Iterator[StackProcess]:
    options = SimOptions(mode="pd_disaggregated", cost=FAST).with_free_ports()
    with spawn_stack(options) as stack:
        yield stack


def test_a_repeated_cold_start_run_finds_nothing_cached(sim: StackProcess, tmp_path: Path) -> None:
    first, _ = run_scenario(sim, tmp_path, "first", "ColdStartUser", mode="non_disaggregated")
    second, _ = run_scenario(sim, tmp_path, "second", "ColdStartUser", mode="non_disaggregated")
    for rows in (first, second):
        ok = [row for row in rows if row["ok"] == "1"]
        assert len(ok) >= 5
        assert all(row["expected_hit"] == "0" for row in ok)
        # Prompts are unique from their first token in every run: not one 16-token block
        # of the second run was cached by the first.
        assert sum(int(row["cached_tokens"]) for row in ok) == 0


def test_the_servers_cached_share_over_the_window_reaches_run_json(
    sim: StackProcess, tmp_path: Path
) -> None:
    rows, meta = run_scenario(
        sim, tmp_path, "batch", "BatchProcessingUser", mode="non_disaggregated"
    )
    server = meta["server"]
    assert server["engine"] == "sim"
    assert server["cached_share_formula"]
    deltas = server["sources"]["target"]["deltas"]
    hits = sum(v for k, v in deltas.items() if k.startswith("vllm:prefix_cache_hits_total"))
    queries = sum(v for k, v in deltas.items() if k.startswith("vllm:prefix_cache_queries_total"))
    assert queries > 0
    assert server["cached_share"] == pytest.approx(hits / queries)
    assert server["cached_share"] > 0.5
    assert meta["workloads"]["batch_processing"]["configured_reuse_ratio"] == 0.95


def test_counter_deltas_leave_out_the_warm_up(sim: StackProcess, tmp_path: Path) -> None:
    rows, meta = run_scenario(
        sim, tmp_path, "warm", "BatchProcessingUser", mode="non_disaggregated", warmup_s=2.0
    )
    deltas = meta["server"]["sources"]["target"]["deltas"]
    prompt = sum(v for k, v in deltas.items() if k.startswith("vllm:prompt_tokens_total"))
    start = meta["window"]["start_unix_s"] + meta["window"]["warmup_s"]
    every_row = sum(int(row["prompt_tokens"]) for row in rows if row["ok"] == "1")
    # Requests in flight when the warm-up ends may land on either side of the snapshot:
    # those started well after it must all be in the deltas, and the warm-up's must not.
    well_after = sum(
        int(row["prompt_tokens"])
        for row in rows
        if row["ok"] == "1" and float(row["start_unix_s"]) >= start + 0.3
    )
    assert well_after <= prompt < every_row


def test_pd_rows_carry_the_per_request_split_and_the_store_is_named(
    pd_sim: StackProcess, tmp_path: Path
) -> None:
    rows, meta = run_scenario(
        pd_sim, tmp_path, "pd", "BatchProcessingUser", mode="pd_disaggregated"
    )
    ok = [row for row in rows if row["ok"] == "1"]
    assert len(ok) >= 5
    for row in ok:
        assert row["mode"] == "pd_disaggregated"
        for column in ("server_prefill_ms", "server_transfer_ms", "server_decode_ms"):
            assert row[column] != "", (column, row)
    server = meta["server"]
    # The prefix cache lives in the prefiller: the share is read there, not at the proxy.
    assert any("prefill" in name for name in server["cached_share_sources"])
    assert server["cached_share"] is not None and server["cached_share"] > 0.5
    expected_store = (
        "mooncake" if importlib.util.find_spec("mooncake") is not None else "in-process"
    )
    assert server["kv_store"] == expected_store


def test_a_target_serving_another_model_is_one_line_before_any_load(
    sim: StackProcess, tmp_path: Path
) -> None:
    config = tmp_path / "other-model.yaml"
    config.write_text("target: {model: some/other-model}\n")
    completed = run_locust(
        [
            "-f", str(REPO / "locustfiles"), "ColdStartUser", "--headless", "-u", "1",
            "-t", "5s", "--host", sim.base_url, "--kv-config", str(config),
            "--kv-results", str(tmp_path / "results"),
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if line.startswith("kvswarm:")]
    assert len(lines) == 1, lines
    assert "some/other-model" in lines[0] and "target.model" in lines[0]
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").iterdir())
