"""Running a `mooncake_master` from the `mooncake` extra's wheel.

The wheel ships the native binary inside the package (`mooncake/mooncake_master`; the
`mooncake_master` console script only exec's it). The master's RPC listens on
`--rpc_address:--rpc_port` and its Prometheus metrics (`master_key_count`,
`master_put_start_requests_total`, ...) on `--metrics_host:--metrics_port`. Clients use
the `P2PHANDSHAKE` metadata mode, so the master's HTTP metadata server stays off.
The master is ready when its metrics page answers (about a second after start).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from kvswarm.childproc import die_with_parent, free_port, health_ok
from kvswarm.errors import KvswarmError


def master_binary() -> str | None:
    """The path of the mooncake_master executable, or None when the extra is missing."""
    try:
        spec = importlib.util.find_spec("mooncake")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / "mooncake_master"
            if candidate.is_file():
                if not os.access(candidate, os.X_OK):
                    candidate.chmod(candidate.stat().st_mode | 0o111)
                return str(candidate)
    return shutil.which("mooncake_master")


def check_port_free(host: str, port: int, what: str) -> None:
    """Raise a one-line KvswarmError when `port` cannot be bound on `host`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise KvswarmError(
                f"sim {what}: port {port} on {host} is already in use ({exc.strerror})"
            ) from None


class MooncakeMaster:
    """A mooncake_master child process on `host` (RPC and metrics ports)."""

    def __init__(self, host: str, rpc_port: int, metrics_port: int, log_path: Path) -> None:
        self.host = host
        self.rpc_port = rpc_port or free_port(host)
        self.metrics_port = metrics_port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def rpc_address(self) -> str:
        return f"{self.host}:{self.rpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def start(self, timeout_s: float = 30.0) -> None:
        binary = master_binary()
        if binary is None:
            raise KvswarmError(
                "mooncake_master not found: install the mooncake extra "
                "(pip install 'kvswarm[mooncake]'; it needs apt-get install libibverbs1)"
            )
        check_port_free(self.host, self.rpc_port, "mooncake master RPC")
        check_port_free(self.host, self.metrics_port, "mooncake master metrics")
        command = [
            binary,
            f"--rpc_address={self.host}",
            f"--rpc_port={self.rpc_port}",
            f"--metrics_host={self.host}",
            f"--metrics_port={self.metrics_port}",
            "--enable_http_metadata_server=false",
        ]
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # If the sim is killed outright, the kernel stops the master too.
                preexec_fn=die_with_parent(signal.SIGTERM),
            )
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise KvswarmError(
                    f"mooncake_master exited with code {self._process.returncode} at start: "
                    f"{self._log_tail()}"
                )
            if self._metrics_answer():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise KvswarmError(
                    f"mooncake_master did not serve {self.metrics_url} within {timeout_s:g} s"
                )
            time.sleep(0.05)

    def _metrics_answer(self) -> bool:
        return health_ok(self.metrics_url, timeout_s=1.0)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
