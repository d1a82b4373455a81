"""Every fault the simulator injects, mixed, over 1,000+ requests of a real Locust run
(standalone, then a master and two workers): the test keeps running, every request is in
requests.csv once, and each lands in the failure category its fault calls for, request by
request (the sim's fault log and ground truth joined with requests.csv on request id)."""

from __future__ import annotations

import csv
import json
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

from kvswarm.sim import CostModel, FaultConfig, SimOptions, spawn_stack
from kvswarm.sim.faults import NOT_LISTENING, read_fault_log
from kvswarm.sim.groundtruth import read_ground_truth
from kvswarm.sim.stack import StackProcess
from tests.integration.test_sim_faults import EXPECTED_CATEGORY
from tests.support.processes import REPO, free_port, run_dirs, start_locust

LOCUSTFILE = str(REPO / "tests" / "support" / "locustfile_faults.py")
MIN_REQUESTS = 1000
USERS = 30
# Kinds that cost a user a timeout are rarer; refusals rarer still (each refuses every
# user that connects in the pause, again and again).
RATES = {kind: 0.025 for kind in EXPECTED_CATEGORY} | {
    "stall_first_token": 0.01,
    "stall": 0.01,
    "never_ending": 0.01,
    "huge_chunk": 0.01,
    "refuse_connections": 0.002,
}
CONFIG = """
target: {engine: sim}
generation: {max_tokens: 6}
timeouts: {connect_s: 5, ttft_s: 1, idle_s: 1, total_s: 2}
"""


def sim_options(tmp_path: Path) -> SimOptions:
    faults = FaultConfig(
        **{f"{kind}_rate": rate for kind, rate in RATES.items()},
        stall_s=1.5,  # longer than timeouts.ttft_s and idle_s
        huge_chunk_bytes=3_000_000,  # several MB, within the client's 16 MiB line limit
        refuse_s=0.1,
        log=str(tmp_path / "faults.jsonl"),
    )
    cost = CostModel(prefill_base_ms=1.0, prefill_ms_per_token=0.0, decode_base_ms=2.0)
    return SimOptions(
        cost=cost, faults=faults, seed=11, ground_truth=str(tmp_path / "truth.jsonl")
    ).with_free_ports()


def locust(args: list[str], cwd: Path) -> subprocess.Popen:
    return start_locust(["-f", LOCUSTFILE, *args], cwd)


def finish(process: subprocess.Popen, timeout_s: float = 120) -> str:
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def config_args(tmp_path: Path) -> list[str]:
    """The config, and no pre-flight request (it would take the sim's first fault draw,
    and may be refused by design) where kvswarm has one."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    # The pre-flight request could draw a fault of its own and stop the run: this test
    # is about the load's requests.
    return ["--kv-config", str(config), "--kv-skip-preflight"]


def wait_until_idle(sim: StackProcess, timeout_s: float = 20) -> None:
    """Until the sim runs no request (stalled ones notice their client left at their next
    write), so its ground truth holds every request it saw."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(sim.metrics_urls["server"], timeout=5) as reply:
            text = reply.read().decode()
        running = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("vllm:num_requests_running")
        ]
        if running and sum(running) == 0:
            return
        time.sleep(0.1)


def read_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "requests.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def check_every_request_in_its_category(run: Path, tmp_path: Path, output: str) -> None:
    rows = read_rows(run)
    ids = [row["request_id"] for row in rows]
    assert len(ids) >= MIN_REQUESTS, output[-3000:]
    assert len(set(ids)) == len(ids), "a request is in requests.csv twice"
    assert "Traceback" not in output, output[-3000:]
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "finished"

    served = {entry["request_id"] for entry in read_ground_truth(tmp_path / "truth.jsonl")}
    log = read_fault_log(tmp_path / "faults.jsonl")
    injected = {e["request_id"]: e["fault"] for e in log if e["request_id"] is not None}
    pauses = [(e["from_unix_s"], e["until_unix_s"]) for e in log if e["fault"] == NOT_LISTENING]
    by_id = {row["request_id"]: row for row in rows}
    assert served <= set(by_id), "the server saw requests that requests.csv lacks"
    assert set(injected) <= served

    # What the server never saw: connections refused while it was not listening, and
    # (rarely) one the kernel had half-opened when the listener closed, reset after the
    # client had sent its request: a `disconnect` to the client, as with any server.
    unseen = [row for row in rows if row["request_id"] not in served]
    assert pauses and any(row["failure"] == "connect" for row in unseen)
    for row in unseen:
        start = float(row["start_unix_s"])
        assert any(begin - 1.0 <= start <= end for begin, end in pauses), row
        reset = row["failure"] == "disconnect" and "reset" in row["error"].lower()
        assert row["failure"] == "connect" or reset, row

    # A request in flight when the run ended is `cancelled` (Locust may stop a user that
    # has just left its wait): at most one per user, and no category to compare.
    cancelled = {rid for rid in served if by_id[rid]["failure"] == "cancelled"}
    assert len(cancelled) <= USERS
    compared = served - cancelled

    # Request by request: the category kvswarm recorded is the one the fault calls for.
    expected = {rid: EXPECTED_CATEGORY.get(injected.get(rid, ""), "") for rid in compared}
    wrong = [
        (rid, injected.get(rid), by_id[rid]["failure"], by_id[rid]["error"])
        for rid in compared
        if by_id[rid]["failure"] != expected[rid]
    ]
    assert not wrong, wrong[:10]
    recorded = Counter(by_id[rid]["failure"] for rid in compared)
    assert recorded == Counter(expected.values())
    assert set(injected.values()) == set(EXPECTED_CATEGORY), "a fault kind never happened"


def test_mixed_faults_at_volume_are_each_counted_once_in_their_category(tmp_path: Path) -> None:
    results = tmp_path / "results"
    with spawn_stack(sim_options(tmp_path), log_path=tmp_path / "sim.log") as sim:
        process = locust(
            [
                "--headless", "-u", str(USERS), "-r", str(USERS), "-t", "8s",
                "--stop-timeout", "30", "--host", sim.base_url, "--kv-results", str(results),
                *config_args(tmp_path),
            ],
            tmp_path,
        )  # fmt: skip
        output = finish(process)
        wait_until_idle(sim)
    assert process.returncode in (0, 1), output[-3000:]
    (run,) = run_dirs(results)
    check_every_request_in_its_category(run, tmp_path, output)


def test_mixed_faults_over_a_master_and_two_workers_are_each_counted_once(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    port = free_port()
    with spawn_stack(sim_options(tmp_path), log_path=tmp_path / "sim.log") as sim:
        extra = config_args(tmp_path)
        master = locust(
            [
                "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
                "--headless", "--expect-workers", "2", "-u", str(USERS), "-r", str(USERS),
                "-t", "8s", "--stop-timeout", "30", "--host", sim.base_url,
                "--kv-results", str(results), *extra,
            ],
            tmp_path,
        )  # fmt: skip
        workers = [
            locust(
                ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port), *extra],
                tmp_path,
            )
            for _ in range(2)
        ]
        output = finish(master)
        worker_output = [finish(worker) for worker in workers]
        wait_until_idle(sim)
    assert master.returncode in (0, 1), output[-3000:]
    (run,) = run_dirs(results)
    check_every_request_in_its_category(run, tmp_path, output + "".join(worker_output))
    rows = read_rows(run)
    assert len({row["worker_id"] for row in rows}) == 2
