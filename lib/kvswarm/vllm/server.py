"""Running a real vLLM (CPU) server on a local port, and always stopping it.

`start_vllm_server()` installs vLLM and writes the tiny model when needed (both cached),
starts vLLM's OpenAI server on a free port of 127.0.0.1, waits until `GET /health`
answers 200 (about a minute: vLLM loads, profiles and warms up its engine) and returns a
`VllmServer` handle; `handle.stop()` (or leaving its `with` block) ends the server and
its engine-core process, forcefully if they do not exit by themselves. The server also
gets SIGKILL if the Python thread that started it dies.

The server runs with prefix caching and per-request cached-token counts on, the dev-mode
routes on (`VLLM_SERVER_DEV_MODE=1`: `POST /reset_prefix_cache` answers 404 without
it), nothing fetched from the Hub, and `python -m vllm.entrypoints.openai.api_server`
rather than `vllm serve` (see `kvswarm.vllm.install`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from kvswarm.childproc import die_with_parent, log_file, start_on_free_port, wait_healthy
from kvswarm.errors import KvswarmError
from kvswarm.server_handle import ServerProcess
from kvswarm.vllm.install import ensure_vllm
from kvswarm.vllm.tinymodel import TinyQwenSpec, ensure_tiny_qwen

__all__ = [
    "DEFAULT_MODEL_NAME",
    "VllmServer",
    "VllmServerOptions",
    "server_command",
    "server_environment",
    "start_vllm_server",
]

DEFAULT_MODEL_NAME = "tiny"


@dataclass(frozen=True)
class VllmServerOptions:
    """How vLLM is started; the defaults suit the tiny model on a small CPU box."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    served_model_name: str = DEFAULT_MODEL_NAME  # the name in /v1/models and requests
    max_model_len: int = 4096  # prompt + output tokens per request
    kv_cache_gib: int = 2  # VLLM_CPU_KVCACHE_SPACE: the KV cache (and so prefix cache) size
    dtype: str = "bfloat16"
    # --enforce-eager: no torch.compile of the model, which costs ~30 s of every start
    # on a 2-core box and buys nothing measurable for a 4.5M-parameter model.
    enforce_eager: bool = True
    max_num_seqs: int | None = None  # requests batched at once; None: vLLM's default
    dev_mode: bool = True  # VLLM_SERVER_DEV_MODE=1: /reset_prefix_cache and friends
    extra_args: tuple[str, ...] = ()  # appended to the command line as they are
    extra_env: tuple[tuple[str, str], ...] = ()  # added to the server's environment

    def __post_init__(self) -> None:
        if self.max_model_len < 64 or self.kv_cache_gib < 1:
            raise KvswarmError(
                f"vLLM needs max_model_len >= 64 and at least 1 GiB of KV cache, got "
                f"max_model_len={self.max_model_len} kv_cache_gib={self.kv_cache_gib}"
            )


@dataclass
class VllmServer(ServerProcess):
    """A running vLLM server. Use as a context manager, or call `stop()`.

    The server is also killed when this handle is garbage-collected or Python exits.
    """

    process: subprocess.Popen[bytes]
    host: str
    port: int
    model: Path  # the served model's directory
    command: tuple[str, ...]
    log_path: Path  # the server's stdout and stderr
    options: VllmServerOptions
    startup_s: float = 0.0  # from spawning to the first 200 from /health
    remove_log_on_stop: bool = False
    _finalizer: weakref.finalize = field(init=False, repr=False)

    stop_timeout_s: ClassVar[float] = 20.0

    def __post_init__(self) -> None:
        self.watch_process()

    # vLLM's engine core is a child of the API server: the whole process group ends.
    @staticmethod
    def end_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
        _terminate(process, timeout_s)

    @property
    def base_url(self) -> str:
        """`http://host:port`, without `/v1` (vLLM serves /health, /tokenize at the root)."""
        return f"http://{self.host}:{self.port}"

    @property
    def model_name(self) -> str:
        return self.options.served_model_name


def start_vllm_server(
    options: VllmServerOptions | None = None,
    *,
    model: Path | None = None,
    model_spec: TinyQwenSpec | None = None,
    python: Path | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 300.0,
) -> VllmServer:
    """Start vLLM's OpenAI server and return once `GET /health` answers 200.

    `python` defaults to the cached vLLM venv's (installed now if this machine has none),
    `model` to the tiny generated model for `model_spec`. The server's output goes to
    `log_path` (default: a temporary file, removed by `stop()` unless start-up failed).
    Raises `KvswarmError`, with the log's last line, if the server exits or is not ready
    within `ready_timeout_s`.
    """
    options = options or VllmServerOptions()
    python = python or ensure_vllm().python
    model = model or ensure_tiny_qwen(python, model_spec)
    log_path, temporary_log = log_file(log_path, "vllm-server-")
    server = start_on_free_port(
        "vLLM",
        options.host,
        options.port,
        lambda port: _spawn(python, model, options, port, log_path),
        lambda server: _wait_ready(server, ready_timeout_s),
    )
    server.remove_log_on_stop = temporary_log  # kept when start-up fails
    return server


def server_command(python: Path, model: Path, options: VllmServerOptions, port: int) -> list[str]:
    """The vLLM command line for `options`."""
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model),
        "--served-model-name", options.served_model_name,
        "--host", options.host,
        "--port", str(port),
        "--max-model-len", str(options.max_model_len),
        "--dtype", options.dtype,
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",
    ]  # fmt: skip
    if options.enforce_eager:
        command.append("--enforce-eager")
    if options.max_num_seqs:
        command += ["--max-num-seqs", str(options.max_num_seqs)]
    return command + list(options.extra_args)


def server_environment(options: VllmServerOptions, base: dict[str, str]) -> dict[str, str]:
    """`base` plus what the server needs: KV cache size, dev mode, nothing from the Hub."""
    env = dict(base)
    env.update(
        VLLM_CPU_KVCACHE_SPACE=str(options.kv_cache_gib),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    if options.dev_mode:
        env["VLLM_SERVER_DEV_MODE"] = "1"
    env.update(dict(options.extra_env))
    return env


def _spawn(
    python: Path, model: Path, options: VllmServerOptions, port: int, log_path: Path
) -> VllmServer:
    command = server_command(python, model, options, port)
    env = server_environment(options, dict(os.environ))
    with open(log_path, "wb") as log:  # one attempt per log: a retry starts it anew
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own process group, so stop() reaches the engine-core child too, and
            # Ctrl-C reaches us first and we stop the server in order.
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    return VllmServer(process, options.host, port, model, tuple(command), log_path, options)


def _wait_ready(server: VllmServer, timeout_s: float) -> None:
    url = f"{server.base_url}/health"
    # vLLM takes a minute to load: polled less often, so as not to slow its start.
    server.startup_s = wait_healthy(
        server, "vLLM", url, timeout_s, "Address already in use", poll_s=0.25
    )


def _terminate(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left of it."""
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # The engine core may outlive the API server for a moment: the group goes too.
    _signal_group(process.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def command_line(server: VllmServer) -> str:
    """The server's environment additions and command line, shell-quoted, for printing."""
    env = server_environment(server.options, {})
    return (
        " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(server.command)
    )
