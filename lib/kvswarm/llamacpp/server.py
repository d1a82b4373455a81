"""Running a real `llama-server` process on a local port, and always stopping it.

`start_llama_server()` builds the server and the tiny model when needed (both cached),
starts `llama-server` on a free port of 127.0.0.1, waits until `GET /health` answers 200
and returns a `LlamaServer` handle; `handle.stop()` (or leaving its `with` block) ends
the process, forcefully if it does not exit by itself. The child also gets SIGKILL if
the Python thread that started it dies, so no server outlives its owner.

Slots get separate KV caches by default (`--no-kv-unified`, `-c slots * ctx_per_slot`):
each slot then has a fixed context of `ctx_per_slot` tokens and keeps the KV of the last
prompt it served, which is llama.cpp's per-slot prompt cache (see docs/llamacpp.md).
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from kvswarm.childproc import (
    die_with_parent,
    log_file,
    start_on_free_port,
    wait_healthy,
)
from kvswarm.errors import KvswarmError
from kvswarm.llamacpp.build import ensure_llama_server
from kvswarm.llamacpp.tinymodel import TinyModelSpec, ensure_tiny_model
from kvswarm.server_handle import ServerProcess

DEFAULT_ALIAS = "kvswarm-tiny-llama"


@dataclass(frozen=True)
class LlamaServerOptions:
    """How `llama-server` is started; the defaults suit the tiny model on a small CPU box."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    slots: int = 4  # -np: requests decoded in parallel, each with its own prompt cache
    ctx_per_slot: int = 4096  # tokens of context per slot (prompt + output)
    threads: int | None = None  # -t / -tb; None: llama.cpp's default (physical cores)
    metrics: bool = True  # --metrics: GET /metrics with llamacpp:* counters
    cache_reuse: int = 0  # --cache-reuse N: reuse cached chunks >= N tokens by KV shifting
    cache_ram_mib: int | None = None  # --cache-ram: host-RAM prompt cache; None: default
    kv_unified: bool = False  # one KV buffer shared by all slots instead of one per slot
    alias: str = DEFAULT_ALIAS  # the model name in /v1/models and responses
    # --slot-save-path: where slot actions may write; llama-server refuses every slot
    # action (the erase that resets its prompt cache included) without one. None: a
    # `slots/` folder beside the server's log.
    slot_save_path: Path | None = None
    extra_args: tuple[str, ...] = ()  # appended to the command line as they are

    def __post_init__(self) -> None:
        if self.slots < 1 or self.ctx_per_slot < 64:
            raise KvswarmError(
                f"llama-server needs at least 1 slot and 64 tokens of context per slot, "
                f"got slots={self.slots} ctx_per_slot={self.ctx_per_slot}"
            )


@dataclass
class LlamaServer(ServerProcess):
    """A running `llama-server`. Use as a context manager, or call `stop()`.

    The server is also killed when this handle is garbage-collected or Python exits.
    """

    process: subprocess.Popen[bytes]
    host: str
    port: int
    model: Path
    command: tuple[str, ...]
    log_path: Path  # the server's stdout and stderr
    options: LlamaServerOptions
    remove_log_on_stop: bool = False
    _finalizer: weakref.finalize = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.watch_process()

    @property
    def base_url(self) -> str:
        """`http://host:port`, without `/v1` (llama.cpp serves /health, /tokenize at the root)."""
        return f"http://{self.host}:{self.port}"


def start_llama_server(
    options: LlamaServerOptions | None = None,
    *,
    model: Path | None = None,
    model_spec: TinyModelSpec | None = None,
    binary: Path | None = None,
    log_path: Path | None = None,
    ready_timeout_s: float = 120.0,
) -> LlamaServer:
    """Start `llama-server` and return once `GET /health` answers 200.

    `model` defaults to the tiny generated model for `model_spec` (whose context length is
    raised to `ctx_per_slot` if smaller), `binary` to the cached build (built now if this
    machine has none). The server's output goes to `log_path` (default: a temporary file,
    removed by `stop()` unless start-up failed).
    Raises `KvswarmError` if it exits or is not ready within `ready_timeout_s`.
    """
    options = options or LlamaServerOptions()
    binary = binary or ensure_llama_server().binary
    if model is None:
        spec = model_spec or TinyModelSpec()
        if spec.context_length < options.ctx_per_slot:
            spec = dataclasses.replace(spec, context_length=options.ctx_per_slot)
        model = ensure_tiny_model(spec)
    log_path, temporary_log = log_file(log_path, "llama-server-")
    server = start_on_free_port(
        "llama-server",
        options.host,
        options.port,
        lambda port: _spawn(binary, model, options, port, log_path),
        lambda server: _wait_ready(server, ready_timeout_s),
    )
    server.remove_log_on_stop = temporary_log  # kept when start-up fails
    return server


def server_command(binary: Path, model: Path, options: LlamaServerOptions, port: int) -> list[str]:
    """The `llama-server` command line for `options`."""
    command = [
        str(binary),
        "--model", str(model),
        "--alias", options.alias,
        "--host", options.host,
        "--port", str(port),
        "--parallel", str(options.slots),
        "--ctx-size", str(options.slots * options.ctx_per_slot),
        "--kv-unified" if options.kv_unified else "--no-kv-unified",
        "--cache-reuse", str(options.cache_reuse),
        "--no-webui",
        "--jinja",
    ]  # fmt: skip
    if options.kv_unified:
        command += ["--kv-unified-per-slot", str(options.ctx_per_slot)]
    if options.metrics:
        command.append("--metrics")
    if options.threads:
        command += ["--threads", str(options.threads), "--threads-batch", str(options.threads)]
    if options.cache_ram_mib is not None:
        command += ["--cache-ram", str(options.cache_ram_mib)]
    if options.slot_save_path is not None:
        command += ["--slot-save-path", str(options.slot_save_path)]
    return command + list(options.extra_args)


def _spawn(
    binary: Path, model: Path, options: LlamaServerOptions, port: int, log_path: Path
) -> LlamaServer:
    if options.slot_save_path is None:
        options = dataclasses.replace(options, slot_save_path=log_path.parent / "slots")
    assert options.slot_save_path is not None
    options.slot_save_path.mkdir(parents=True, exist_ok=True)
    command = server_command(binary, model, options, port)
    with open(log_path, "wb") as log:  # one attempt per log: a retry starts it anew
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the server in order
            preexec_fn=die_with_parent(),
        )
    return LlamaServer(process, options.host, port, model, tuple(command), log_path, options)


def _wait_ready(server: LlamaServer, timeout_s: float) -> None:
    wait_healthy(server, "llama-server", f"{server.base_url}/health", timeout_s, "couldn't bind")


def command_line(server: LlamaServer) -> str:
    """The server's command line, shell-quoted, for printing."""
    return shlex.join(server.command)


__all__ = [
    "DEFAULT_ALIAS",
    "LlamaServer",
    "LlamaServerOptions",
    "command_line",
    "server_command",
    "start_llama_server",
]
