"""The tests' stream server requiring an API key, logging the headers of every request.

The secrets tests run kvswarm against two of them: one as the target (401 without the
key) and one as a plain metrics endpoint; each one's headers log says which requests
carried an `Authorization` header, whatever the path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.support.processes import REPO

__all__ = ["KeyedServer", "listening_addresses", "start_keyed_server"]


@dataclass
class KeyedServer:
    """tests/support/streamserver.py with `--api-key` and `--headers-log`."""

    process: subprocess.Popen
    port: int
    headers_log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        """Every request received so far: method, path and lower-cased headers."""
        if not self.headers_log_path.exists():
            return []
        lines = self.headers_log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_keyed_server(directory: Path, name: str, api_key: str = "") -> KeyedServer:
    """A stream server (TTFT 5 ms, TPOT 2 ms, a /metrics page) logging headers to
    `directory/<name>-headers.jsonl`; with `api_key`, API paths answer 401 to requests
    without `Bearer <api_key>`."""
    headers_log = directory / f"{name}-headers.jsonl"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "tests.support.streamserver", "--port", "0",
            "--ttft-ms", "5", "--tpot-ms", "2", "--api-key", api_key,
            "--headers-log", str(headers_log), "--metrics",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = process.stdout.readline() if process.stdout else ""
    if not line.startswith("PORT "):
        process.kill()
        raise RuntimeError(f"stream server did not start: {line!r}")
    return KeyedServer(process=process, port=int(line.split()[1]), headers_log_path=headers_log)


def listening_addresses(pid: int) -> dict[int, str]:
    """Port -> the address it is bound to, for every TCP socket that the process `pid`
    and its children listen on, as the kernel's socket table says."""
    found: dict[int, str] = {}
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found  # it has just exited: it listens on nothing
    for process in processes:
        try:
            connections = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, FileNotFoundError):
            continue  # exited while we looked
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                found[connection.laddr.port] = connection.laddr.ip
    return found
