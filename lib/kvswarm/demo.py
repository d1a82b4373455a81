"""`kvswarm demo`: every scenario against the simulated stack, in both deployment modes.

For each mode it starts the simulated stack (`kvswarm sim`) in a child process, then runs
each of the config's scenarios on its own, one after another, with a short
`locust --headless` run of a few users (`--seconds`, `--users`), so no scenario's requests
queue behind another's cold prefills. It then prints, per mode and scenario, the median
TTFT of designed cache hits against designed misses and against the cold-start baseline
of the same mode, TPOT, and the reuse the config asked for, the workload realised and the
server reported. The PD mode's KV blocks go through a real Mooncake store when the
`mooncake` extra is installed; the headline names the store each mode used.

Prompts are scaled down from the original suite (about a quarter of its lengths) so a
short run gets many requests per scenario; the headline lists both sizes. Everything lands
in `results/demo-<time>/`: the demo's config, and per mode the stack's log, one run
directory per scenario (run.json, requests.csv, summary.txt) and Locust's logs and CSVs.
The numbers come from a simulator: they show how kvswarm measures, not how fast any real
serving stack is.

With `--engine vllm` the target is real vLLM (its CPU build, installed once into its own
venv, about 3 minutes; `kvswarm engine vllm`) serving a tiny generated model with prefix
caching; in the PD mode a prefiller and a decoder with `MooncakeStoreConnector` through a
real Mooncake master, behind kvswarm's proxy (`kvswarm engine vllm --pd`). With
`--engine llamacpp` the target is a real llama.cpp `llama-server` with a tiny generated
model (`kvswarm engine llamacpp`; built once, about 5 minutes), in the
non-disaggregated mode only, with prompts scaled to its 4096-token slots.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kvswarm.config import Config, load_config
from kvswarm.errors import KvswarmError
from kvswarm.headless import (
    RUN_OVERHEAD_S,
    HeadlessRun,
    run_headless,
    stack_metrics_endpoints,
    write_comparison_report,
)
from kvswarm.interrupts import Interrupted, interruptible

if TYPE_CHECKING:
    from kvswarm.analysis.headline import Headline

__all__ = ["MODES", "format_headlines", "register", "run_demo", "scenario_configs"]

MODES = ("non_disaggregated", "pd_disaggregated")

# The scenario whose requests are all unique: the baseline each mode's hits are set against.
BASELINE_TYPE = "cold_start"

# Scenario lengths scaled down from the original suite (about a quarter) so a short run
# sees many requests per scenario; the shapes (reuse ratios, pools) are the same.
DEMO_SCENARIOS: dict[str, dict[str, Any]] = {
    "long_context_high_reuse": {"shared_tokens_min": 4000, "shared_tokens_max": 8000},
    "code_generation": {"shared_tokens_min": 2000, "shared_tokens_max": 2000},
    "multi_turn_conversation": {
        "shared_tokens_min": 500,
        "shared_tokens_max": 1000,
        "max_history_tokens": 4000,
    },
    "batch_processing": {"shared_tokens_min": 1000, "shared_tokens_max": 2000},
    "cold_start": {"unique_tokens": 2000},
}
SIM_CONFIG_HEADER = (
    "# Written by `kvswarm demo`: the original suite's scenarios with their prompts scaled\n"
    "# down to about a quarter of the original lengths, so that a short run on kvswarm's\n"
    "# simulated stack gets many requests per scenario. Keys not listed keep the defaults.\n"
)
# For the tiny llama.cpp model: 4096-token slots, and small pools, since llama.cpp caches
# per slot (each slot must see a prefix once before it can hit).
LLAMACPP_SLOTS = 4
LLAMACPP_SCENARIOS: dict[str, dict[str, Any]] = {
    "long_context_high_reuse": {
        "pool_size": 2,
        "shared_tokens_min": 1000,
        "shared_tokens_max": 2000,
    },
    "code_generation": {"pool_size": 1, "shared_tokens_min": 1500, "shared_tokens_max": 1500},
    "multi_turn_conversation": {
        "pool_size": 2,
        "shared_tokens_min": 300,
        "shared_tokens_max": 600,
        "max_history_tokens": 3000,
    },
    "batch_processing": {"pool_size": 2, "shared_tokens_min": 600, "shared_tokens_max": 1000},
    "cold_start": {"unique_tokens": 1000},
}
LLAMACPP_CONFIG_HEADER = (
    "# Written by `kvswarm demo --engine llamacpp`: the original suite's scenarios scaled\n"
    "# down to fit a tiny model's 4096-token llama.cpp slots, with small pools (llama.cpp\n"
    "# caches per slot). Keys not listed keep the defaults.\n"
)
# For the tiny vLLM model: one 4096-token context, one prefix cache shared by all requests
# in 128-token blocks (vLLM's CPU backend), so pools can be as in the sim demo, only shorter.
VLLM_SCENARIOS: dict[str, dict[str, Any]] = {
    "long_context_high_reuse": {"shared_tokens_min": 1500, "shared_tokens_max": 2500},
    "code_generation": {"shared_tokens_min": 1500, "shared_tokens_max": 1500},
    "multi_turn_conversation": {
        "shared_tokens_min": 300,
        "shared_tokens_max": 600,
        "max_history_tokens": 3000,
    },
    "batch_processing": {"shared_tokens_min": 600, "shared_tokens_max": 1000},
    "cold_start": {"unique_tokens": 1000},
}
VLLM_CONFIG_HEADER = (
    "# Written by `kvswarm demo --engine vllm`: the original suite's scenarios scaled down\n"
    "# to fit a tiny model's 4096-token context on vLLM's CPU build (prefix caching on).\n"
    "# Keys not listed keep the defaults.\n"
)
# Real engines the demo can start itself (llama.cpp: the non-disaggregated mode only).
REAL_ENGINES = ("llamacpp", "vllm")
# The sizes the scaling line compares, with the words it uses for them.
SIZE_FIELDS = (
    ("shared_tokens_min", "shared_tokens_max", "shared prefix"),
    ("unique_tokens", None, "unique part"),
    ("max_history_tokens", None, "history cap"),
    ("pool_size", None, "pool"),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run every scenario against the simulated stack in both modes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=12.0,
        help="load time of each scenario in each mode (default: 12; about 2.5 minutes in all)",
    )
    parser.add_argument(
        "--users", type=int, default=3, help="simulated users per scenario run (default: 3)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="deployment modes to run (default: both)",
    )
    parser.add_argument(
        "--results", default="results", help="where the demo's directory goes (default: results)"
    )
    parser.add_argument(
        "--engine",
        choices=("sim", *REAL_ENGINES),
        default="sim",
        help="sim: the simulated stack, both modes (default); llamacpp: a real llama-server "
        "with a tiny model, non_disaggregated only",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="a kvswarm YAML config whose `scenarios` are merged over the demo's scaled-down "
        "ones (a scenario added there, with its `type`, runs in the demo too)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these scenarios (default: every enabled one)",
    )
    parser.set_defaults(func=run_demo)


def scenario_configs(config: Config) -> list[tuple[str, Any]]:
    """The config's enabled scenarios, in its order, as (name, ScenarioConfig)."""
    return [(name, scenario) for name, scenario in config.scenarios.items() if scenario.enabled]


def _is_baseline(name: str, scenario: Any) -> bool:
    return getattr(scenario, "type", name) == BASELINE_TYPE


def _user_scenarios(path: str | None) -> dict[str, Any]:
    """The `scenarios` section of the user's `--config` (validated as a whole first)."""
    if path is None:
        return {}
    load_config(path)
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return dict(data.get("scenarios") or {})


def _merged(scaled: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The demo's scaled scenarios with the user's keys over them, name by name."""
    merged = {name: dict(values) for name, values in scaled.items()}
    for name, values in given.items():
        merged[name] = {**merged.get(name, {}), **(values or {})}
    return merged


def _config_data(
    engine: str, metrics_endpoints: dict[str, str], given: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The demo config's header comment and content."""
    if engine == "vllm":
        from kvswarm.vllm.server import DEFAULT_MODEL_NAME

        return VLLM_CONFIG_HEADER, {
            "target": {"model": DEFAULT_MODEL_NAME, "engine": "vllm", "max_model_len": 4096},
            "generation": {"max_tokens": 16},
            "scenarios": _merged(VLLM_SCENARIOS, given or {}),
            "metrics_endpoints": metrics_endpoints,
        }
    if engine == "llamacpp":
        from kvswarm.llamacpp.server import DEFAULT_ALIAS

        return LLAMACPP_CONFIG_HEADER, {
            "target": {"model": DEFAULT_ALIAS, "engine": "llama.cpp", "max_model_len": 4096},
            "generation": {"max_tokens": 16},
            "scenarios": _merged(LLAMACPP_SCENARIOS, given or {}),
            "metrics_endpoints": metrics_endpoints,
        }
    return SIM_CONFIG_HEADER, {
        "generation": {"max_tokens": 64},
        "scenarios": _merged(DEMO_SCENARIOS, given or {}),
        "metrics_endpoints": metrics_endpoints,
    }


def write_config(
    path: Path,
    engine: str,
    metrics_endpoints: dict[str, str],
    given: dict[str, Any] | None = None,
) -> Config:
    """Write the demo's config (scaled-down scenarios, the user's over them) to `path` and
    load it back."""
    header, data = _config_data(engine, metrics_endpoints, given)
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_config(path)


def _range(scenario: Any, low: str, high: str | None) -> str:
    first = getattr(scenario, low, None)
    last = getattr(scenario, high, None) if high else first
    return str(first) if first == last else f"{first}-{last}"


def scaling_lines(original: Config, demo: Config) -> list[str]:
    """Per scenario, the sizes the demo changed: `original -> demo` (tokens)."""
    defaults = dict(scenario_configs(original))
    lines = []
    for name, scenario in scenario_configs(demo):
        before = defaults.get(name)
        changes = [
            f"{label} {_range(before, low, high)} -> {_range(scenario, low, high)}"
            for low, high, label in SIZE_FIELDS
            if before is not None
            and _range(before, low, high) != _range(scenario, low, high)
            and hasattr(scenario, low)
        ]
        lines.append(f"  {name:<24} {', '.join(changes) or 'as in the original suite'}")
    return lines


def _start_target(mode: str, engine: str, mode_dir: Path) -> Any:
    """The server under test, as a context manager with `base_url` and `metrics_urls`."""
    if engine == "vllm" and mode == "pd_disaggregated":
        from kvswarm.vllm.pd import start_vllm_pd

        return start_vllm_pd(mode_dir)
    if engine == "vllm":
        from kvswarm.vllm.install import ensure_vllm
        from kvswarm.vllm.server import VllmServerOptions, start_vllm_server

        install = ensure_vllm()
        return start_vllm_server(
            VllmServerOptions(max_model_len=4096),
            python=install.python,
            log_path=mode_dir / "server.log",
        )
    if engine == "llamacpp":
        from kvswarm.llamacpp.build import ensure_llama_server
        from kvswarm.llamacpp.server import LlamaServerOptions, start_llama_server

        build = ensure_llama_server()
        options = LlamaServerOptions(slots=LLAMACPP_SLOTS, ctx_per_slot=4096, threads=1)
        return start_llama_server(options, binary=build.binary, log_path=mode_dir / "server.log")
    from kvswarm.sim.options import SimOptions
    from kvswarm.sim.stack import spawn_stack

    return spawn_stack(SimOptions(mode=mode).with_free_ports(), log_path=mode_dir / "sim.log")


def _check_exit(run: HeadlessRun, label: str, code: int) -> None:
    if code != 0:
        raise KvswarmError(f"the {label} load test failed (exit {code}); see {run.log_path}")


def _run_mode(
    mode: str, args: argparse.Namespace, root: Path, scenarios: list[str], done: int, total: int
) -> list[HeadlessRun]:
    """Start the target once, then run each scenario against it in turn."""
    target = {"llamacpp": "llama-server", "vllm": "vLLM (CPU build)"}.get(
        args.engine, "the simulated stack"
    )
    print(f"{mode}: starting {target}", flush=True)
    mode_dir = root / mode
    mode_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    with _start_target(mode, args.engine, mode_dir) as stack:
        config = mode_dir / "config.yaml"
        write_config(
            config, args.engine, stack_metrics_endpoints(stack), _user_scenarios(args.config)
        )
        store = getattr(getattr(stack, "info", None), "kv_store", None)
        where = f"{stack.base_url}" + (f", KV store: {store}" if store else "")
        print(f"{mode}: {where}", flush=True)
        for number, scenario in enumerate(scenarios, done + 1):
            label = f"[{number}/{total}] {mode} {scenario}"
            run = HeadlessRun(
                mode, scenario, stack.base_url, config, mode_dir / scenario,
                users=args.users, seconds=args.seconds,
            )  # fmt: skip
            _check_exit(run, label, run_headless(run, label))
            runs.append(run)
    return runs


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _share(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def _change(drop: float | None) -> str:
    return "-" if drop is None else f"{-drop * 100:+.0f}%"


def _intro(engine: str, args: argparse.Namespace, scaling: list[str]) -> list[str]:
    if engine == "vllm":
        lines = [
            "kvswarm demo — real vLLM (its CPU build) with a tiny random-weight model on this",
            "machine's CPU: a real engine and a real prefix cache, not a production model or GPU.",
        ]
    elif engine == "llamacpp":
        lines = [
            "kvswarm demo — a real llama-server (llama.cpp) with a tiny random-weight model on",
            "this machine's CPU: real prefill, decode and prompt cache, not a production model.",
        ]
    else:
        lines = [
            "kvswarm demo — simulated stack: these numbers show how kvswarm measures,",
            "not the performance of any real serving stack.",
        ]
    return [
        *lines,
        f"Each scenario ran on its own for {args.seconds:g} s with {args.users} users, one after",
        "another against the same server, so no scenario queued behind another's prefills.",
        "",
        "Prompt sizes in tokens, original suite -> this demo:",
        *scaling,
    ]


def _mode_title(mode: str, engine: str, stores: set[str | None]) -> str:
    if engine == "vllm" and mode == "pd_disaggregated":
        named = sorted(str(s) for s in stores if s) or ["unknown"]
        return (
            f"{mode}: vLLM prefiller and decoder behind kvswarm's proxy; KV store: "
            f"{', '.join(named)}"
        )
    if engine == "vllm":
        return f"{mode}: one vLLM server with prefix caching (128-token blocks on CPU)"
    if engine == "llamacpp":
        return f"{mode}: one llama-server with its per-slot prompt cache"
    if mode == "non_disaggregated":
        return f"{mode}: one simulated server with a vLLM-style prefix cache"
    named = sorted(str(s) for s in stores if s) or ["unknown"]
    return f"{mode}: simulated prefiller and decoder behind a proxy; KV store: {', '.join(named)}"


TABLE_HEADER = (
    f"{'':<24} {'':>5} {'TTFT p50 (ms)':^26} {'hit vs':>7} {'TPOT':>6}  "
    f"{'reuse (% of requests)':^24}",
    f"{'scenario':<24} {'reqs':>5} {'hit':>8} {'miss':>8} {'cold':>8} {'miss':>7} "
    f"{'p50 ms':>6}  {'config':>7} {'design':>7} {'server':>8}",
)
FOOTNOTES = (
    "hit/miss: requests the workload built to reuse a prefix the server has seen, and the",
    "rest; cold: the cold-start scenario (every request unique) in the same mode; hit vs",
    "miss: change of the median TTFT. reuse: config = the scenario's reuse_ratio, design =",
    "share of designed hits sent, server = share of requests the server reported cached",
    "prompt tokens for.",
)


def _row(h: Headline, cold_ms: float | None) -> str:
    return (
        f"{h.name:<24} {h.requests:>5} {_ms(h.ttft_p50_hit_ms):>8} "
        f"{_ms(h.ttft_p50_miss_ms):>8} {_ms(cold_ms):>8} {_change(h.ttft_drop):>7} "
        f"{_ms(h.tpot_p50_ms):>6}  {_share(h.configured_reuse):>7} "
        f"{_share(h.designed_hit_share):>7} {_share(h.server_hit_share):>8}"
    )


def _mode_table(mode: str, runs: list[HeadlessRun], engine: str, baselines: set[str]) -> list[str]:
    """One mode's title and rows; the cold column is the baseline scenario's median TTFT."""
    from kvswarm.analysis.headline import kv_store, scenario_headline
    from kvswarm.analysis.runs import load_run

    loaded = {r.scenario: load_run(r.path) for r in runs if r.mode == mode}
    rows = [scenario_headline(run, name) for name, run in loaded.items()]
    cold_ms = next((h.ttft_p50_ms for h in rows if h.name in baselines), None)
    stores = {kv_store(run) for run in loaded.values()}
    return [
        _mode_title(mode, engine, stores),
        *TABLE_HEADER,
        *(_row(h, cold_ms) for h in rows),
    ]


def format_headlines(
    runs: list[HeadlessRun],
    args: argparse.Namespace,
    scenarios: list[tuple[str, Any]],
    scaling: list[str],
) -> str:
    """The demo's headline: the scaling, then per mode one row per scenario."""
    baselines = {name for name, scenario in scenarios if _is_baseline(name, scenario)}
    lines = _intro(args.engine, args, scaling)
    for mode in dict.fromkeys(run.mode for run in runs):
        lines += ["", *_mode_table(mode, runs, args.engine, baselines)]
    return "\n".join([*lines, "", *FOOTNOTES]) + "\n"


def _prepare(args: argparse.Namespace, root: Path) -> list[tuple[str, Any]]:
    """Write the demo's config at the top of its directory and read its scenarios."""
    config = write_config(root / "config.yaml", args.engine, {}, _user_scenarios(args.config))
    scenarios = scenario_configs(config)
    if args.scenarios:
        known = {name for name, _ in scenarios}
        unknown = [name for name in args.scenarios if name not in known]
        if unknown:
            raise KvswarmError(
                f"--scenarios: no enabled scenario {', '.join(unknown)} (the demo's config "
                f"has: {', '.join(sorted(known))})"
            )
        scenarios = [(name, sc) for name, sc in scenarios if name in args.scenarios]
    if not scenarios:
        raise KvswarmError(f"{root / 'config.yaml'}: no enabled scenario to run")
    return scenarios


def run_demo(args: argparse.Namespace) -> int:
    if args.engine == "llamacpp":
        if args.modes != ["non_disaggregated"] and args.modes != list(MODES):
            raise KvswarmError("--engine llamacpp runs the non_disaggregated mode only")
        args.modes = ["non_disaggregated"]
        args.users = min(args.users, LLAMACPP_SLOTS)
    stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
    root = Path(args.results).resolve() / f"demo-{stamp}"
    root.mkdir(parents=True, exist_ok=True)
    scenarios = _prepare(args, root)
    names = [name for name, _ in scenarios]
    total = len(names) * len(args.modes)
    estimate = total * (args.seconds + RUN_OVERHEAD_S) + len(args.modes) * RUN_OVERHEAD_S
    print(
        f"kvswarm demo: {len(names)} scenarios x {len(args.modes)} mode(s), {args.seconds:g} s "
        f"each with {args.users} users (about {estimate / 60:.1f} min); results in {root}",
        flush=True,
    )
    runs: list[HeadlessRun] = []
    try:
        with interruptible():
            for mode in args.modes:
                runs += _run_mode(mode, args, root, names, len(runs), total)
    except Interrupted as stop:
        print(
            f"kvswarm demo: {stop.name} received: the load test and the target are stopped; "
            f"the runs so far are in {root}",
            flush=True,
        )
        return stop.exit_code
    scaling = scaling_lines(load_config(None), load_config(root / "config.yaml"))
    text = format_headlines(runs, args, scenarios, scaling)
    (root / "headline.txt").write_text(text, encoding="utf-8")
    print()
    print(text, end="")
    print(f"runs: {root}/<mode>/<scenario>/ (summary.txt, requests.csv, run.json)")
    comparison = write_comparison_report([run.path for run in runs], root / "comparison")
    print(f"comparison: {comparison}")
    print(f"results: {root}")
    return 0
