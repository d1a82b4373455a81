"""The pre-flight request against real sockets: a target that cannot serve the run is one
line naming the URL and what is wrong; a busy one is a warning; a healthy one passes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from kvswarm.client import Timeouts
from kvswarm.preflight import preflight
from kvswarm.sim import FaultConfig, spawn_stack, start_stack
from tests.integration.test_sim_http import fast_options
from tests.support.liveruns import read_rows
from tests.support.processes import REPO, free_port, run_dirs, run_locust


def check(base_url: str, endpoint: str = "chat", timeout_s: float = 5.0):
    return preflight(
        base_url, endpoint=endpoint, model="Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4",
        api_key=None, timeouts=Timeouts(), timeout_s=timeout_s,
    )  # fmt: skip


def test_a_healthy_target_passes() -> None:
    with start_stack(fast_options()) as sim:
        assert check(sim.base_url) is None
        assert check(sim.base_url, endpoint="completions") is None


def test_a_port_where_nothing_listens_is_one_line_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    problem = check(url)
    assert problem is not None and problem.fatal
    assert problem.message.startswith(f"pre-flight: POST {url}/v1/chat/completions: ")
    assert "cannot connect" in problem.message and "\n" not in problem.message


def test_a_path_that_is_not_an_openai_endpoint_is_a_404_line() -> None:
    with start_stack(fast_options()) as sim:
        problem = check(sim.root_url + "/not-the-api")
    assert problem is not None and problem.fatal
    assert "HTTP 404" in problem.message and "target.endpoint" in problem.message


def test_an_html_page_with_status_200_is_not_an_openai_stream() -> None:
    with start_stack(fast_options(faults=FaultConfig(not_sse_rate=1.0))) as sim:
        problem = check(sim.base_url)
    assert problem is not None and problem.fatal
    assert "not an OpenAI-compatible stream" in problem.message


def test_a_server_that_accepts_and_never_answers_is_found_within_the_bound() -> None:
    faults = FaultConfig(stall_first_token_rate=1.0, stall_s=30.0)
    with start_stack(fast_options(faults=faults)) as sim:
        problem = check(sim.base_url, timeout_s=0.5)
    assert problem is not None and problem.fatal
    assert "no token within 0.5 s" in problem.message


def test_a_busy_target_is_a_warning_and_the_run_goes_on() -> None:
    with start_stack(fast_options(faults=FaultConfig(unavailable_rate=1.0))) as sim:
        problem = check(sim.base_url)
    assert problem is not None and not problem.fatal
    assert "HTTP 503" in problem.message


# --- in a real Locust run ---------------------------------------------------------


def headless(url: str, directory: Path, seconds: str, *extra: str):
    return run_locust(
        [
            "-f", str(REPO / "locustfiles"), "ColdStartUser", "--headless",
            "-u", "2", "-r", "2", "-t", seconds, "--host", url,
            "--kv-results", str(directory / "results"), *extra,
        ],
        cwd=directory,
        timeout_s=120,
    )  # fmt: skip


def test_a_run_against_a_port_where_nothing_listens_stops_before_any_load(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    completed = headless(url, tmp_path, "4s")
    assert completed.returncode == 2, completed.stderr[-2000:]
    lines = [line for line in completed.stderr.splitlines() if line.startswith("kvswarm:")]
    assert len(lines) == 1 and "pre-flight" in lines[0] and "cannot connect" in lines[0]
    assert not (tmp_path / "results").exists()  # no run was opened, no request sent


def test_a_target_that_goes_away_mid_run_is_backed_off_and_named_in_the_summary(
    tmp_path: Path,
) -> None:
    """The server is stopped two seconds into the run and started again on the same port
    about two seconds later: the users wait between refused connections instead of
    failing thousands of times, every request is in requests.csv, and the summary says
    when the target refused connections and for how long."""
    options = fast_options()
    first = spawn_stack(options)
    port = urlsplit(first.base_url).port
    run = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(REPO / "locustfiles"), "ColdStartUser",
         "--headless", "-u", "2", "-r", "2", "-t", "8s", "--host", first.base_url,
         "--kv-results", str(tmp_path / "results")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    second = None
    try:
        wait_for_rows(tmp_path / "results", 3)
        first.stop()
        time.sleep(2)
        second = spawn_stack(dataclasses.replace(options, port=port))
        _, stderr = run.communicate(timeout=120)
    finally:
        run.kill()
        for stack in (first, second):
            if stack is not None:
                stack.stop()
    (directory,) = run_dirs(tmp_path / "results")
    rows = read_rows(directory)
    refused = [row for row in rows if row["failure"] == "connect"]
    assert refused, stderr[-2000:]
    # Without the wait two users fail hundreds of times a second; with it, a handful
    # each while the server is away (0.1 + 0.2 + 0.4 + 0.8 + 1.6 s ...).
    assert len(refused) <= 2 * 8
    assert rows[-1]["ok"] == "1" or any(
        row["ok"] == "1" and row["start_unix_s"] > refused[-1]["start_unix_s"] for row in rows
    )
    summary = (directory / "summary.txt").read_text()
    assert "the target refused connections from" in summary
    assert f"({len(refused)} request" in summary or "requests failed `connect`" in summary


def wait_for_rows(results: Path, count: int, timeout_s: float = 60) -> None:
    """Until the run's requests.csv has `count` rows (it is flushed every 2 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = run_dirs(results) if results.exists() else []
        if runs and (runs[0] / "requests.csv").exists() and len(read_rows(runs[0])) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} rows after {timeout_s} s")


def test_a_stream_cut_mid_way_is_the_moment_not_the_target_and_a_warning() -> None:
    with start_stack(fast_options(faults=FaultConfig(disconnect_rate=1.0))) as sim:
        problem = check(sim.base_url)
    assert problem is not None and not problem.fatal
    assert "the run goes on" in problem.message
