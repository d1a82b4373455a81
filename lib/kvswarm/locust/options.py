"""kvswarm's `--kv-*` options, and the settings a test runs with.

The options are Locust arguments (so they show in `--help` where the locustfile is
loaded first, in the web UI's start form, and travel from the master to every worker
with each spawn message). They are read when a test starts — never at import — so values
changed in the start form take effect, and workers use the master's mode, run id and
endpoint whatever they were started with.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kvswarm.client import Timeouts, api_key_from_environment
from kvswarm.config import Config, LoadConfig, load_config
from kvswarm.errors import ConfigError
from kvswarm.locust.arrivals import ARRIVALS, ArrivalPlan
from kvswarm.locust.recorder import ITL_EVENTS
from kvswarm.locust.steps import StepPlan, parse_steps
from kvswarm.urls import check_url

__all__ = ["MODES", "KvOptions", "RunSettings", "add_arguments"]

MODES = ("non_disaggregated", "pd_disaggregated")
# Set by the master (or a standalone process) when a test starts, and shipped to every
# worker with the spawn messages: the run's unique identity, which goes into every
# designed-miss prompt so that no run can find another run's "cold" prompts cached.
RUN_UID_OPTION = "kv_run_uid"
# When the measured window starts (the warm-up's end), shipped from the master.
MEASURE_START_OPTION = "kv_measure_start_unix"
# Set the same way: the scenarios the test runs (comma-separated), so that a worker builds
# pools for, and checks, only those (its own classes are every scenario of its config).
RUN_SCENARIOS_OPTION = "kv_run_scenarios"
# Set the same way: how many workers share an open-loop rate (each sends rate / W).
FLEET_WORKERS_OPTION = "kv_fleet_workers"
# Set the same way: the wall-clock start of a trace replay's timeline, common to the fleet.
REPLAY_START_OPTION = "kv_replay_start_unix"


def add_arguments(parser: Any) -> None:
    """Add kvswarm's options to Locust's argument parser.

    Not in an argument group: Locust's web-UI flags (`is_secret`, `include_in_web_ui`)
    are only understood by its parser's own `add_argument`."""
    parser.add_argument(
        "--kv-config",
        default="",
        env_var="KVSWARM_CONFIG",
        help="kvswarm YAML config (default: built-in defaults, as configs/test_config.yaml); "
        "it also decides which scenario user classes exist",
    )
    parser.add_argument(
        "--kv-mode",
        default="non_disaggregated",
        choices=MODES,
        help="deployment mode under test; picks deployment_modes.<mode>.base_url "
        "unless --host is given (workers use the master's)",
    )
    parser.add_argument(
        "--kv-results",
        default="",
        env_var="KVSWARM_RESULTS",
        help="directory for <run-id>/ (requests.csv, run.json, summary.txt); "
        "default: the config's results.dir (results)",
    )
    parser.add_argument(
        "--kv-endpoint",
        default="",
        choices=["", "chat", "completions"],
        help="API to call: chat (/v1/chat/completions) or completions (/v1/completions); "
        "default from the config",
    )
    parser.add_argument(
        "--kv-run-id",
        default="",
        help="name of the run directory (default: UTC time and mode); an existing one is refused",
    )
    # Neither key option is in the start form: Locust renders a form field's value into
    # the web UI's page (is_secret only masks the input box), and a form that could name
    # a file would let anyone reaching the UI send any file of the master to any host.
    parser.add_argument(
        "--kv-api-key",
        default="",
        include_in_web_ui=False,
        help="API key sent to the target as a bearer token (and to its /tokenize); "
        "visible to other local users in the process list, so prefer --kv-api-key-file "
        "or $KVSWARM_API_KEY; never written to results. First of: this, "
        "--kv-api-key-file, config target.api_key, $KVSWARM_API_KEY, $OPENAI_API_KEY",
    )
    parser.add_argument(
        "--kv-api-key-file",
        default="",
        env_var="KVSWARM_API_KEY_FILE",
        include_in_web_ui=False,
        metavar="PATH",
        help="file holding the API key (one line; surrounding whitespace is ignored), "
        "read when each test starts, by every process (a worker reads the same path on "
        "its own host)",
    )
    parser.add_argument(
        "--kv-itl-events",
        default="mean",
        choices=ITL_EVENTS,
        help="Locust ITL request events per request: mean (one, carrying the request's mean "
        "inter-token gap), every (one per gap: Locust's request counts then count gaps) or "
        "none; the exact gaps are in requests.csv and kvswarm's percentiles either way",
    )
    parser.add_argument(
        "--kv-exporter-bind",
        default="127.0.0.1",
        env_var="KVSWARM_EXPORTER_BIND",
        include_in_web_ui=False,  # read once, when Locust starts: the form cannot change it
        help="address of kvswarm's Prometheus exporter (served by the master, or a "
        "standalone process); 0.0.0.0 to let other hosts scrape it",
    )
    parser.add_argument(
        "--kv-exporter-port",
        type=int,
        default=9646,
        env_var="KVSWARM_EXPORTER_PORT",
        include_in_web_ui=False,  # read once, when Locust starts: the form cannot change it
        help="port of kvswarm's Prometheus exporter /metrics; 0: no exporter (the stack's "
        "metrics are still sampled into server_metrics.jsonl)",
    )
    parser.add_argument(
        "--kv-server-sample-interval",
        type=float,
        default=5.0,
        help="seconds between snapshots of every metrics endpoint (server_metrics.jsonl)",
    )
    parser.add_argument(
        "--kv-reset-cache",
        action="store_true",
        default=False,
        help="reset the server's prefix cache when a test starts (through its engine "
        "profile: vLLM /reset_prefix_cache with VLLM_SERVER_DEV_MODE=1, llama.cpp slot "
        "erase, the simulator), so the run starts cold; run.json says whether it could",
    )
    parser.add_argument(
        "--kv-skip-preflight",
        action="store_true",
        default=False,
        help="send no pre-flight request: by default one short completion goes to the "
        "target when a test starts, and a target that cannot serve it (refused, not "
        "OpenAI-compatible, no answer) stops the run in one line before any load",
    )
    parser.add_argument(
        "--kv-prime",
        action="store_true",
        default=False,
        help="before the load, send every shared prefix of every scenario once (one "
        "token each), so the measured phase starts with the cache warm; cold_start has "
        "none to send. With --kv-reset-cache: reset, then prime",
    )
    parser.add_argument(
        "--kv-backoff-max",
        type=float,
        default=5.0,
        help="a user whose request could not connect, or was answered 429/503 with "
        "Retry-After, waits before its next one: doubling from 0.1 s up to this many "
        "seconds (Retry-After, capped here, when the server sends it); 0: no wait",
    )
    parser.add_argument(
        "--kv-arrival",
        default=None,
        choices=ARRIVALS,
        help="how requests arrive: closed (each user sends when its previous request "
        "ends), or open loop at --kv-rate on a schedule a slow server does not slow down: "
        "poisson, or gamma with --kv-burstiness; -u then caps the requests in flight",
    )
    parser.add_argument(
        "--kv-rate",
        type=float,
        default=None,
        help="open loop: requests per second, for the whole fleet",
    )
    parser.add_argument(
        "--kv-burstiness",
        type=float,
        default=None,
        help="open loop, gamma: the shape of the inter-arrival gaps (below 1 burstier, "
        "above 1 more regular, 1 = poisson)",
    )
    parser.add_argument(
        "--kv-ramp-s",
        type=float,
        default=None,
        help="open loop: the arrival rate rises linearly from 0 to --kv-rate over this many "
        "seconds (a closed loop ramps with -r; a step plan is its own ramp)",
    )
    parser.add_argument(
        "--kv-steps",
        default="",
        help="step the load through these levels, comma-separated, each held --kv-step-s, "
        "then end the test: users (closed loop) or, with --kv-arrival, requests per second "
        "(-u users held as the in-flight cap); requests.csv's step column says which",
    )
    parser.add_argument(
        "--kv-step-s",
        type=float,
        default=None,
        help="--kv-steps: seconds each level is held",
    )
    parser.add_argument(
        "--kv-fleet-workers",
        dest=FLEET_WORKERS_OPTION,
        type=int,
        default=0,
        include_in_web_ui=False,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--kv-replay-start",
        dest=REPLAY_START_OPTION,
        type=float,
        default=0.0,
        include_in_web_ui=False,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--kv-measure-start",
        dest=MEASURE_START_OPTION,
        type=float,
        default=0.0,
        include_in_web_ui=False,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--kv-run-uid",
        dest=RUN_UID_OPTION,
        default="",
        include_in_web_ui=False,
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--kv-run-scenarios",
        dest=RUN_SCENARIOS_OPTION,
        default="",
        include_in_web_ui=False,
        help=argparse.SUPPRESS,
    )


def _arrival_plan(get: Any) -> ArrivalPlan:
    """The open-loop plan from the options; `ConfigError` for an open loop without a rate
    (unless --kv-steps gives the rates) or with a burstiness that is not positive."""
    kind = get("kv_arrival") or "closed"
    if kind not in ARRIVALS:
        raise ConfigError(f"--kv-arrival: must be one of {', '.join(ARRIVALS)}, got {kind!r}")
    rate = _seconds(get("kv_rate"), "--kv-rate", 0.0)
    burstiness = _seconds(get("kv_burstiness"), "--kv-burstiness", 1.0)
    if kind != "closed" and rate <= 0 and not (get("kv_steps") or "").strip():
        raise ConfigError(f"--kv-arrival {kind}: needs --kv-rate (requests per second) above 0")
    if burstiness <= 0:
        raise ConfigError(f"--kv-burstiness: must be above 0, got {burstiness:g}")
    ramp = _seconds(get("kv_ramp_s"), "--kv-ramp-s", 0.0)
    if ramp > 0 and (kind == "closed" or (get("kv_steps") or "").strip()):
        raise ConfigError(
            "--kv-ramp-s: ramps an open loop's --kv-rate (use -r for a closed loop's users; "
            "a --kv-steps plan is its own ramp)"
        )
    return ArrivalPlan(kind=kind, rate_per_s=rate, burstiness=burstiness, ramp_s=ramp)


# The options a config's `load` section stands for, by the section's keys.
LOAD_KEYS = {
    "kv_arrival": "arrival", "kv_rate": "rate_per_s", "kv_burstiness": "burstiness",
    "kv_ramp_s": "ramp_s", "kv_steps": "steps", "kv_step_s": "step_s",
}  # fmt: skip
LOAD_OPTIONS = tuple(LOAD_KEYS)


def _load_from_config(load: LoadConfig, where: str) -> dict[str, Any]:
    """The arrival plan and step plan of the config's `load` section, checked as the
    options are (a problem names the config key)."""
    values = {
        option: ",".join(f"{v:g}" for v in load.steps) if key == "steps" else getattr(load, key)
        for option, key in LOAD_KEYS.items()
    }
    get = values.get
    try:
        arrival = _arrival_plan(get)
        steps = parse_steps(get("kv_steps"), load.step_s, arrival.open_loop)
    except ConfigError as exc:
        message = str(exc)
        for option, key in LOAD_KEYS.items():
            message = message.replace("--" + option.replace("_", "-"), f"load.{key}")
        raise ConfigError(f"{where}: {message}") from None
    return {"arrival": arrival, "steps": steps}


def _seconds(value: Any, option: str, default: float) -> float:
    """Seconds from the parsed options (the start form sends text); `default` if unset."""
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds >= 0:
        raise ConfigError(f"{option}: expected seconds (0 or more), got {value!r}")
    return seconds


@dataclass(frozen=True)
class KvOptions:
    """kvswarm's options as Locust parsed them (or as the start form changed them)."""

    config_path: str | None = None
    mode: str = "non_disaggregated"
    results: str = ""
    endpoint: str = ""
    run_id: str = ""
    api_key: str = ""
    api_key_file: str = ""
    itl_events: str = "mean"
    reset_cache: bool = False
    skip_preflight: bool = False
    prime: bool = False
    backoff_max_s: float = 5.0
    arrival: ArrivalPlan = ArrivalPlan()
    steps: StepPlan | None = None
    # Whether any load option (--kv-arrival ... --kv-step-s) was given: if none was, the
    # config's `load` section says how requests arrive.
    load_given: bool = False
    fleet_workers: int = 0
    replay_start_unix: float = 0.0
    measure_start_unix: float = 0.0
    run_uid: str = ""
    run_scenarios: tuple[str, ...] = ()

    @classmethod
    def from_parsed(cls, parsed: Any) -> KvOptions:
        """From `environment.parsed_options` (None: the defaults)."""

        def get(name: str) -> Any:
            return getattr(parsed, name, None) if parsed is not None else None

        return cls(
            config_path=get("kv_config") or None,
            mode=get("kv_mode") or "non_disaggregated",
            results=get("kv_results") or "",
            endpoint=get("kv_endpoint") or "",
            run_id=get("kv_run_id") or "",
            api_key=get("kv_api_key") or "",
            api_key_file=get("kv_api_key_file") or "",
            itl_events=get("kv_itl_events") or "mean",
            reset_cache=bool(get("kv_reset_cache")),
            skip_preflight=bool(get("kv_skip_preflight")),
            prime=bool(get("kv_prime")),
            backoff_max_s=_seconds(get("kv_backoff_max"), "--kv-backoff-max", 5.0),
            arrival=(arrival := _arrival_plan(get)),
            steps=parse_steps(
                get("kv_steps") or "",
                _seconds(get("kv_step_s"), "--kv-step-s", 60.0),
                arrival.open_loop,
            ),
            load_given=any(get(name) not in (None, "") for name in LOAD_OPTIONS),
            fleet_workers=int(get(FLEET_WORKERS_OPTION) or 0),
            replay_start_unix=float(get(REPLAY_START_OPTION) or 0.0),
            measure_start_unix=float(get(MEASURE_START_OPTION) or 0.0),
            run_uid=get(RUN_UID_OPTION) or "",
            run_scenarios=tuple(filter(None, (get(RUN_SCENARIOS_OPTION) or "").split(","))),
        )

    def for_record(self) -> dict[str, Any]:
        """What run.json keeps of them: everything but the key's value."""
        return {
            "config": self.config_path,
            "mode": self.mode,
            "results": self.results or None,
            "endpoint": self.endpoint or None,
            "run_id": self.run_id or None,
            "api_key": "<redacted>" if self.api_key else None,
            "api_key_file": self.api_key_file or None,
            "itl_events": self.itl_events,
            "reset_cache": self.reset_cache,
            "skip_preflight": self.skip_preflight,
            "prime": self.prime,
            "backoff_max_s": self.backoff_max_s,
            "arrival": asdict(self.arrival),
            "steps": asdict(self.steps) if self.steps is not None else None,
        }


@dataclass(frozen=True)
class RunSettings:
    """Everything a test needs from the options and the config, validated once."""

    options: KvOptions
    config: Config
    mode: str
    endpoint: str
    api_key: str | None
    results_dir: Path
    base_url: str

    @classmethod
    def resolve(cls, options: KvOptions, host: str | None) -> RunSettings:
        """Load the config and settle the target; `ConfigError` names what is wrong."""
        if options.mode not in MODES:
            raise ConfigError(f"--kv-mode: must be one of {', '.join(MODES)}, got {options.mode!r}")
        if options.itl_events not in ITL_EVENTS:
            raise ConfigError(
                f"--kv-itl-events: must be one of {', '.join(ITL_EVENTS)}, "
                f"got {options.itl_events!r}"
            )
        config = load_config(options.config_path)
        if not options.load_given and config.load != LoadConfig():
            where = options.config_path or "config"
            options = replace(options, **_load_from_config(config.load, where))
        if host:
            try:
                base_url = check_url(host)
            except ValueError as exc:
                raise ConfigError(f"--host: {exc}") from None
        else:
            base_url = config.base_url_for(options.mode)  # type: ignore[arg-type]
        return cls(
            options=options,
            config=config,
            mode=options.mode,
            endpoint=options.endpoint or config.target.endpoint,
            api_key=_api_key(options, config),
            results_dir=Path(options.results or config.results.dir),
            base_url=base_url,
        )

    @property
    def timeouts(self) -> Timeouts:
        t = self.config.timeouts
        return Timeouts(connect_s=t.connect_s, ttft_s=t.ttft_s, idle_s=t.idle_s, total_s=t.total_s)


def _api_key(options: KvOptions, config: Config) -> str | None:
    """The first key given: --kv-api-key, --kv-api-key-file, the config, the environment.

    Checked wherever it came from: it becomes a header line, so a line break in it would
    let it write other headers. Errors name where the key came from, never the key."""
    if options.api_key:
        return _checked_key(options.api_key, "--kv-api-key")
    if options.api_key_file:
        path = options.api_key_file
        return _checked_key(_read_api_key_file(path), f"--kv-api-key-file: {path}")
    if config.target.api_key:
        where = (
            f"{options.config_path}: target.api_key" if options.config_path else "target.api_key"
        )
        return _checked_key(config.target.api_key, where)
    key = api_key_from_environment()
    return _checked_key(key, "$KVSWARM_API_KEY or $OPENAI_API_KEY") if key else None


def _read_api_key_file(path: str) -> str:
    """The key a --kv-api-key-file holds; `ConfigError` naming the file when there is none."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--kv-api-key-file: {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--kv-api-key-file: {path}: not UTF-8 text") from None
    key = text.strip()
    if not key:
        raise ConfigError(f"--kv-api-key-file: {path}: empty (expected the API key)")
    return key


def _checked_key(key: str, where: str) -> str:
    if any(ch.isspace() or not ch.isprintable() for ch in key):
        raise ConfigError(
            f"{where}: the API key must be one word (no spaces, line breaks or control characters)"
        )
    return key
