"""The kvswarm plugin under the real `locust` command: scenarios from the config, tags,
class names, run ids, how a run ends, options from the web UI's start form.

The tests' streaming server counts one token per word and implements /tokenize, so the
scenario classes can size their prompts against it.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.processes import (
    REPO,
    StreamServer,
    free_port,
    run_dirs,
    run_locust,
    start_stream_server,
)

LOCUSTFILES = str(REPO / "locustfiles")
# The built-in scenarios, made small, and one more added in YAML only.
CONFIG = """
target: {max_model_len: 4096}
generation: {max_tokens: 4}
scenarios:
  long_context_high_reuse: {shared_tokens_min: 200, shared_tokens_max: 300, unique_tokens: 20}
  code_generation: {shared_tokens_min: 200, shared_tokens_max: 200, unique_tokens: 20}
  multi_turn_conversation: {shared_tokens_min: 50, shared_tokens_max: 80, unique_tokens: 20}
  batch_processing: {shared_tokens_min: 100, shared_tokens_max: 150, unique_tokens: 20}
  cold_start: {unique_tokens: 150}
  long_context_small:
    type: long_context_high_reuse
    shared_tokens_min: 100
    shared_tokens_max: 120
    unique_tokens: 10
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("plugin-server")
    server = start_stream_server(directory, ttft_ms=5, tpot_ms=2)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return path


def locust_args(server: StreamServer, config: Path, results: Path, *extra: str) -> list[str]:
    return [
        "-f", LOCUSTFILES, "--headless", "--host", server.url, "--kv-config", str(config),
        "--kv-results", str(results), *extra,
    ]  # fmt: skip


def rows_of(run: Path) -> list[dict[str, str]]:
    with open(run / "requests.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def kvswarm_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("kvswarm:")]


def test_tags_run_only_the_tagged_scenarios_including_one_added_in_yaml(
    server: StreamServer, config: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    completed = run_locust(
        locust_args(
            server, config, results, "-u", "4", "-r", "4", "-t", "3s",
            "--tags", "cold_start", "long_context_small",
        ),
        cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "No tasks defined" not in completed.stderr
    (run,) = run_dirs(results)
    rows = rows_of(run)
    assert {row["scenario"] for row in rows} == {"cold_start", "long_context_small"}
    meta = json.loads((run / "run.json").read_text())
    assert meta["schema_version"] == 2
    assert meta["status"] == "finished"
    assert set(meta["locust"]["user_classes"]) == {"ColdStartUser", "LongContextSmallUser"}
    assert meta["workloads"]["long_context_small"]["type"] == "long_context_high_reuse"


def test_a_misspelled_tag_is_one_line_naming_the_scenario_tags(
    server: StreamServer, config: Path, tmp_path: Path
) -> None:
    completed = run_locust(
        locust_args(server, config, tmp_path / "r", "-u", "1", "-t", "2s", "--tags", "cold_strat"),
        cwd=tmp_path,
    )
    assert completed.returncode == 2
    (line,) = kvswarm_lines(completed.stderr)
    assert "cold_strat" in line and "cold_start" in line and "long_context_small" in line
    assert "Traceback" not in completed.stderr


def test_an_unknown_user_class_is_one_line_listing_the_classes(
    server: StreamServer, config: Path, tmp_path: Path
) -> None:
    completed = run_locust(
        locust_args(server, config, tmp_path / "r", "-u", "1", "-t", "2s", "ColdStartUsr"),
        cwd=tmp_path,
    )
    assert completed.returncode == 2
    (line,) = kvswarm_lines(completed.stderr)
    assert "ColdStartUsr" in line and "ColdStartUser" in line and "LongContextSmallUser" in line


def test_a_malformed_host_is_one_line(server: StreamServer, config: Path, tmp_path: Path) -> None:
    args = locust_args(server, config, tmp_path / "r", "-u", "1", "-t", "2s")
    args[args.index("--host") + 1] = "http//x"
    completed = run_locust(args, cwd=tmp_path)
    assert completed.returncode == 2
    (line,) = kvswarm_lines(completed.stderr)
    assert "--host" in line and "http//x" in line
    assert "Traceback" not in completed.stderr


def test_an_existing_run_id_is_refused_and_the_first_run_is_untouched(
    server: StreamServer, config: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    args = locust_args(
        server, config, results, "-u", "1", "-t", "2s", "--kv-run-id", "fixed",
        "ColdStartUser", "BatchProcessingUser",
    )  # fmt: skip
    first = run_locust(args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    # One user for two scenarios: said, not silent.
    assert "1 user(s) for 2 scenarios" in first.stderr
    before = (results / "fixed" / "requests.csv").read_bytes()
    second = run_locust(args, cwd=tmp_path)
    assert second.returncode == 2
    assert any("already exists" in line for line in kvswarm_lines(second.stderr))
    assert (results / "fixed" / "requests.csv").read_bytes() == before


def test_sigterm_closes_the_run_as_interrupted(
    server: StreamServer, config: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    process = subprocess.Popen(
        [sys.executable, "-m", "locust",
         *locust_args(server, config, results, "-u", "2", "-r", "2", "-t", "60s", "ColdStartUser")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = run_dirs(results) if results.exists() else []
            if runs and len(rows_of(runs[0])) >= 5:
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    (run,) = run_dirs(results)
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["status_reason"] == "SIGTERM received before the test ended"
    assert meta["records"]["total"] == len(rows_of(run)) >= 5


def test_options_changed_in_the_start_form_take_effect(
    server: StreamServer, config: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    web_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", LOCUSTFILES, "--web-host", "127.0.0.1",
         "--web-port", str(web_port), "--kv-config", str(config), "--kv-results", str(results),
         "ColdStartUser"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{web_port}"
    try:
        wait_for(base + "/")
        form = {
            "user_count": "2", "spawn_rate": "2", "host": server.url,
            "kv_mode": "pd_disaggregated", "kv_run_id": "from-the-form",
            "kv_endpoint": "completions",
        }  # fmt: skip
        post(base + "/swarm", form)
        deadline = time.monotonic() + 30
        csv_path = results / "from-the-form" / "requests.csv"
        while time.monotonic() < deadline and not (
            csv_path.exists() and len(rows_of(csv_path.parent)) >= 3
        ):
            time.sleep(0.2)
        post(base + "/stop", {})
        wait_for_status(results / "from-the-form")
    finally:
        process.terminate()
        process.communicate(timeout=30)
    meta = json.loads((results / "from-the-form" / "run.json").read_text())
    assert meta["mode"] == "pd_disaggregated"
    assert meta["endpoint"] == "completions"
    assert meta["options"]["run_id"] == "from-the-form"
    rows = rows_of(results / "from-the-form")
    assert {row["mode"] for row in rows} == {"pd_disaggregated"}
    assert {row["endpoint"] for row in rows} == {"completions"}


def wait_for(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def post(url: str, form: dict[str, str]) -> None:
    data = urllib.parse.urlencode(form).encode()
    urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10).read()


def wait_for_status(run: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        meta_path = run / "run.json"
        if meta_path.exists() and json.loads(meta_path.read_text())["status"] != "running":
            return
        time.sleep(0.2)


def test_the_exporter_serves_the_runs_counts_while_it_runs(
    server: StreamServer, config: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "locust",
         *locust_args(server, config, results, "-u", "2", "-r", "2", "-t", "6s",
                      "--kv-exporter-port", str(port), "ColdStartUser")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    scraped = ""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "kvswarm_requests_total{" not in scraped:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    scraped = r.read().decode()
            except OSError:
                pass
            time.sleep(0.3)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert 'kvswarm_requests_total{mode="non_disaggregated",scenario="cold_start"' in scraped
    assert "kvswarm_ttft_seconds_bucket" in scraped


def test_kvswarm_locust_help_lists_the_kv_options(tmp_path: Path) -> None:
    """`locust -f locustfiles --help` cannot (Locust prints it before loading locustfiles);
    `kvswarm locust` is Locust with kvswarm's options loaded first."""
    completed = subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", "locust", "-f", LOCUSTFILES, "--help"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    for option in ("--kv-config", "--kv-mode", "--kv-run-id", "--kv-exporter-port"):
        assert option in completed.stdout
