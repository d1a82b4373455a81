"""A server that rejects prompts as too long for its context ends the run once, clearly.

The config claims a larger context than the server has (a common mistake), so the start
check passes; the first "maximum context length" 400 then stops the whole test with one
line and exit code 2, rather than counting a stream of http_400 failures.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from kvswarm.sim.model import CostModel
from kvswarm.sim.options import SimOptions
from kvswarm.sim.stack import spawn_stack
from tests.support.processes import REPO, run_locust

CONFIG = """
target: {max_model_len: 32768}
generation: {max_tokens: 8}
scenarios:
  cold_start: {unique_tokens: 1000}
"""


def test_context_length_rejection_stops_the_run_with_one_line(tmp_path: Path) -> None:
    options = dataclasses.replace(SimOptions().with_free_ports(), cost=CostModel(max_model_len=256))
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    with spawn_stack(options) as stack:
        completed = run_locust(
            [
                "-f", str(REPO / "locustfiles"), "ColdStartUser", "--headless",
                "-u", "4", "-r", "4", "-t", "30s", "--host", stack.base_url,
                "--kv-config", str(config), "--kv-results", str(tmp_path / "results"),
            ],
            cwd=tmp_path,
        )  # fmt: skip
    assert completed.returncode == 2
    lines = [line for line in completed.stderr.splitlines() if line.startswith("kvswarm:")]
    assert len(lines) == 1, lines
    assert "scenario cold_start: the server rejected a prompt as too long" in lines[0]
    assert "maximum context length is 256 tokens" in lines[0]
    assert "target.max_model_len" in lines[0]
    (run,) = (tmp_path / "results").iterdir()
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "aborted"
    assert "too long for the model's context" in meta["status_reason"]
