"""`kvswarm matrix`: every enabled scenario in every enabled deployment mode, then one
comparison across all of them.

Each run is a headless Locust run of one scenario (`kvswarm locust --headless`, with
`--workers N` a master and N local workers) against the mode's endpoint from the config
(`deployment_modes.<mode>.base_url`: the proxy for PD, the server for non-PD), starting
with the prefix cache reset (`--kv-reset-cache`), with a cool-down between runs. Runs go
to `<results>/<mode>-<scenario>/`, Locust's logs and CSVs to `<results>/locust/`, the
comparison to `<results>/comparison/`.

The matrix resumes: a run whose run.json says `finished` is kept and skipped (`--force`
runs it again). A run that fails (non-zero exit, or run.json not `finished`) is run once
more; one that fails again is named in the final table and the exit code is 1. A run
that is replaced (retried or forced) is moved to `<results>/previous/`, not deleted.

With `--sim` the simulated stack (`kvswarm sim`, with a real Mooncake store in the PD
mode when the `mooncake` extra is installed) is started for each mode on free ports and
the whole matrix runs on this machine; without `--config` it uses the demo's scaled-down
scenarios. Without `--sim` each enabled mode's endpoint must answer a pre-flight request
before any run starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvswarm.config import Config, load_config
from kvswarm.errors import ConfigError, KvswarmError
from kvswarm.headless import (
    RUN_OVERHEAD_S,
    HeadlessRun,
    run_headless,
    stack_metrics_endpoints,
    write_comparison_report,
)
from kvswarm.interrupts import Interrupted, interruptible
from kvswarm.runrecord import read_run_record

__all__ = [
    "MODES",
    "MatrixPlan",
    "Outcome",
    "check_targets",
    "format_outcomes",
    "is_complete",
    "plan_matrix",
    "register",
    "run_matrix",
]

MODES = ("non_disaggregated", "pd_disaggregated")
# Attempts per run: the first, and one retry.
ATTEMPTS = 2
# How long the pre-flight of a configured endpoint waits for its one token.
PREFLIGHT_TIMEOUT_S = 15.0
SIM_CONFIG_HEADER = (
    "# Written by `kvswarm matrix --sim`: the run config with metrics_endpoints set to the\n"
    "# simulated stack's pages.\n"
)


@dataclass(frozen=True)
class MatrixPlan:
    """What the matrix runs: validated modes and scenarios, and the load of each run."""

    config_path: Path | None
    config: Config
    modes: tuple[str, ...]
    scenarios: tuple[str, ...]
    root: Path
    sim: bool
    force: bool
    seconds: float
    users: int
    workers: int
    cool_down_s: float

    @property
    def total(self) -> int:
        return len(self.modes) * len(self.scenarios)

    def run_dir(self, mode: str, scenario: str) -> Path:
        return self.root / f"{mode}-{scenario}"


@dataclass(frozen=True)
class Outcome:
    """How one run of the matrix ended: `finished`, `skipped` (complete before) or
    `failed` (after its retry), after `attempts` attempts in this invocation."""

    mode: str
    scenario: str
    path: Path
    status: str
    attempts: int = 0
    reason: str = ""

    @property
    def complete(self) -> bool:
        return self.status in ("finished", "skipped")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds (0 or more), got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "matrix",
        help="run every enabled scenario in every enabled mode, then compare them all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=None,
        help="kvswarm YAML config: its enabled scenarios and deployment_modes (default: "
        "built-in defaults; with --sim, the demo's scaled-down scenarios)",
    )
    parser.add_argument(
        "--sim",
        action="store_true",
        help="start the simulated stack for each mode on this machine instead of using "
        "the config's endpoints",
    )
    parser.add_argument(
        "--force", action="store_true", help="run again the runs already complete in --results"
    )
    parser.add_argument(
        "--seconds", type=_seconds, default=60.0, help="load time of each run (default: 60)"
    )
    parser.add_argument(
        "--users", type=_positive_int, default=10, help="simulated users per run (default: 10)"
    )
    parser.add_argument(
        "--workers",
        type=_count,
        default=0,
        help="local Locust workers per run behind a master; 0: one process (default: 0)",
    )
    parser.add_argument(
        "--cool-down",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds to wait between runs (default: 10)",
    )
    parser.add_argument(
        "--results",
        default="results/matrix",
        help="the matrix's directory; runs complete there are skipped (default: results/matrix)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=None,
        help="run only these of the config's enabled modes (default: every enabled one)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=None,
        metavar="NAME",
        help="run only these of the config's enabled scenarios (default: every enabled one)",
    )
    parser.set_defaults(func=run_matrix)


def _chosen(kind: str, enabled: list[str], named: list[str] | None, where: str) -> tuple[str, ...]:
    """The enabled names, or those `named` (each must be enabled)."""
    if named is None:
        if not enabled:
            raise ConfigError(f"{where}: no enabled {kind[:-1]} to run")
        return tuple(enabled)
    unknown = [name for name in named if name not in enabled]
    if unknown:
        raise ConfigError(
            f"--{kind}: {', '.join(unknown)} is not an enabled {kind[:-1]} of {where} "
            f"(enabled: {', '.join(enabled) or 'none'})"
        )
    return tuple(dict.fromkeys(named))


def _config(args: argparse.Namespace) -> tuple[Config, str]:
    """The run config and how errors name it (with --sim and no --config, the demo's
    scaled-down config, written into the results directory)."""
    if args.config is None and args.sim:
        from kvswarm.demo import write_config

        path = Path(args.results).resolve() / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_config(path, "sim", {}), str(path)
    return load_config(args.config), args.config or "the default config"


def plan_matrix(args: argparse.Namespace) -> MatrixPlan:
    """Validate the arguments and the config; `ConfigError` names what is wrong."""
    config, where = _config(args)
    modes = _chosen(
        "modes",
        [m for m in MODES if getattr(config.deployment_modes, m).enabled],
        args.modes,
        where,
    )
    scenarios = _chosen(
        "scenarios",
        [name for name, scenario in config.scenarios.items() if scenario.enabled],
        args.scenarios,
        where,
    )
    return MatrixPlan(
        config_path=Path(args.config).resolve() if args.config else None,
        config=config,
        modes=modes,
        scenarios=scenarios,
        root=Path(args.results).resolve(),
        sim=args.sim,
        force=args.force,
        seconds=args.seconds,
        users=args.users,
        workers=args.workers,
        cool_down_s=args.cool_down,
    )


def _api_key(config: Config) -> str | None:
    """The key the runs will send, as far as the matrix can know it without Locust."""
    if config.target.api_key:
        return config.target.api_key
    key_file = os.environ.get("KVSWARM_API_KEY_FILE")
    if key_file:
        try:
            return Path(key_file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise ConfigError(
                f"$KVSWARM_API_KEY_FILE: {key_file}: cannot read: {exc.strerror}"
            ) from None
    from kvswarm.client import api_key_from_environment

    return api_key_from_environment()


def check_targets(plan: MatrixPlan) -> None:
    """One short completion to each mode's endpoint; `KvswarmError` for one that cannot
    serve it (unreachable, not OpenAI-compatible, silent, rejecting key or model)."""
    from kvswarm.client import Timeouts
    from kvswarm.preflight import preflight

    config = plan.config
    t = config.timeouts
    for mode in plan.modes:
        problem = preflight(
            config.base_url_for(mode),  # type: ignore[arg-type]
            endpoint=config.target.endpoint,
            model=config.model_name,
            api_key=_api_key(config),
            timeouts=Timeouts(connect_s=t.connect_s, ttft_s=t.ttft_s, idle_s=t.idle_s),
            timeout_s=PREFLIGHT_TIMEOUT_S,
        )
        if problem is not None and problem.fatal:
            raise KvswarmError(f"deployment_modes.{mode}: {problem.message}")


def is_complete(run_dir: Path) -> bool:
    """Whether the run directory holds a run that ran to its end (run.json `finished`)."""
    try:
        record = read_run_record(run_dir)
    except KvswarmError:
        return False
    return record is not None and record.status == "finished"


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class Progress:
    """Which run of how many, elapsed time and an estimate of the time left."""

    def __init__(self, plan: MatrixPlan, to_run: int) -> None:
        self.plan = plan
        self.started = time.monotonic()
        self.left = to_run
        self.spent: list[float] = []

    def per_run_s(self) -> float:
        if self.spent:
            return sum(self.spent) / len(self.spent)
        return self.plan.seconds + RUN_OVERHEAD_S + self.plan.cool_down_s

    def line(self, number: int, mode: str, scenario: str, what: str) -> str:
        elapsed = time.monotonic() - self.started
        remaining = self.left * self.per_run_s()
        return (
            f"[{number}/{self.plan.total}] {mode} {scenario}: {what} "
            f"(elapsed {_duration(elapsed)}, about {_duration(remaining)} left)"
        )

    def ran(self, seconds: float) -> None:
        self.left -= 1
        self.spent.append(seconds)


def _move_aside(plan: MatrixPlan, run: HeadlessRun) -> None:
    """Keep a replaced run (and its Locust log) under `previous/<run-id>.<n>/`."""
    if not run.path.exists() and not run.log_path.exists():
        return
    previous = plan.root / "previous"
    number = 1
    while (previous / f"{run.path.name}.{number}").exists():
        number += 1
    target = previous / f"{run.path.name}.{number}"
    if run.path.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(run.path, target)
    target.mkdir(parents=True, exist_ok=True)
    if run.log_path.exists():
        shutil.move(run.log_path, target / "locust.log")


def _failure_reason(run: HeadlessRun, code: int) -> str:
    """Why an attempt failed, in one line: run.json's reason, else kvswarm's line in the
    log, else the exit code."""
    try:
        record = read_run_record(run.path)
    except KvswarmError as exc:
        return str(exc)
    if record is not None and record.status_reason:
        return f"{record.status}: {record.status_reason}"
    lines = run.log_path.read_text(errors="replace").splitlines() if run.log_path.exists() else []
    said = [line for line in lines if line.startswith("kvswarm:")]
    if said:
        return said[-1].removeprefix("kvswarm:").strip()
    if code == 0:
        status = record.status if record is not None else "missing"
        return f"run.json status {status} (expected finished)"
    return f"exit {code}; see {run.log_path}"


class Matrix:
    """Runs a plan's runs in order, mode by mode, and remembers how each ended."""

    def __init__(self, plan: MatrixPlan) -> None:
        self.plan = plan
        self.outcomes: list[Outcome] = []
        self.todo = {
            (mode, scenario): plan.force or not is_complete(plan.run_dir(mode, scenario))
            for mode in plan.modes
            for scenario in plan.scenarios
        }
        self.progress = Progress(plan, sum(self.todo.values()))
        self.last_run_ended: float | None = None

    def run(self) -> list[Outcome]:
        for mode in self.plan.modes:
            pending = [s for s in self.plan.scenarios if self.todo[(mode, s)]]
            with self._target(mode, bool(pending)) as (base_url, config):
                for scenario in self.plan.scenarios:
                    self._one(mode, scenario, base_url, config)
        return self.outcomes

    @contextmanager
    def _target(self, mode: str, needed: bool) -> Iterator[tuple[str, Path | None]]:
        """The mode's endpoint and the config its runs use (with --sim, a stack started
        for the mode, only when some run of the mode is to run)."""
        if not (self.plan.sim and needed):
            yield self.plan.config.base_url_for(mode), self.plan.config_path  # type: ignore[arg-type]
            return
        from kvswarm.sim.options import SimOptions
        from kvswarm.sim.stack import spawn_stack

        print(f"{mode}: starting the simulated stack", flush=True)
        log_path = self.plan.root / f"sim-{mode}.log"
        with spawn_stack(SimOptions(mode=mode).with_free_ports(), log_path=log_path) as stack:
            store = getattr(getattr(stack, "info", None), "kv_store", None)
            where = stack.base_url + (f", KV store: {store}" if store else "")
            print(f"{mode}: {where}", flush=True)
            yield stack.base_url, self._sim_config(mode, stack)

    def _sim_config(self, mode: str, stack: Any) -> Path:
        """The run config with the stack's metrics pages as its metrics_endpoints."""
        path = self.plan.root / f"config-{mode}.yaml"
        source = self.plan.config_path or self.plan.root / "config.yaml"
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        data["metrics_endpoints"] = stack_metrics_endpoints(stack)
        path.write_text(SIM_CONFIG_HEADER + yaml.safe_dump(data, sort_keys=False), "utf-8")
        load_config(path)
        return path

    def _one(self, mode: str, scenario: str, base_url: str, config: Path | None) -> None:
        plan = self.plan
        number = len(self.outcomes) + 1
        path = plan.run_dir(mode, scenario)
        if not self.todo[(mode, scenario)]:
            line = self.progress.line(number, mode, scenario, f"complete in {path}, skipped")
            print(line, flush=True)
            self.outcomes.append(Outcome(mode, scenario, path, "skipped"))
            return
        run = HeadlessRun(
            mode, scenario, base_url, config, path, users=plan.users, seconds=plan.seconds,
            workers=plan.workers, reset_cache=True,
        )  # fmt: skip
        started = time.monotonic()
        outcome = self._attempts(number, run)
        self.progress.ran(time.monotonic() - started)
        self.outcomes.append(outcome)

    def _attempts(self, number: int, run: HeadlessRun) -> Outcome:
        reason = ""
        for attempt in range(1, ATTEMPTS + 1):
            self._cool_down()
            _move_aside(self.plan, run)
            what = "starting" if attempt == 1 else "retrying once"
            print(self.progress.line(number, run.mode, run.scenario, what), flush=True)
            label = f"[{number}/{self.plan.total}] {run.mode} {run.scenario}"
            code = run_headless(run, label)
            self.last_run_ended = time.monotonic()
            if code == 0 and is_complete(run.path):
                return Outcome(run.mode, run.scenario, run.path, "finished", attempt)
            reason = _failure_reason(run, code)
            print(f"  {label}: failed: {reason}", flush=True)
        return Outcome(run.mode, run.scenario, run.path, "failed", ATTEMPTS, reason)

    def _cool_down(self) -> None:
        if self.last_run_ended is None:
            return
        wait = self.plan.cool_down_s - (time.monotonic() - self.last_run_ended)
        if wait > 0:
            print(f"  cooling down {wait:.0f} s", flush=True)
            time.sleep(wait)


def format_outcomes(outcomes: list[Outcome]) -> str:
    """The final table: one row per run, how it ended and where it is."""
    lines = [f"{'mode':<18} {'scenario':<24} {'status':<9} {'tries':>5}  run"]
    for o in outcomes:
        lines.append(
            f"{o.mode:<18} {o.scenario:<24} {o.status:<9} {o.attempts or '-':>5}  {o.path}"
        )
    for o in outcomes:
        if not o.complete:
            lines.append(f"failed: {o.mode} {o.scenario}: {o.reason}")
    return "\n".join(lines) + "\n"


def _announce(plan: MatrixPlan, to_run: int) -> None:
    fleet = f", {plan.workers} workers each" if plan.workers else ""
    target = "the simulated stack" if plan.sim else "the config's endpoints"
    print(
        f"kvswarm matrix: {len(plan.scenarios)} scenarios x {len(plan.modes)} mode(s) = "
        f"{plan.total} runs ({to_run} to run, {plan.total - to_run} complete), "
        f"{plan.seconds:g} s each with {plan.users} users{fleet}, against {target}; "
        f"results in {plan.root}",
        flush=True,
    )


def run_matrix(args: argparse.Namespace) -> int:
    plan = plan_matrix(args)
    if not plan.sim:
        check_targets(plan)
    plan.root.mkdir(parents=True, exist_ok=True)
    matrix = Matrix(plan)
    _announce(plan, matrix.progress.left)
    try:
        with interruptible():
            outcomes = matrix.run()
    except Interrupted as stop:
        print(
            f"kvswarm matrix: {stop.name} received: the load test and the target are stopped; "
            f"the runs so far are in {plan.root} (run it again to resume)",
            flush=True,
        )
        return stop.exit_code
    print()
    print(format_outcomes(outcomes), end="")
    complete = [o.path for o in outcomes if o.complete]
    if complete:
        print(f"comparison: {write_comparison_report(complete, plan.root / 'comparison')}")
    print(f"results: {plan.root}")
    return 0 if all(o.complete for o in outcomes) else 1
