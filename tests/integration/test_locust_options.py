"""kvswarm's Locust options: config errors end the run cleanly; secrets stay out of results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.processes import REPO, StreamServer, run_dirs, run_locust

LOCUSTFILE = str(REPO / "tests" / "support" / "locustfile_basic.py")

BAD_CONFIGS = {
    "wrong_type": (
        "generation:\n  max_tokens: lots\n",
        "generation.max_tokens: must be an integer",
    ),
    "unknown_key": ("target:\n  modle: x\n", "target.modle: unknown key"),
    "missing_field": ("models:\n  big:\n    tensor_parallel_size: 2\n", "models.big.name"),
    "negative_length": (
        "scenarios:\n  cold_start:\n    unique_tokens: -1\n",
        "scenarios.cold_start.unique_tokens: must be > 0, got -1",
    ),
    "ratio": (
        "scenarios:\n  code_generation:\n    reuse_ratio: 1.5\n",
        "scenarios.code_generation.reuse_ratio: must be between 0 and 1, got 1.5",
    ),
    "active_model": (
        "active_model: nope\nmodels:\n  qwen_72b:\n    name: q\n",
        "active_model: 'nope' is not defined in models",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_and_exit_code_2(case: str, tmp_path: Path) -> None:
    text, expected = BAD_CONFIGS[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    completed = run_locust(
        ["-f", LOCUSTFILE, "--headless", "-u", "1", "-t", "1s", "--kv-config", str(config)],
        cwd=tmp_path,
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    (line,) = [ln for ln in completed.stderr.splitlines() if ln.startswith("kvswarm:")]
    assert line.startswith(f"kvswarm: {config}: ")
    assert expected in line


def test_api_key_is_sent_but_written_to_no_result_file(
    stream_server: StreamServer, tmp_path: Path
) -> None:
    secret = "sk-kvswarm-test-9f8e7d6c"
    config = tmp_path / "config.yaml"
    config.write_text(f"target:\n  api_key: {secret}\n")
    results = tmp_path / "results"
    completed = run_locust(
        [
            "-f", LOCUSTFILE, "--headless", "-u", "2", "-r", "2", "-t", "2s",
            "--host", stream_server.url, "--kv-config", str(config),
            "--kv-results", str(results), "--kv-api-key", secret,
            "--csv", str(results / "locust"), "--html", str(results / "report.html"),
        ],
        cwd=tmp_path,
        env={"OPENAI_API_KEY": secret},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    (run,) = run_dirs(results)
    assert json.loads((run / "run.json").read_text())["records"]["total"] > 0
    files = [path for path in results.rglob("*") if path.is_file()]
    assert len(files) >= 5
    for path in files:
        assert secret not in path.read_text(errors="replace"), path
    assert secret not in completed.stdout + completed.stderr
    stream_server.wait_idle()
    assert {entry["authorization"] for entry in stream_server.log()} == {f"Bearer {secret}"}
