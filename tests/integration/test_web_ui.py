"""kvswarm in Locust's web UI: the kvswarm tab in a real headless Chromium (Debian's chromium
+ chromium-driver, through Selenium), options from the start form, the downloads, and the
kvswarm table in a headless run's `--html` report."""

from __future__ import annotations

import csv
import html.parser
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from kvswarm.locust.llmtable import COLUMNS, latency_cell
from kvswarm.sim import SimOptions, spawn_stack
from kvswarm.sim.stack import StackProcess
from tests.integration.test_locust_plugin import post, wait_for, wait_for_status
from tests.integration.test_sim_http import FAST
from tests.support.liveruns import kvswarm_locust, scrape, stop, wait_for_run_to_close
from tests.support.processes import REPO, free_port, run_dirs, run_locust

# The README's screenshot is remade with KVSWARM_SCREENSHOT_DIR=docs/images; otherwise
# the test's own directory keeps it (a test run leaves the repository as it was).
SCREENSHOT_NAME = "web-ui-kvswarm-tab.png"
CHARTS_SCREENSHOT_NAME = "web-ui-kvswarm-charts.png"
LOCUST_LOG = "locust.log"
CLASSES = ("ColdStartUser", "BatchProcessingUser")
SCENARIOS = ("batch_processing", "cold_start")


@pytest.fixture(scope="module")
def sim() -> Iterator[StackProcess]:
    with spawn_stack(SimOptions(cost=FAST).with_free_ports()) as stack:
        yield stack


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "target": {"max_model_len": 4096},
                "generation": {"max_tokens": 16},
                "scenarios": {
                    "cold_start": {"unique_tokens": 300},
                    "batch_processing": {
                        "shared_tokens_min": 300, "shared_tokens_max": 400, "unique_tokens": 40,
                    },
                },
            }
        )
    )  # fmt: skip
    return path


def chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert binary and driver_path, (
        "install Debian's chromium chromium-driver (scripts/setup-system.sh --dev)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1600,900", "--disable-gpu"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(10)
    return driver


def start_from_the_form(driver: Any, base: str) -> None:
    """Fill Locust's start form, changing kvswarm options, and press START."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.expected_conditions import visibility_of_element_located
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(base + "/")
    for name, value in (("userCount", "4"), ("spawnRate", "4")):
        # React keeps the field's value (clear() is undone): erase it as a person would.
        driver.find_element(By.NAME, name).send_keys(Keys.END, Keys.BACKSPACE * 8, value)
    driver.find_element(By.XPATH, "//*[text()='Custom parameters']").click()
    # The section opens with an animation: its fields take input once they are shown.
    WebDriverWait(driver, 10).until(visibility_of_element_located((By.NAME, "kvEndpoint")))
    Select(driver.find_element(By.NAME, "kvEndpoint")).select_by_value("completions")
    Select(driver.find_element(By.NAME, "kvMode")).select_by_value("pd_disaggregated")
    driver.find_element(By.NAME, "kvRunId").send_keys("from-the-form")
    # A load plan: open loop, Poisson arrivals at 12 requests/s for the fleet.
    Select(driver.find_element(By.NAME, "kvArrival")).select_by_value("poisson")
    driver.find_element(By.NAME, "kvRate").send_keys("12")
    driver.find_element(By.XPATH, "//button[@type='submit']").click()


def tab_rows(driver: Any) -> dict[str, dict[str, str]]:
    """The kvswarm tab's rows, by their first cell, as column key -> text."""
    from selenium.webdriver.common.by import By

    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "table tbody tr"):
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) == len(COLUMNS):
            rows[cells[0]] = dict(zip((key for key, _ in COLUMNS), cells, strict=True))
    return rows


def running_rows(driver: Any, timeout_s: float = 30) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = tab_rows(driver)
        if all(s in rows and rows[s]["ttft"] and rows[s]["tpot"] for s in SCENARIOS):
            return rows
        time.sleep(0.3)
    raise AssertionError(f"the kvswarm tab never showed both scenarios: {tab_rows(driver)}")


def chart_lines(driver: Any, base: str, timeout_s: float = 30) -> dict[str, int]:
    """Open the live charts page and wait until its TTFT chart has a line of two points or
    more for every scenario; the points of each scenario's p50 line."""
    from selenium.webdriver.common.by import By

    driver.get(base + "/kvswarm/charts")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = driver.find_elements(By.CSS_SELECTOR, "svg#ttft polyline[data-key='ttft_p50_ms']")
        points = {
            line.get_attribute("data-scenario"): len(line.get_attribute("points").split())
            for line in lines
        }
        if set(points) == set(SCENARIOS) and min(points.values()) >= 2:
            return points
        time.sleep(0.5)
    raise AssertionError("the live charts never drew a TTFT line for every scenario")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


def start_web_ui(tmp_path: Path, args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """`kvswarm locust -f locustfiles ARGS` with the web UI on a free loopback port, its
    output in `tmp_path/locust.log`; the process and the UI's base URL."""
    port = free_port()
    process = kvswarm_locust(
        ["-f", str(REPO / "locustfiles"), "--web-host", "127.0.0.1", "--web-port", str(port),
         *args],
        tmp_path,
        tmp_path / LOCUST_LOG,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def wait_for_count(url: str, key: str, count: int, timeout_s: float = 60) -> None:
    """Poll a JSON page of the web UI until its `key` reaches `count`."""
    deadline = time.monotonic() + timeout_s
    while get_json(url)[key] < count:
        assert time.monotonic() < deadline, f"{url} never had {key} {count}"
        time.sleep(0.2)


def test_the_kvswarm_tab_shows_every_scenario_as_the_live_view_does(
    sim: StackProcess, config: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    results = tmp_path / "results"
    exporter_port = free_port()
    process, base = start_web_ui(
        tmp_path,
        ["--host", sim.base_url, "--kv-config", str(config), "--kv-results", str(results),
         "--kv-server-sample-interval", "0.5", "--kv-exporter-port", str(exporter_port),
         *CLASSES],
    )  # fmt: skip
    driver = chromium()
    try:
        wait_for(base + "/")
        start_from_the_form(driver, base)
        driver.find_element(By.XPATH, "//button[normalize-space()='kvswarm']").click()
        while_running = running_rows(driver)
        for scenario in SCENARIOS:
            assert float(while_running[scenario]["ttft"].split(" / ")[0]) > 0
            assert float(while_running[scenario]["tpot"].split(" / ")[0]) > 0
            assert while_running[scenario]["mode"] == "pd_disaggregated"
        assert "CPU" in while_running["load generators"]["detail"]
        where = Path(os.environ.get("KVSWARM_SCREENSHOT_DIR") or tmp_path)
        where.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(where / SCREENSHOT_NAME))
        charted = chart_lines(driver, base)
        timeline = get_json(base + "/kvswarm/timeline")
        driver.save_screenshot(str(where / CHARTS_SCREENSHOT_NAME))

        post(base + "/stop", {})
        run = results / "from-the-form"
        wait_for_status(run)
        # The test is over: the tab and the live view now hold the same, final records.
        driver.get(base + "/?tab=kvswarm")
        rows = running_rows(driver)
        live = get_json(base + "/kvswarm/live")
        downloaded = get_json(base + "/kvswarm/run.json")
        exported = scrape(f"http://127.0.0.1:{exporter_port}/metrics")
    finally:
        driver.quit()
        stop(process)
    for scenario in SCENARIOS:
        for metric in ("ttft", "tpot", "itl", "e2e"):
            entry = live["percentiles_ms"][scenario][metric]
            assert rows[scenario][metric] == latency_cell([entry[p] for p in ("p50", "p90", "p99")])
    assert "prefix-cache hit rate" in rows["server (window so far)"]["detail"]
    # The exporter counted the same requests as the tab, per scenario (both leave out the
    # requests the stop cancelled).
    for scenario in SCENARIOS:
        counted = sum(
            value for (name, labels), value in exported.items()
            if name == "kvswarm_requests_total" and dict(labels)["scenario"] == scenario
            and dict(labels)["status"] != "cancelled"
        )  # fmt: skip
        assert counted == int(rows[scenario]["requests"])
    # The charts drew every closed interval of the timeline, per scenario (the page and
    # the JSON were read moments apart: the JSON may hold an interval more).
    for scenario in SCENARIOS:
        points = [p for p in timeline["series"][scenario] if p["ttft_p50_ms"] is not None]
        assert 2 <= charted[scenario] <= len(points) <= charted[scenario] + 1
    meta = json.loads((run / "run.json").read_text())
    with open(run / "requests.csv", newline="") as handle:
        requests = list(csv.DictReader(handle))
    # Cancelled requests (in flight at the stop) are counted apart, as in the summary.
    finished = [r for r in requests if r["failure"] != "cancelled"]
    assert sum(int(rows[s]["requests"]) for s in SCENARIOS) == len(finished)
    assert downloaded == meta
    assert meta["options"]["endpoint"] == "completions"
    assert meta["mode"] == "pd_disaggregated"
    assert meta["options"]["run_id"] == "from-the-form"
    assert meta["options"]["arrival"]["kind"] == "poisson"
    assert meta["options"]["arrival"]["rate_per_s"] == 12.0
    # Open loop: every request went on the schedule.
    assert all(r["scheduled_unix_s"] for r in requests)
    assert meta["locust"]["users"] == 4


def test_a_masters_kvswarm_tab_covers_every_worker(
    sim: StackProcess, config: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    results = tmp_path / "results"
    master_port = free_port()
    common = ["--kv-config", str(config), *CLASSES]
    master, base = start_web_ui(
        tmp_path,
        [*common, "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
         str(master_port), "--host", sim.base_url, "--kv-results", str(results),
         "--kv-exporter-port", "0"],
    )  # fmt: skip
    workers = [
        kvswarm_locust(
            [
                "-f",
                str(REPO / "locustfiles"),
                *common,
                "--worker",
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(master_port),
            ],
            tmp_path,
            tmp_path / f"worker-{n}.log",
        )  # fmt: skip
        for n in range(2)
    ]
    driver = chromium()
    try:
        wait_for(base + "/")
        wait_for_count(base + "/worker-count", "worker_count", 2)
        start_from_the_form(driver, base)
        driver.find_element(By.XPATH, "//button[normalize-space()='kvswarm']").click()
        while_running = running_rows(driver)
        post(base + "/stop", {})
        run = results / "from-the-form"
        wait_for_status(run)
        driver.get(base + "/?tab=kvswarm")
        rows = running_rows(driver)
    finally:
        driver.quit()
        for process in [master, *workers]:
            stop(process)
    with open(run / "requests.csv", newline="") as handle:
        requests = list(csv.DictReader(handle))
    worker_ids = {r["worker_id"] for r in requests}
    assert len(worker_ids) == 2
    # While the test ran, the load generators row had the master's CPU and each worker's.
    detail = while_running["load generators"]["detail"]
    assert all(f"{name} " in detail for name in ("master", *worker_ids)), detail
    finished = [r for r in requests if r["failure"] != "cancelled"]
    # After the stop, the master's tab counts every worker's requests, as requests.csv does.
    assert sum(int(rows[s]["requests"]) for s in SCENARIOS) == len(finished)


def pick_scenarios_with_weights(driver: Any, base: str, weights: dict[str, int]) -> None:
    """Locust's class picker (`--class-picker`): untick every class, tick the given ones,
    set each one's weight in its settings dialog, then fill the form and press START."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.expected_conditions import invisibility_of_element_located
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(base + "/")
    driver.find_element(By.CSS_SELECTOR, "thead input[type='checkbox']").click()  # none
    for class_name, weight in weights.items():
        row = driver.find_element(By.XPATH, f"//tr[td[normalize-space()='{class_name}']]")
        row.find_element(By.CSS_SELECTOR, "input[type='checkbox']").click()
        row.find_element(By.TAG_NAME, "button").click()  # the class's settings
        field = driver.find_element(By.CSS_SELECTOR, ".MuiModal-root input[name='weight']")
        field.send_keys(Keys.END, Keys.BACKSPACE * 4, str(weight))
        driver.find_element(
            By.XPATH, "//*[contains(@class, 'MuiModal-root')]//button[@type='submit']"
        ).click()
        WebDriverWait(driver, 10).until(
            invisibility_of_element_located((By.CSS_SELECTOR, ".MuiModal-root"))
        )
    users = str(sum(weights.values()) * 2)
    for name in ("userCount", "spawnRate"):
        driver.find_element(By.NAME, name).send_keys(Keys.END, Keys.BACKSPACE * 8, users)
    driver.find_element(By.XPATH, "//button[@type='submit']").click()


def test_scenarios_and_their_weights_picked_in_the_form_decide_the_users(
    sim: StackProcess, config: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    # Every scenario class is in the picker, so every scenario's prompts must fit.
    settings = yaml.safe_load(config.read_text())
    settings["target"]["max_model_len"] = 40_000
    config.write_text(yaml.safe_dump(settings))
    results = tmp_path / "results"
    process, base = start_web_ui(
        tmp_path,
        ["--host", sim.base_url, "--kv-config", str(config), "--kv-results", str(results),
         "--kv-exporter-port", "0", "--class-picker"],
    )  # fmt: skip
    driver = chromium()
    try:
        wait_for(base + "/")
        pick_scenarios_with_weights(driver, base, {"BatchProcessingUser": 3, "ColdStartUser": 1})
        driver.find_element(By.XPATH, "//button[normalize-space()='kvswarm']").click()
        running_rows(driver)
        # Every user spawned (its first request then in flight at least: in requests.csv).
        wait_for_count(base + "/stats/requests", "user_count", 8)
        time.sleep(0.5)
        post(base + "/stop", {})
        run = wait_for_run_to_close(results, [tmp_path / LOCUST_LOG])
    finally:
        driver.quit()
        stop(process)
    with open(run / "requests.csv", newline="") as handle:
        requests = list(csv.DictReader(handle))
    users = {s: {r["user_id"] for r in requests if r["scenario"] == s} for s in SCENARIOS}
    # 8 users at weights 3:1; only the picked scenarios ran.
    assert {s: len(ids) for s, ids in users.items()} == {"batch_processing": 6, "cold_start": 2}
    assert {r["scenario"] for r in requests} == set(SCENARIOS)


class _KvswarmTable(html.parser.HTMLParser):
    """The cells of the kvswarm section's table in an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section" and ("id", "kvswarm") in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.inside = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_the_html_report_of_a_headless_run_has_the_kvswarm_table(
    sim: StackProcess, config: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    report = tmp_path / "locust-report.html"
    completed = run_locust(
        ["-f", str(REPO / "locustfiles"), *CLASSES, "--headless", "-u", "4", "-r", "4",
         "-t", "3s", "--host", sim.base_url, "--kv-config", str(config),
         "--kv-results", str(results), "--html", str(report)],
        cwd=tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    (run,) = run_dirs(results)
    with open(run / "requests.csv", newline="") as handle:
        requests = list(csv.DictReader(handle))
    parser = _KvswarmTable()
    parser.feed(report.read_text(encoding="utf-8"))
    table = {
        cells[0]: dict(zip((key for key, _ in COLUMNS), cells, strict=True))
        for cells in parser.rows
        if cells
    }
    assert set(table) == set(SCENARIOS)
    for scenario in SCENARIOS:
        mine = [r for r in requests if r["scenario"] == scenario and r["failure"] != "cancelled"]
        ok = [r for r in mine if r["ok"] == "1"]
        assert int(table[scenario]["requests"]) == len(mine) > 0
        for metric in ("ttft", "tpot", "e2e"):
            values = [float(r[f"{metric}_ms"]) for r in ok if r[f"{metric}_ms"]]
            expected = latency_cell(list(np.percentile(values, (50, 90, 99))))
            assert table[scenario][metric] == expected
        assert table[scenario]["mode"] == "non_disaggregated"
