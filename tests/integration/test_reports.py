"""Reports from a real short load against the simulated stack, in both deployment modes
and two scenarios: `kvswarm compare` tables agree with comparison.json and with an
independent recomputation from requests.csv, and the HTML opens in a real headless
Chromium (Debian's chromium + chromium-driver) with charts and no console errors."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from kvswarm.cli import main
from kvswarm.sim import SimOptions, spawn_stack
from tests.integration.test_sim_http import FAST
from tests.support.processes import REPO, run_dirs, run_locust

pytestmark = pytest.mark.slow

SCENARIOS = {
    "cold_start": {"unique_tokens": 300},
    "batch_processing": {"shared_tokens_min": 300, "shared_tokens_max": 400, "unique_tokens": 40},
}
USERS = {"cold_start": "ColdStartUser", "batch_processing": "BatchProcessingUser"}
MODES = ("non_disaggregated", "pd_disaggregated")


def _run(stack, tmp: Path, mode: str, scenario: str) -> Path:
    extra = {name: url for name, url in stack.metrics_urls.items() if name != "server"}
    config = tmp / f"{mode}-{scenario}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "target": {"max_model_len": 4096},
                "generation": {"max_tokens": 8},
                "scenarios": SCENARIOS,
                "metrics_endpoints": extra,
            }
        )
    )
    out = tmp / mode / scenario
    completed = run_locust(
        ["-f", str(REPO / "locustfiles"), USERS[scenario], "--headless", "-u", "2", "-r", "4",
         "-t", "3s", "--host", stack.base_url, "--kv-mode", mode, "--kv-config", str(config),
         "--kv-results", str(out)],
        cwd=tmp,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(out)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Path]]:
    tmp = tmp_path_factory.mktemp("reports")
    made = []
    for mode in MODES:
        with spawn_stack(SimOptions(mode=mode, cost=FAST).with_free_ports()) as stack:
            made += [_run(stack, tmp, mode, scenario) for scenario in SCENARIOS]
    yield made


@pytest.fixture(scope="module")
def comparison(runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("comparison")
    assert main(["compare", *map(str, runs), "-o", str(out)]) == 0
    return out


def md_table(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def recompute(run: Path) -> dict[str, float]:
    with open(run / "requests.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle)]
    ok = [r for r in rows if r["ok"] == "1"]

    def values(column: str) -> np.ndarray:
        return np.array([float(r[column]) for r in ok if r[column] != ""])

    ttft = values("ttft_ms")
    return {
        "requests": len(rows),
        "ok": len(ok),
        "ttft_p50": float(np.percentile(ttft, 50)),
        "ttft_p90": float(np.percentile(ttft, 90)),
        "ttft_p99": float(np.percentile(ttft, 99)),
        "tpot_p50": float(np.median(values("tpot_ms"))),
        "e2e_p50": float(np.median(values("e2e_ms"))),
    }


def test_markdown_tables_match_comparison_json_and_requests_csv(
    runs: list[Path], comparison: Path
) -> None:
    text = (comparison / "comparison.md").read_text()
    data = json.loads((comparison / "comparison.json").read_text())
    table = {(r[0], r[1]): r for r in md_table(text, "| mode | scenario | requests |")}
    side = {(r["mode"], r["scenario"]): r for r in data["side_by_side"]}
    assert set(table) == set(side) == {(m, s) for m in MODES for s in SCENARIOS}
    for run in runs:
        mode, scenario = run.parent.parent.name, run.parent.name
        row, js, truth = table[(mode, scenario)], side[(mode, scenario)], recompute(run)
        assert truth["ok"] >= 5
        assert (
            row[2:4]
            == [str(truth["requests"]), str(truth["ok"])]
            == [str(js["requests"]), str(js["ok"])]
        )
        expected = [truth["ttft_p50"], truth["ttft_p90"], truth["ttft_p99"], truth["tpot_p50"],
                    truth["e2e_p50"]]  # fmt: skip
        from_json = [js["ttft_ms"]["50"], js["ttft_ms"]["90"], js["ttft_ms"]["99"],
                     js["tpot_ms_p50"], js["e2e_ms_p50"]]  # fmt: skip
        assert row[6:11] == [f"{v:.2f}" for v in expected] == [f"{v:.2f}" for v in from_json]
        assert row[4] == f"{js['requests_per_s']:.3f}"
    verdicts = md_table(text, "| scenario | measure | groups |")
    judged = [v for v in data["verdicts"]]
    # Both verdict tables, in the same order as comparison.json.
    cache_rows = md_table(text.split("## Cache effect")[1], "| scenario | measure |")
    mode_rows = md_table(text.split("## Deployment modes")[1], "| scenario | measure |")
    assert len(cache_rows) + len(mode_rows) == len(judged) and verdicts == cache_rows
    for row, verdict in zip(cache_rows + mode_rows, judged, strict=True):
        estimate = "-" if verdict["estimate"] is None else f"{verdict['estimate'] * 100:.1f}%"
        assert row[5] == estimate and row[8] == verdict["outcome"]
    assert {v["analysis"] for v in judged} == {"cache effect", "deployment modes"}


def test_the_html_opens_in_headless_chromium_with_charts_and_no_console_errors(
    comparison: Path, tmp_path: Path
) -> None:
    from matplotlib.image import imread
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, (
        "install Debian's chromium chromium-driver (scripts/setup-system.sh --dev)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,2400", "--disable-gpu"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get((comparison / "comparison.html").as_uri())
        images = driver.find_elements("css selector", "figure img")
        assert len(images) >= 4
        assert all(driver.execute_script("return arguments[0].naturalWidth", i) > 100
                   for i in images)  # fmt: skip
        driver.execute_script("arguments[0].scrollIntoView()", images[0])
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert errors == []
    pixels = imread(shot)[..., :3].reshape(-1, 3)
    colours = np.unique((pixels * 255).astype(np.uint8), axis=0)
    assert len(colours) > 100, "the screenshot is nearly blank"
