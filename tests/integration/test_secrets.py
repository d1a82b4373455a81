"""The API key reaches the target and nothing else; the listeners kvswarm opens stay local.

A run against a target that refuses requests without the key (the tests' stream server
with `--api-key`), with a second server as an extra metrics endpoint, kvswarm's exporter,
Locust's `--csv` and `--html`, then `kvswarm report`: the key must be in the target's API
requests and in no other request, output file, process output or exporter page. The key
is a fresh random string per test session, so a match cannot be a coincidence.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from kvswarm.errors import ConfigError
from kvswarm.locust.options import KvOptions, RunSettings
from tests.support.keyedserver import (
    KeyedServer,
    listening_addresses,
    start_keyed_server,
)
from tests.support.processes import REPO, free_port, run_dirs

LOCUSTFILES = str(REPO / "locustfiles")
SECRET = f"sk-kvswarm-{secrets.token_hex(16)}"
# Small prompts: the run is about where the key goes, not about load.
CONFIG = """
target: {{max_model_len: 4096}}
generation: {{max_tokens: 4}}
tokenizer: {{method: server}}
scenarios:
  cold_start: {{unique_tokens: 40}}
metrics_endpoints:
  extra: {metrics_url}
"""
HOST = "http://127.0.0.1:1/v1"
# Paths of the target's API: the only requests that may carry the key.
# The target's API: completions, the pre-flight's too, /v1/models (engine detection and
# the model check) and /tokenize.
API_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/tokenize")


def kvswarm_locust(*args: str) -> list[str]:
    """`kvswarm locust ...` (Locust with kvswarm's options loaded first)."""
    return [sys.executable, "-m", "kvswarm.cli", "locust", "-f", LOCUSTFILES, *args]


def fetch(url: str, data: dict[str, str] | None = None) -> str:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as reply:
        return reply.read().decode("utf-8", "replace")


def wait_for(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fetch(url)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def files_holding(secret: str, *roots: Path) -> list[Path]:
    """Every file under `roots` (or a root that is a file) whose bytes contain `secret`."""
    files = [path for root in roots for path in ([root] if root.is_file() else root.rglob("*"))]
    return [path for path in files if path.is_file() and secret.encode() in path.read_bytes()]


def carried_key(request: dict[str, str]) -> bool:
    return any(SECRET in value for value in request.values())


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeyedServer, KeyedServer]]:
    """(target requiring SECRET, a plain metrics endpoint)."""
    directory = tmp_path_factory.mktemp("secrets-servers")
    target = start_keyed_server(directory, "target", api_key=SECRET)
    metrics = start_keyed_server(directory, "metrics")
    try:
        yield target, metrics
    finally:
        target.stop()
        metrics.stop()


@pytest.fixture(scope="module")
def config(servers: tuple[KeyedServer, KeyedServer], tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("secrets-config") / "config.yaml"
    path.write_text(CONFIG.format(metrics_url=f"{servers[1].url}/metrics"))
    return path


@dataclass
class KeyedRun:
    """A headless run given the key on the command line, and all that it produced."""

    directory: Path
    results: Path
    output: str
    exporter_pages: list[str]
    exporter_address: str
    exporter_refused_elsewhere: list[bool]
    returncode: int


@pytest.fixture(scope="module")
def keyed_run(
    servers: tuple[KeyedServer, KeyedServer], config: Path, tmp_path_factory: pytest.TempPathFactory
) -> KeyedRun:
    directory = tmp_path_factory.mktemp("secrets-run")
    results = directory / "results"
    exporter_port = free_port()
    process = subprocess.Popen(
        kvswarm_locust(
            "--headless", "-u", "2", "-r", "2", "-t", "2s", "--host", servers[0].url,
            "--kv-config", str(config), "--kv-results", str(results), "--kv-api-key", SECRET,
            "--kv-exporter-port", str(exporter_port), "--kv-server-sample-interval", "0.5",
            "--csv", str(directory / "locust"), "--csv-full-history",
            "--html", str(directory / "locust-report.html"), "ColdStartUser",
        ),
        cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    pages: list[str] = []
    address = ""
    refused: list[bool] = []
    try:
        while process.poll() is None:
            with contextlib.suppress(OSError):
                pages.append(fetch(f"http://127.0.0.1:{exporter_port}/metrics"))
            if pages and not address:
                address = listening_addresses(process.pid).get(exporter_port, "")
                refused = [refuses_connections(a, exporter_port) for a in non_loopback_addresses()]
            time.sleep(0.2)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    (run,) = run_dirs(results)
    report = subprocess.run(
        [sys.executable, "-m", "kvswarm.cli", "report", str(run),
         "--format", "md", "--format", "html", "--format", "json"],
        cwd=directory, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    return KeyedRun(
        directory=directory,
        results=results,
        output=output + report.stdout + report.stderr,
        exporter_pages=pages,
        exporter_address=address,
        exporter_refused_elsewhere=refused,
        returncode=process.returncode,
    )


def test_the_key_is_sent_with_every_api_request_to_the_target(
    keyed_run: KeyedRun, servers: tuple[KeyedServer, KeyedServer]
) -> None:
    assert keyed_run.returncode == 0, keyed_run.output[-3000:]
    api = [r for r in servers[0].requests() if r["path"].startswith(API_PATHS)]
    assert {r["path"] for r in api} >= {"/v1/chat/completions", "/tokenize"}
    assert all(r.get("authorization") == f"Bearer {SECRET}" for r in api)


def test_the_key_goes_to_no_metrics_endpoint_nor_elsewhere(
    keyed_run: KeyedRun, servers: tuple[KeyedServer, KeyedServer]
) -> None:
    target, metrics = servers
    scraped = [r for r in metrics.requests() if r["path"] == "/metrics"]
    assert scraped, "the extra metrics endpoint was never scraped"
    assert not [r for r in metrics.requests() if carried_key(r)]
    assert [r for r in target.requests() if r["path"] == "/metrics"]
    elsewhere = [r for r in target.requests() if not r["path"].startswith(API_PATHS)]
    assert not [r for r in elsewhere if carried_key(r)]


def test_no_output_file_holds_the_key(keyed_run: KeyedRun) -> None:
    (run,) = run_dirs(keyed_run.results)
    produced = {path.name for path in run.rglob("*")}
    for expected in (
        "requests.csv",
        "run.json",
        "server_metrics.jsonl",
        "report.md",
        "report.html",
    ):
        assert expected in produced, f"{expected} not written: {sorted(produced)}"
    assert (keyed_run.directory / "locust_stats.csv").exists()
    assert (keyed_run.directory / "locust-report.html").exists()
    assert files_holding(SECRET, keyed_run.directory) == []


def test_the_process_output_does_not_show_the_key(keyed_run: KeyedRun) -> None:
    assert "kvswarm: recording to" in keyed_run.output
    assert SECRET not in keyed_run.output


def test_the_exporter_neither_shows_the_key_nor_listens_beyond_loopback(
    keyed_run: KeyedRun,
) -> None:
    assert any("kvswarm_requests_total{" in page for page in keyed_run.exporter_pages)
    assert not [page for page in keyed_run.exporter_pages if SECRET in page]
    assert keyed_run.exporter_address == "127.0.0.1"
    assert all(keyed_run.exporter_refused_elsewhere)


@pytest.mark.parametrize("source", ["file", "environment"])
def test_a_key_from_a_file_or_the_environment_is_sent_and_kept_out_of_outputs(
    source: str, servers: tuple[KeyedServer, KeyedServer], config: Path, tmp_path: Path
) -> None:
    target = servers[0]
    key_file = tmp_path / "api-key"
    key_file.write_text(f"{SECRET}\n")
    key_args = ["--kv-api-key-file", str(key_file)] if source == "file" else []
    env = {"KVSWARM_API_KEY": SECRET} if source == "environment" else {}
    seen = len(target.requests())
    results = tmp_path / "results"
    completed = subprocess.run(
        kvswarm_locust(
            "--headless", "-u", "1", "-r", "1", "-t", "1s", "--host", target.url,
            "--kv-config", str(config), "--kv-results", str(results), *key_args,
            "--csv", str(tmp_path / "locust"), "--html", str(tmp_path / "report.html"),
            "ColdStartUser",
        ),
        cwd=tmp_path, env=environment_with(env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    api = [r for r in target.requests()[seen:] if r["path"].startswith(API_PATHS)]
    assert api and all(r.get("authorization") == f"Bearer {SECRET}" for r in api)
    key_file.unlink()
    assert files_holding(SECRET, tmp_path) == []
    assert SECRET not in completed.stdout + completed.stderr


def environment_with(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any API key variable, plus `extra`."""
    base = {k: v for k, v in os.environ.items() if k not in ("KVSWARM_API_KEY", "OPENAI_API_KEY")}
    return {**base, "PYTHONUNBUFFERED": "1", **extra}


def test_a_missing_key_file_is_one_line_naming_it_and_exit_code_2(
    servers: tuple[KeyedServer, KeyedServer], tmp_path: Path
) -> None:
    key_file = tmp_path / "no-such-key"
    target = servers[0]
    seen = len(target.requests())
    completed = subprocess.run(
        kvswarm_locust(
            "--headless", "-u", "1", "-t", "1s", "--host", target.url,
            "--kv-api-key-file", str(key_file), "ColdStartUser",
        ),
        cwd=tmp_path, env=environment_with({}), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    (line,) = [ln for ln in completed.stderr.splitlines() if ln.startswith("kvswarm:")]
    assert line == (
        f"kvswarm: --kv-api-key-file: {key_file}: cannot read: No such file or directory"
    )
    assert len(target.requests()) == seen


# In-process from here: how the key is settled (no load is sent).
UNUSABLE_KEY_FILES = {
    "empty": ("\n", "empty (expected the API key)"),
    "two_lines": (f"{SECRET}\nsecond line\n", "must be one word"),
    "not_utf8": (b"\xff\xfe", "not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE_KEY_FILES))
def test_an_unusable_key_file_is_refused_without_quoting_it(case: str, tmp_path: Path) -> None:
    content, expected = UNUSABLE_KEY_FILES[case]
    key_file = tmp_path / "api-key"
    if isinstance(content, bytes):
        key_file.write_bytes(content)
    else:
        key_file.write_text(content)
    with pytest.raises(ConfigError) as raised:
        RunSettings.resolve(KvOptions(api_key_file=str(key_file)), HOST)
    assert str(raised.value).startswith(f"--kv-api-key-file: {key_file}: ")
    assert expected in str(raised.value)
    assert SECRET not in str(raised.value)


def test_a_key_with_a_line_break_is_refused_wherever_it_comes_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It would become a second header line of every request."""
    monkeypatch.setenv("KVSWARM_API_KEY", f"{SECRET}\r\nX-Injected: 1")
    with pytest.raises(ConfigError, match="KVSWARM_API_KEY.*must be one word") as raised:
        RunSettings.resolve(KvOptions(), HOST)
    assert SECRET not in str(raised.value)


def test_the_first_key_given_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("  from-the-file \n")
    monkeypatch.setenv("KVSWARM_API_KEY", "from-the-environment")
    resolve = RunSettings.resolve
    assert resolve(KvOptions(api_key="given", api_key_file=str(key_file)), HOST).api_key == "given"
    assert resolve(KvOptions(api_key_file=str(key_file)), HOST).api_key == "from-the-file"
    assert resolve(KvOptions(), HOST).api_key == "from-the-environment"
    record = KvOptions(api_key="given", api_key_file=str(key_file)).for_record()
    assert record["api_key"] == "<redacted>" and record["api_key_file"] == str(key_file)


def test_the_web_ui_shows_the_key_nowhere(
    servers: tuple[KeyedServer, KeyedServer], config: Path, tmp_path: Path
) -> None:
    target = servers[0]
    web_port = free_port()
    process = subprocess.Popen(
        kvswarm_locust(
            "--web-host", "127.0.0.1", "--web-port", str(web_port), "--host", target.url,
            "--kv-config", str(config), "--kv-results", str(tmp_path / "results"),
            "--kv-api-key", SECRET, "ColdStartUser",
        ),
        cwd=tmp_path, env=environment_with({}), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{web_port}"
    pages: dict[str, str] = {}
    pages_to_read = (
        "/", "/stats/requests", "/stats/requests/csv", "/stats/failures/csv",
        "/exceptions", "/tasks", "/logs", "/stats/report", "/kvswarm/live",
    )  # fmt: skip
    try:
        wait_for(base + "/")
        pages["/ before the test"] = fetch(base + "/")
        seen = len(target.requests())
        fetch(base + "/swarm", {"user_count": "1", "spawn_rate": "1", "host": target.url})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(target.requests()) < seen + 3:
            time.sleep(0.2)
        for path in pages_to_read:
            pages[path] = fetch(base + path)
        fetch(base + "/stop", {})
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    api = [r for r in target.requests()[seen:] if r["path"].startswith(API_PATHS)]
    assert api and all(r.get("authorization") == f"Bearer {SECRET}" for r in api)
    assert [path for path, page in pages.items() if SECRET in page] == []
    assert SECRET not in output


# PD with the in-process store: with the Mooncake store, the Mooncake transfer engine that
# the simulator loads listens on every interface, and Mooncake has no option to narrow it.
@pytest.mark.parametrize(
    "mode",
    [["--mode", "non_disaggregated"], ["--mode", "pd_disaggregated", "--kv-store", "memory"]],
)
def test_the_simulator_listens_on_loopback_only_by_default(mode: list[str], tmp_path: Path) -> None:
    free_ports = ["--port", "0", "--prefiller-port", "0", "--decoder-port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "kvswarm.cli", "sim", *mode, *free_ports, "--print-json"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("{"), process.stderr.read() if process.stderr else ""
        port = urllib.parse.urlsplit(json.loads(line)["base_url"]).port
        addresses = listening_addresses(process.pid)
        refused = [refuses_connections(address, port) for address in non_loopback_addresses()]
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert port in addresses
    assert set(addresses.values()) == {"127.0.0.1"}, addresses
    assert all(refused)


def refuses_connections(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
    except OSError:
        return True
    return False


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (none in a bare container)."""
    return [
        entry.address
        for entries in psutil.net_if_addrs().values()
        for entry in entries
        if entry.family == socket.AF_INET and not entry.address.startswith("127.")
    ]
