"""Assembling and running a simulated stack.

- `Stack`: builds the servers, engines, KV store and mooncake_master for `SimOptions`
  and runs them in the current gevent hub (what `kvswarm sim` does).
- `start_stack(options)`: the same in a background thread with its own hub, for Python
  callers and tests; returns a `RunningStack` once every server is listening.
- `spawn_stack(options)`: the same in a child process (`python -m kvswarm.sim`); returns
  a `StackProcess` once its `/health` answers.

Each handle has `base_url` (the OpenAI base URL, ending in `/v1`), `root_url`,
`metrics_urls` (name -> Prometheus URL) and `stop()`, and is a context manager.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import gevent
import gevent.event
import orjson
from prometheus_client import CollectorRegistry

from kvswarm.childproc import health_ok
from kvswarm.errors import KvswarmError
from kvswarm.server_handle import ServerHandle
from kvswarm.sim.engine import Backend, Engine, LocalBackend
from kvswarm.sim.faults import FaultInjector, FaultLog
from kvswarm.sim.groundtruth import GroundTruthLog
from kvswarm.sim.http_server import HttpServer
from kvswarm.sim.master import MooncakeMaster, check_port_free
from kvswarm.sim.metrics import LATENESS_BUCKETS, EngineMetrics, FastHistogram, SimMetrics
from kvswarm.sim.options import SimOptions
from kvswarm.sim.pd import PdBackend
from kvswarm.sim.protocol import ServedModel
from kvswarm.sim.server import SimServer
from kvswarm.sim.store import KVStore, MemoryStore, MooncakeStore, mooncake_installed


@dataclass(frozen=True)
class StackInfo:
    """Where a running stack answers."""

    mode: str
    base_url: str
    root_url: str
    metrics_urls: dict[str, str] = field(default_factory=dict)
    kv_store: str | None = None
    mooncake_master_rpc: str | None = None
    ground_truth: str | None = None

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()


class Stack:
    """A simulated stack in the current gevent hub: call start(), later stop()."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.info: StackInfo | None = None
        self._servers: list[HttpServer] = []
        self._stores: list[KVStore] = []
        self._master: MooncakeMaster | None = None
        self._ground_truth: GroundTruthLog | None = None
        self._fault_log: FaultLog | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> StackInfo:
        """Bind every port and start serving; a KvswarmError leaves nothing running."""
        try:
            self.info = self._start()
        except BaseException:
            self.stop()
            raise
        return self.info

    def _start(self) -> StackInfo:
        options = self.options
        self._check_ports()
        if options.ground_truth:
            self._ground_truth = GroundTruthLog(options.ground_truth)
        if options.faults.log:
            self._fault_log = FaultLog(options.faults.log)
        served = ServedModel(options.model, options.cost.max_model_len, options.default_max_tokens)
        entry_registry = CollectorRegistry()
        store_name = self._store_name() if options.pd else None
        sim_metrics = SimMetrics(entry_registry, options.mode, options.model, store_name or "none")
        injector = FaultInjector(options.faults, options.seed, time.monotonic())
        metrics_urls: dict[str, str] = {}
        if options.pd:
            backend: Backend = self._start_pd(served, sim_metrics, store_name, metrics_urls)
            entry_name = "proxy"
        else:
            engine = Engine("server", options.cost, self._engine_metrics(entry_registry))
            backend = LocalBackend(engine)
            entry_name = "server"
        entry = SimServer(
            backend=backend,
            served=served,
            registry=entry_registry,
            lateness=sim_metrics.send_lateness,
            sim_metrics=sim_metrics,
            faults=injector,
            ground_truth=self._ground_truth,
            fault_log=self._fault_log,
        )
        server = HttpServer(options.host, options.entry_port, entry, entry_name)
        entry.listener = server
        self._servers.insert(0, server)
        metrics_urls = {entry_name: server.url + "/metrics", **metrics_urls}
        if self._master is not None:
            metrics_urls["mooncake_master"] = self._master.metrics_url
        for each in self._servers:
            each.start()
        return StackInfo(
            mode=options.mode,
            base_url=server.url + "/v1",
            root_url=server.url,
            metrics_urls=metrics_urls,
            kv_store=store_name,
            mooncake_master_rpc=self._master.rpc_address if self._master else None,
            ground_truth=options.ground_truth,
        )

    def _check_ports(self) -> None:
        options = self.options
        ports = [("server" if not options.pd else "proxy", options.entry_port)]
        if options.pd:
            ports += [("prefiller", options.prefiller_port), ("decoder", options.decoder_port)]
        for name, port in ports:
            if port:
                check_port_free(options.host, port, name)

    def _store_name(self) -> str:
        choice = self.options.kv_store
        if choice == "auto":
            return "mooncake" if mooncake_installed() else "memory"
        return choice

    def _engine_metrics(self, registry: CollectorRegistry) -> EngineMetrics:
        cost = self.options.cost
        return EngineMetrics(
            registry, self.options.model, cost.max_model_len, cost.block_size, cost.cache_blocks
        )

    def _start_pd(
        self,
        served: ServedModel,
        sim_metrics: SimMetrics,
        store_name: str | None,
        metrics_urls: dict[str, str],
    ) -> PdBackend:
        options = self.options
        store = self._open_store(store_name)
        engines = {}
        for name, port in (
            ("prefiller", options.prefiller_port),
            ("decoder", options.decoder_port),
        ):
            registry = CollectorRegistry()
            engine = Engine(name, options.cost, self._engine_metrics(registry))
            handler = SimServer(
                backend=LocalBackend(engine),
                served=served,
                registry=registry,
                lateness=FastHistogram(LATENESS_BUCKETS),
            )
            server = HttpServer(options.host, port, handler, name)
            self._servers.append(server)
            metrics_urls[name] = server.url + "/metrics"
            engines[name] = engine
        return PdBackend(
            engines["prefiller"],
            engines["decoder"],
            store,
            sim_metrics,
            namespace=f"kvswarm-sim/{options.model}",
            chunk_tokens=options.kv_chunk_tokens,
            value_bytes=options.kv_value_bytes,
        )

    def _open_store(self, store_name: str | None) -> KVStore:
        """The store both engines use (one Mooncake client: the sim is one process)."""
        options = self.options
        if store_name != "mooncake":
            store: KVStore = MemoryStore(options.memory_store_mb * 1024 * 1024)
        else:
            self._workdir = tempfile.TemporaryDirectory(prefix="kvswarm-sim-")
            self._master = MooncakeMaster(
                options.host,
                options.mooncake_rpc_port,
                options.mooncake_metrics_port,
                Path(self._workdir.name) / "mooncake_master.log",
            )
            self._master.start()
            segment = options.mooncake_segment_mb * 1024 * 1024
            store = MooncakeStore(self._master.rpc_address, options.host, segment)
        self._stores.append(store)
        return store

    def stop(self) -> None:
        """Stop serving, close the stores, stop mooncake_master. Safe to call twice."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.stop(timeout=0.5)
        stores, self._stores = self._stores, []
        for store in stores:
            # Before the master goes: a Mooncake client closes in about two seconds
            # while its master runs, and may retry for many more once it is gone.
            _close_quietly(store)
        if self._master is not None:
            self._master.stop()
            self._master = None
        if self._ground_truth is not None:
            self._ground_truth.close()
            self._ground_truth = None
        if self._fault_log is not None:
            self._fault_log.close()
            self._fault_log = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def _close_quietly(store: KVStore) -> None:
    try:
        store.close()
    except Exception as exc:
        print(f"kvswarm sim: closing the {store.name} store failed: {exc}", file=sys.stderr)


class _Handle(ServerHandle):
    """What both handles share: URLs, and stop() on leaving a `with` block."""

    info: StackInfo

    @property
    def base_url(self) -> str:
        return self.info.base_url

    @property
    def root_url(self) -> str:
        return self.info.root_url

    @property
    def metrics_urls(self) -> dict[str, str]:
        return self.info.metrics_urls


class RunningStack(_Handle):
    """A stack served by a background thread with its own gevent hub."""

    def __init__(self, options: SimOptions, timeout_s: float = 60.0) -> None:
        self.options = options
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._wake: Any = None
        self._stack: Stack | None = None
        self._thread = threading.Thread(target=self._run, name="kvswarm-sim", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise KvswarmError(f"the simulated stack did not start within {timeout_s:g} s")
        if self._error is not None:
            raise self._error
        assert self._stack is not None and self._stack.info is not None
        self.info = self._stack.info

    @property
    def stack(self) -> Stack:
        assert self._stack is not None
        return self._stack

    def _run(self) -> None:
        hub = gevent.get_hub()
        stopping = gevent.event.Event()
        self._wake = hub.loop.async_()
        self._wake.start(stopping.set)
        stack = Stack(self.options)
        try:
            stack.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            self._wake.close()
            return
        self._stack = stack
        self._started.set()
        try:
            stopping.wait()
        finally:
            stack.stop()
            self._wake.close()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the stack and wait for its thread."""
        if self._thread.is_alive() and self._wake is not None:
            self._wake.send()
            self._thread.join(timeout_s)


def start_stack(options: SimOptions, timeout_s: float = 60.0) -> RunningStack:
    """Run a simulated stack in a background thread; returns once it is listening."""
    return RunningStack(options, timeout_s)


class StackProcess(_Handle):
    """A stack running in a child process (`python -m kvswarm.sim`)."""

    def __init__(
        self,
        options: SimOptions,
        *,
        log_path: str | Path | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        from kvswarm.sim.cli import options_to_argv

        self.options = options
        self._log: IO[bytes] = (
            open(log_path, "ab") if log_path else tempfile.TemporaryFile()  # noqa: SIM115
        )
        command = [sys.executable, "-m", "kvswarm.sim", *options_to_argv(options), "--print-json"]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, **(env or {})},
        )
        try:
            self.info = self._read_announcement(timeout_s)
            _wait_healthy(self.info.root_url, timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_announcement(self, timeout_s: float) -> StackInfo:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout_s):
                raise KvswarmError(f"the simulated stack did not start within {timeout_s:g} s")
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise KvswarmError(f"the simulated stack exited with code {code}: {self._log_tail()}")
        return StackInfo(**orjson.loads(line))

    def _log_tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        lines = self._log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(no output)"

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the process (it stops mooncake_master itself), then wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


def spawn_stack(
    options: SimOptions,
    *,
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> StackProcess:
    """Run a simulated stack in a child process; returns once its /health answers.

    The child's stderr goes to `log_path` (appended) when given.
    """
    return StackProcess(options, log_path=log_path, env=env, timeout_s=timeout_s)


def _wait_healthy(root_url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if health_ok(root_url + "/health"):
            return
        if time.monotonic() > deadline:
            raise KvswarmError(f"{root_url}/health did not answer within {timeout_s:g} s")
        time.sleep(0.02)
