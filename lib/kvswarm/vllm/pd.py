"""A PD-disaggregated stack of real vLLM on one CPU machine: kvswarm's real PD target.

`start_vllm_pd()` starts, on loopback:

- a `mooncake_master` from the `mooncake` extra's wheel (`kvswarm.sim.master`, free RPC
  and metrics ports, HTTP metadata server off);
- a prefiller and a decoder: vLLM's CPU build with the tiny model, `kv_producer` and
  `kv_consumer` of vLLM's `MooncakeStoreConnector`, which put and get the prompt's KV
  blocks in the Mooncake store over TCP (`P2PHANDSHAKE` metadata, no etcd). Each has
  its own core (`VLLM_CPU_OMP_THREADS_BIND`), its own `lookup_rpc_port` (two instances
  with one value silently share one lookup socket) and, per stack, its own
  `VLLM_RPC_BASE_PATH`, so two stacks on one host do not meet either;
- kvswarm's proxy (`kvswarm.vllm.proxy`): each request goes to the prefiller with
  `max_tokens` 1, then streams from the decoder; the per-request split comes back in
  `X-Kvswarm-*-Ms` headers, which the vLLM engine profile reads.

The Mooncake client goes into the vLLM venv once (`ensure_vllm_mooncake`). Where it or
`mooncake_master` is missing (no `mooncake` extra in kvswarm's environment, pip offline,
not x86-64 Linux), the stack falls back to vLLM's `ExampleConnector`, which writes each
prompt's KV to files in a shared directory (`kv_store` "shared-storage", no master).

    from kvswarm.vllm.pd import VllmPdOptions, start_vllm_pd

    with start_vllm_pd(log_dir) as stack:    # or start_vllm_pd(log_dir, VllmPdOptions(...))
        stack.base_url      # the proxy, e.g. http://127.0.0.1:41234 (no /v1)
        stack.metrics_urls  # {"prefiller": ..., "decoder": ..., "mooncake_master": ...}
        stack.kv_store      # "mooncake" or "shared-storage"

The prefiller's connector stores the KV asynchronously: it answers before its put has
finished, and the proxy asks the decoder at once (as vLLM's example proxies do). A
decoder that looks before the put lands finds fewer blocks and computes the rest itself:
fewer external hits, never an error. One warm-up request goes through the stack before
`start_vllm_pd` returns, so the first, slowest store is not a measured request's.

Both instances together hold about 6 GB (1 GiB of KV cache each) and one core each;
start-up takes 30-60 s on a busy 2-core machine (both instances start at once).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from kvswarm.childproc import die_with_parent
from kvswarm.errors import KvswarmError
from kvswarm.server_handle import ServerHandle
from kvswarm.sim.master import MooncakeMaster, master_binary
from kvswarm.sim.stack import StackInfo
from kvswarm.vllm.install import VllmInstall, ensure_vllm, ensure_vllm_mooncake
from kvswarm.vllm.server import (
    DEFAULT_MODEL_NAME,
    VllmServer,
    VllmServerOptions,
    start_vllm_server,
)
from kvswarm.vllm.tinymodel import ensure_tiny_qwen

__all__ = [
    "KvStoreChoice",
    "VllmPdOptions",
    "VllmPdStack",
    "kv_transfer_config",
    "mooncake_config",
    "start_vllm_pd",
]

KvStoreChoice = Literal["auto", "mooncake", "shared-storage"]
MODE = "pd_disaggregated"
ROLES = ("prefiller", "decoder")


@dataclass(frozen=True)
class VllmPdOptions:
    """How the PD stack is started; the defaults suit the tiny model on a 2-core box."""

    host: str = "127.0.0.1"
    served_model_name: str = DEFAULT_MODEL_NAME
    max_model_len: int = 4096
    kv_cache_gib: int = 1  # per instance: 1 GiB holds ~500k tokens of the tiny model
    # "auto": Mooncake when its wheel and mooncake_master are there, else shared storage.
    kv_store: KvStoreChoice = "auto"
    # Mooncake segment each instance lends the store, and its local transfer buffer.
    segment_mb: int = 256
    buffer_mb: int = 128
    # The cores the prefiller and decoder run on; None: the first two this process may
    # use (both on the one core when there is only one).
    cores: tuple[int, int] | None = None
    ready_timeout_s: float = 420.0  # both instances start at once on a busy machine

    def __post_init__(self) -> None:
        if self.kv_store not in ("auto", "mooncake", "shared-storage"):
            raise KvswarmError(
                f"kv_store must be auto, mooncake or shared-storage, got {self.kv_store!r}"
            )


def mooncake_config(master_rpc: str, segment_mb: int, buffer_mb: int) -> dict[str, str]:
    """The Mooncake client configuration (`MOONCAKE_CONFIG_PATH`) for both instances."""
    return {
        "metadata_server": "P2PHANDSHAKE",
        "protocol": "tcp",
        "device_name": "",
        "master_server_address": master_rpc,
        "global_segment_size": f"{segment_mb}MB",
        "local_buffer_size": f"{buffer_mb}MB",
    }


def kv_transfer_config(role: str, kv_store: str, shared_dir: Path | None = None) -> str:
    """vLLM's `--kv-transfer-config` JSON for the prefiller or decoder."""
    kv_role = "kv_producer" if role == "prefiller" else "kv_consumer"
    if kv_store == "mooncake":
        # Distinct per instance: the value names the lookup socket in VLLM_RPC_BASE_PATH.
        extra: dict[str, object] = {"lookup_rpc_port": ROLES.index(role) + 1}
        connector = "MooncakeStoreConnector"
    else:
        extra = {"shared_storage_path": str(shared_dir)}
        connector = "ExampleConnector"
    return json.dumps(
        {"kv_connector": connector, "kv_role": kv_role, "kv_connector_extra_config": extra}
    )


@dataclass
class VllmPdStack(ServerHandle):
    """A running PD stack. Use as a context manager, or call `stop()`."""

    options: VllmPdOptions
    kv_store: str  # "mooncake" or "shared-storage"
    workdir: Path  # configs, lookup sockets, shared KV files; removed by stop()
    log_dir: Path  # each process's log: prefiller.log, decoder.log, proxy.log, ...
    fallback_reason: str | None = None  # why Mooncake was not used, when it was not
    servers: dict[str, VllmServer] = field(default_factory=dict)
    master: MooncakeMaster | None = None
    proxy: subprocess.Popen[bytes] | None = None
    proxy_url: str = ""
    startup_s: float = 0.0  # from the call to the proxy's first answer
    _temporary: tempfile.TemporaryDirectory[str] | None = None
    _keepers: dict[str, _ServerKeeper] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The proxy, `http://host:port`, without `/v1` (as `VllmServer.base_url`)."""
        return self.proxy_url

    @property
    def model_name(self) -> str:
        return self.options.served_model_name

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Prometheus pages to scrape: prefiller, decoder (and mooncake_master)."""
        urls = {role: f"{server.base_url}/metrics" for role, server in self.servers.items()}
        if self.master is not None:
            urls["mooncake_master"] = self.master.metrics_url
        return urls

    @property
    def info(self) -> StackInfo:
        """The simulator's description of a stack, for callers that take either."""
        return StackInfo(
            mode=MODE,
            base_url=f"{self.base_url}/v1",
            root_url=self.base_url,
            metrics_urls=self.metrics_urls,
            kv_store=self.kv_store,
            mooncake_master_rpc=self.master.rpc_address if self.master else None,
        )

    @property
    def running(self) -> bool:
        proxy_up = self.proxy is not None and self.proxy.poll() is None
        return proxy_up and all(server.running for server in self.servers.values())

    def stop(self) -> None:
        """Stop the proxy, both instances, then the master; remove the work directory.
        Safe to call twice."""
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            _stop_process(proxy)
        keepers, self._keepers, self.servers = list(self._keepers.values()), {}, {}
        with ThreadPoolExecutor(len(keepers) or 1) as pool:
            list(pool.map(_ServerKeeper.finish, keepers))
        master, self.master = self.master, None
        if master is not None:
            master.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None


def start_vllm_pd(
    log_dir: Path | None = None,
    options: VllmPdOptions | None = None,
    *,
    install: VllmInstall | None = None,
) -> VllmPdStack:
    """Start the master (Mooncake), prefiller, decoder and proxy; return once all answer.

    Logs (`prefiller.log`, `decoder.log`, `proxy.log`, `mooncake_master.log`) go to
    `log_dir` (kept) or a temporary directory (removed by `stop()`). Raises
    `KvswarmError` with the failing part's log lines; nothing is left running then.
    """
    options = options or VllmPdOptions()
    started = time.monotonic()
    install = install or ensure_vllm()
    kv_store, reason = _choose_store(options, install)
    temporary = None
    if log_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="kvswarm-vllm-pd-logs-")
        log_dir = Path(temporary.name)
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = VllmPdStack(
        options=options,
        kv_store=kv_store,
        # Short: vLLM's IPC socket paths live under it and must fit in 107 bytes.
        workdir=Path(tempfile.mkdtemp(prefix="kvswarm-pd-")),
        log_dir=log_dir,
        fallback_reason=reason,
        _temporary=temporary,
    )
    try:
        _start(stack, install)
    except BaseException:
        stack.stop()
        raise
    stack.startup_s = time.monotonic() - started
    return stack


def _choose_store(options: VllmPdOptions, install: VllmInstall) -> tuple[str, str | None]:
    """ "mooncake" or "shared-storage", and why Mooncake is not used (None when it is)."""
    if options.kv_store == "shared-storage":
        return "shared-storage", "asked for"
    problem = None
    if master_binary() is None:
        problem = "mooncake_master not found: kvswarm's environment lacks the mooncake extra"
    else:
        try:
            ensure_vllm_mooncake(install)
        except KvswarmError as exc:
            problem = str(exc)
    if problem is None:
        return "mooncake", None
    if options.kv_store == "mooncake":
        raise KvswarmError(f"the vLLM PD stack cannot use Mooncake: {problem}")
    print(f"kvswarm: vLLM PD falls back to ExampleConnector: {problem}", file=sys.stderr)
    return "shared-storage", problem


def _start(stack: VllmPdStack, install: VllmInstall) -> None:
    options = stack.options
    model = ensure_tiny_qwen(install.python)  # once, before two processes want it
    environment = _common_environment(stack)
    cores = options.cores or _two_cores()
    for role, core in zip(ROLES, cores, strict=True):
        keeper = _ServerKeeper(
            _server_options(stack, role, core, environment),
            model,
            install.python,
            stack.log_dir / f"{role}.log",
            options.ready_timeout_s,
        )
        stack._keepers[role] = keeper
        keeper.start()
    errors = []
    for role, keeper in stack._keepers.items():
        keeper.ready.wait()
        if keeper.server is not None:
            stack.servers[role] = keeper.server
        else:
            errors.append(f"{role}: {keeper.error}")
    if errors:
        raise KvswarmError("the vLLM PD stack did not start; " + "\n".join(errors))
    _start_proxy(stack)
    _warm_up(stack)


def _warm_up(stack: VllmPdStack, timeout_s: float = 120.0) -> None:
    """One request through the proxy: the whole path works, and the connectors' first
    store and load (connection set-up, the slowest) are not a measured request's."""
    body = {"model": stack.model_name, "prompt": "kvswarm warm-up " * 80, "max_tokens": 2}
    request = urllib.request.Request(
        f"{stack.base_url}/v1/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise KvswarmError(
            f"the vLLM PD stack started but a first request failed: {exc} (logs: {stack.log_dir})"
        ) from None


class _ServerKeeper(threading.Thread):
    """Starts one vLLM server and lives as long as it runs.

    Both instances start at once, each waited for in its own thread; and a vLLM server
    gets SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG is per thread),
    so that thread stays until the stack stops.
    """

    def __init__(
        self, options: VllmServerOptions, model: Path, python: Path, log: Path, timeout: float
    ) -> None:
        super().__init__(name=f"kvswarm-vllm-pd-{log.stem}", daemon=True)
        self._arguments = (options, model, python, log, timeout)
        self.ready = threading.Event()
        self.release = threading.Event()
        self.server: VllmServer | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        options, model, python, log, timeout = self._arguments
        try:
            self.server = start_vllm_server(
                options, model=model, python=python, log_path=log, ready_timeout_s=timeout
            )
        except BaseException as exc:
            self.error = exc
            return
        finally:
            self.ready.set()
        self.release.wait()

    def finish(self) -> None:
        """Stop the server (if it started) and end the thread."""
        if self.server is not None:
            self.server.stop()
        self.release.set()
        self.join(30.0)


def _common_environment(stack: VllmPdStack) -> dict[str, str]:
    """What both instances share: the lookup sockets' directory and the store client."""
    environment = {"VLLM_RPC_BASE_PATH": str(stack.workdir / "rpc")}
    (stack.workdir / "rpc").mkdir()
    if stack.kv_store != "mooncake":
        (stack.workdir / "kv").mkdir()
        return environment
    options = stack.options
    stack.master = MooncakeMaster(options.host, 0, 0, stack.log_dir / "mooncake_master.log")
    stack.master.start()
    config = mooncake_config(stack.master.rpc_address, options.segment_mb, options.buffer_mb)
    config_path = stack.workdir / "mooncake.json"
    config_path.write_text(json.dumps(config))
    environment.update(
        MOONCAKE_CONFIG_PATH=str(config_path),
        MOONCAKE_REQUESTER_LOCAL_HOSTNAME=options.host,
        MC_LOG_LEVEL="WARNING",
    )
    return environment


def _server_options(
    stack: VllmPdStack, role: str, core: int, environment: dict[str, str]
) -> VllmServerOptions:
    options = stack.options
    arguments = [
        "--kv-transfer-config",
        kv_transfer_config(role, stack.kv_store, stack.workdir / "kv"),
    ]
    if stack.kv_store != "mooncake":
        # ExampleConnector saves one file per prompt from the step that prefilled it; a
        # prompt prefilled in chunks (over 2048 tokens by default) is saved short and
        # the decoder's load fails on the shape. One step per prompt avoids that.
        arguments += ["--max-num-batched-tokens", str(options.max_model_len)]
    env = {**environment, "VLLM_CPU_OMP_THREADS_BIND": str(core)}
    return VllmServerOptions(
        host=options.host,
        served_model_name=options.served_model_name,
        max_model_len=options.max_model_len,
        kv_cache_gib=options.kv_cache_gib,
        extra_args=tuple(arguments),
        extra_env=tuple(env.items()),
    )


def _two_cores() -> tuple[int, int]:
    cores = sorted(os.sched_getaffinity(0))
    return (cores[0], cores[1] if len(cores) > 1 else cores[0])


def _start_proxy(stack: VllmPdStack, timeout_s: float = 60.0) -> None:
    command = [
        sys.executable,
        "-m",
        "kvswarm.vllm.proxy",
        "--prefiller",
        stack.servers["prefiller"].base_url,
        "--decoder",
        stack.servers["decoder"].base_url,
        "--host",
        stack.options.host,
        "--print-json",
    ]
    with open(stack.log_dir / "proxy.log", "ab") as log:
        stack.proxy = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
    assert stack.proxy.stdout is not None
    line = _read_line(stack.proxy.stdout, timeout_s)
    if not line:
        code = stack.proxy.poll()
        raise KvswarmError(
            f"the PD proxy did not start (exit {code}; log: {stack.log_dir / 'proxy.log'})"
        )
    stack.proxy_url = json.loads(line)["url"]


def _read_line(stream: IO[bytes], timeout_s: float) -> bytes:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            return b""
    return stream.readline()


def _stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
