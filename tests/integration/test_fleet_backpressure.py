"""A master that cannot keep up with its workers' records still closes the run with every
record kept once, and run.json says how far it fell behind."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

from tests.support.processes import REPO, StreamServer, free_port, run_dirs, start_locust

LOCUSTFILE = str(REPO / "tests" / "support" / "locustfile_synthetic.py")


def locust(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return start_locust(["-f", LOCUSTFILE, *args], cwd, env)


def test_a_master_behind_on_records_closes_the_run_with_every_record_kept_once(
    stream_server: StreamServer, tmp_path: Path
) -> None:
    # Workers keep 2,000 records/s; a sink on the master takes 2 ms per record (at most
    # 500/s), so most of the records wait on the workers and drain after the end. The
    # users send no HTTP; the server is there for the checks before a test starts.
    env = {
        **os.environ,
        "KVSWARM_EXPORTER_PORT": "0",
        "KV_BENCH_RATE_PER_USER": "200",
        "KV_BENCH_SINK_US": "2000",
    }
    port = free_port()
    master = locust(
        [
            "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
            "--headless", "--expect-workers", "2", "-u", "10", "-r", "10", "-t", "3s",
            "--host", stream_server.url, "--kv-results", str(tmp_path / "results"),
        ],
        tmp_path,
        env,
    )  # fmt: skip
    worker_args = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    workers = [locust(worker_args, tmp_path, env) for _ in range(2)]
    output, _ = master.communicate(timeout=240)
    for worker in workers:
        worker.communicate(timeout=60)
    assert master.returncode == 0, output[-3000:]
    (run,) = run_dirs(tmp_path / "results")
    meta = json.loads((run / "run.json").read_text())
    with open(run / "requests.csv", newline="") as handle:
        ids = [row["request_id"] for row in csv.DictReader(handle)]
    fleet = meta["fleet"]
    assert meta["status"] == "finished"
    assert fleet["lost_workers"] == [] and fleet["late_records"] == 0
    assert len(ids) == len(set(ids)) == sum(w["records"] for w in fleet["workers"].values())
    assert meta["records"]["total"] == len(ids)
    assert all(w["final_batch"] for w in fleet["workers"].values())
    # The master fell behind, the workers held the backlog, and the run waited for it.
    assert max(w["held_max_records"] for w in fleet["workers"].values()) > 0
    assert max(w["final_after_s"] for w in fleet["workers"].values()) > 0
    # The measured window ends when the test stopped, not when the backlog was in.
    ended = datetime.fromisoformat(meta["ended_at"]).timestamp()
    assert meta["window"]["end_unix_s"] < ended
