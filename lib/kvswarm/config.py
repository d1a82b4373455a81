"""The YAML configuration: typed, validated once at the edge.

Every section is a frozen dataclass validated by pydantic (strict types, unknown keys
rejected), so the rest of kvswarm never re-checks its inputs. `load_config` turns any
problem into a `ConfigError` whose one-line message names the file and the key path.

Scenarios are open: `scenarios` maps a name to a `ScenarioConfig` whose `type` names a
workload type registered in `kvswarm.workloads` (which imports this module, so the
registry is imported here only when a config is built, never at import time).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass

from kvswarm.errors import ConfigError
from kvswarm.urls import check_url

__all__ = [
    "SCENARIO_NAME",
    "Config",
    "DeploymentModeConfig",
    "DeploymentModesConfig",
    "GenerationConfig",
    "ModelConfig",
    "ResultsConfig",
    "ScenarioConfig",
    "SloConfig",
    "TargetConfig",
    "TimeoutsConfig",
    "TokenizerConfig",
    "load_config",
    "parse_config",
    "redacted",
]

_STRICT = ConfigDict(extra="forbid", strict=True)

Mode = Literal["pd_disaggregated", "non_disaggregated"]
Endpoint = Literal["chat", "completions"]
Engine = Literal["auto", "vllm", "llama.cpp", "sglang", "sim", "openai"]


def _check_ratio(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


Ratio = Annotated[float, AfterValidator(_check_ratio)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
# An absolute http(s) URL with a host (kvswarm.urls.check_url), checked when loaded.
Url = Annotated[str, AfterValidator(check_url)]

# What a scenario (and a workload type) may be called: it becomes a Locust class name
# and tag, and a key in results.
SCENARIO_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, config=_STRICT)
class TargetConfig:
    """The server under test. `base_url` may end in `/v1` or not."""

    base_url: Url = "http://localhost:9000/v1"
    model: str = "Qwen/Qwen2.5-7B-Instruct-GPTQ-Int4"
    endpoint: Endpoint = "chat"
    engine: Engine = "auto"
    # Read from the environment (OPENAI_API_KEY / KVSWARM_API_KEY) when not set here;
    # never written to results.
    api_key: str | None = None
    # The served model's context length in tokens: prompts + max_tokens must fit.
    max_model_len: PositiveInt = 32768


@dataclass(frozen=True, config=_STRICT)
class GenerationConfig:
    """Sampling parameters sent with every request."""

    max_tokens: PositiveInt = 64
    temperature: Annotated[float, Field(ge=0.0)] = 0.0
    # vLLM extension: generate exactly max_tokens, so TPOT is comparable across requests.
    ignore_eos: bool = True
    stream: bool = True


@dataclass(frozen=True, config=_STRICT)
class TimeoutsConfig:
    """Seconds before a request is failed as `connect`, `timeout_ttft`, `timeout_idle` or
    (the whole request, start to end of the response) `timeout_total`."""

    connect_s: PositiveFloat = 10.0
    ttft_s: PositiveFloat = 120.0
    idle_s: PositiveFloat = 60.0
    total_s: PositiveFloat = 600.0


@dataclass(frozen=True, config=_STRICT)
class SloConfig:
    """Service-level objectives for goodput, each request's `met_slo` and verdicts
    (milliseconds; `e2e_ms` only when set). A step of a `--kv-steps` sweep is within
    the SLOs when at least `attainment` of its requests met them."""

    ttft_ms: PositiveFloat = 2000.0
    tpot_ms: PositiveFloat = 100.0
    e2e_ms: PositiveFloat | None = None
    attainment: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9

    def met_by(
        self, ok: bool, ttft_s: float | None, tpot_s: float | None, e2e_s: float | None
    ) -> bool:
        """A request met them: it succeeded, and its TTFT, its TPOT (when it has one) and
        its E2E (when `e2e_ms` is set) are within their limits."""
        if not ok or ttft_s is None or ttft_s * 1000.0 > self.ttft_ms:
            return False
        if tpot_s is not None and tpot_s * 1000.0 > self.tpot_ms:
            return False
        limit = self.e2e_ms
        return limit is None or (e2e_s is not None and e2e_s * 1000.0 <= limit)


@dataclass(frozen=True, config=_STRICT)
class TargetRange:
    """An interval a comparison's estimate is judged against (shares: 0.6 = 60%)."""

    low: float | None = None
    high: float | None = None


@dataclass(frozen=True, config=_STRICT)
class TargetsConfig:
    """What `kvswarm compare` judges PASS/FAIL/INCONCLUSIVE against (kvswarm.analysis.
    targets). Defaults are the original suite's: a cache hit cuts TTFT by 60-70%; PD and
    non-PD TPOT differ by under 20%; PD raises throughput by 150-200%."""

    cache_ttft_reduction: TargetRange = TargetRange(0.60, 0.70)
    pd_tpot_difference: TargetRange = TargetRange(-0.20, 0.20)
    pd_throughput_gain: TargetRange = TargetRange(1.50, 2.00)
    # Smaller groups (requests per side, throughput windows) give INCONCLUSIVE.
    min_requests: PositiveInt = 20
    min_windows: PositiveInt = 5
    throughput_windows: PositiveInt = 10


@dataclass(frozen=True, config=_STRICT)
class DeploymentModeConfig:
    """One deployment mode: whether it is tested and where its entry point is."""

    enabled: bool = True
    base_url: Url | None = None


@dataclass(frozen=True, config=_STRICT)
class DeploymentModesConfig:
    pd_disaggregated: DeploymentModeConfig = DeploymentModeConfig(
        base_url="http://localhost:9000/v1"
    )
    non_disaggregated: DeploymentModeConfig = DeploymentModeConfig(
        base_url="http://localhost:8000/v1"
    )


@dataclass(frozen=True, config=_STRICT)
class ModelConfig:
    """A model of the large-model config (`models.<key>`)."""

    name: str
    tensor_parallel_size: PositiveInt = 1
    max_model_len: PositiveInt = 32768
    max_tokens: PositiveInt | None = None
    gpu_memory_utilization: Ratio = 0.9
    quantization: str | None = None


@dataclass(frozen=True, config=_STRICT)
class TokenizerConfig:
    """How prompt lengths in tokens are achieved (see kvswarm.tokens).

    `auto` tries the server's /tokenize, then `hf_name` if it loads offline, then a
    chars-per-token ratio calibrated from the server's reported usage.
    """

    method: Literal["auto", "server", "hf", "ratio"] = "auto"
    # A tokenizer.json, a directory holding one, or a Hub repo id already in the local
    # Hugging Face cache (never downloaded).
    hf_name: str | None = None
    chars_per_token: PositiveFloat = 4.0
    # Where POST /tokenize lives when not at the target's root (e.g. a PD proxy that does
    # not forward it: point it at the prefiller).
    tokenize_url: Url | None = None


@dataclass(frozen=True, config=_STRICT)
class ScenarioConfig:
    """One scenario's workload shape. Lengths are in tokens of the served model.

    `type` names the workload type that makes its prompts (a key of
    `kvswarm.workloads.workload_types()`); keys left out of a YAML entry take that type's
    defaults. A request is `shared prefix` + `unique part`: the shared prefix comes from a
    pool of `pool_size` deterministic documents/codebases/templates/openers of
    `shared_tokens_min`..`shared_tokens_max` tokens; with probability `reuse_ratio` it is
    one the server has already seen. The unique part is `unique_tokens` long.
    """

    type: str
    enabled: bool = True
    weight: NonNegativeInt = 1
    reuse_ratio: Ratio = 0.0
    pool_size: PositiveInt = 4
    shared_tokens_min: NonNegativeInt = 0
    shared_tokens_max: NonNegativeInt = 0
    unique_tokens: PositiveInt = 64
    max_tokens: PositiveInt | None = None
    # multi-turn only: a conversation ends after this many turns or history tokens.
    max_turns: PositiveInt = 8
    max_history_tokens: PositiveInt = 16000
    # Seconds a simulated user waits between requests (uniform in [min, max]).
    wait_min_s: Annotated[float, Field(ge=0.0)] = 0.0
    wait_max_s: Annotated[float, Field(ge=0.0)] = 0.0
    # Each user's turns on a schedule of its own: the next is due this many seconds after
    # the previous was due (fixed, or exponential with this mean), late if the previous
    # has not ended (send lag); 0: the next goes when the previous ends (and the wait).
    turn_gap_s: Annotated[float, Field(ge=0.0)] = 0.0
    turn_gap: Literal["fixed", "exponential"] = "fixed"
    # trace only (kvswarm.workloads.trace): the Mooncake-format trace file, its block size
    # in tokens, the factor on its timestamps, the stretch of the scaled timeline replayed
    # ([start_s, end_s) seconds from the first row) and a limit on the rows replayed.
    path: str | None = None
    block_tokens: PositiveInt = 512
    time_scale: PositiveFloat = 1.0
    start_s: Annotated[float, Field(ge=0.0)] = 0.0
    end_s: PositiveFloat | None = None
    max_rows: PositiveInt | None = None
    # A replay whose send lag p99 is above this is marked degraded (run.json's replay).
    lag_bound_ms: PositiveFloat = 50.0

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> ScenarioConfig:
        if self.shared_tokens_max < self.shared_tokens_min:
            raise ValueError(
                f"shared_tokens_max ({self.shared_tokens_max}) must be >= "
                f"shared_tokens_min ({self.shared_tokens_min})"
            )
        if self.wait_max_s < self.wait_min_s:
            raise ValueError(
                f"wait_max_s ({self.wait_max_s}) must be >= wait_min_s ({self.wait_min_s})"
            )
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s}) must be > start_s ({self.start_s})")
        return self


def _builtin_scenarios() -> dict[str, ScenarioConfig]:
    from kvswarm.workloads.registry import builtin_scenarios

    return builtin_scenarios()


def _workload_defaults() -> Mapping[str, ScenarioConfig]:
    """Workload type -> its defaults, from the registry."""
    from kvswarm.workloads.registry import workload_types

    return {name: registered.defaults for name, registered in workload_types().items()}


def _scenario_problem(name: str, type_: object, types: Mapping[str, object]) -> str | None:
    """What is wrong with scenario `name` of type `type_` (`scenarios.<name>...: why`)."""
    if not SCENARIO_NAME.fullmatch(name):
        return (
            f"scenarios.{_key(name)}: a scenario name must be lower-case letters, digits and "
            "underscores, starting with a letter"
        )
    if type_ is None:
        return (
            f"scenarios.{name}.type: required for a scenario not named after a workload "
            f"type (types: {', '.join(types)})"
        )
    if isinstance(type_, str) and type_ not in types:
        return f"scenarios.{name}.type: unknown workload type {type_!r} (types: {', '.join(types)})"
    return None


@dataclass(frozen=True, config=_STRICT)
class LoadConfig:
    """How requests arrive, as the `--kv-arrival`, `--kv-rate`, `--kv-burstiness`,
    `--kv-ramp-s`, `--kv-steps` and `--kv-step-s` options say it; any of those options
    on the command line (or in the start form) replaces this whole section."""

    arrival: Literal["closed", "poisson", "gamma"] = "closed"
    rate_per_s: Annotated[float, Field(ge=0.0)] = 0.0
    burstiness: PositiveFloat = 1.0
    ramp_s: Annotated[float, Field(ge=0.0)] = 0.0
    steps: list[float] = Field(default_factory=list)
    step_s: PositiveFloat = 60.0


@dataclass(frozen=True, config=_STRICT)
class ResultsConfig:
    dir: str = "results"
    # Seconds between flushes of requests.csv, so a killed run keeps what it measured.
    flush_interval_s: PositiveFloat = 2.0
    # Seconds at the start of a run excluded from throughput and percentiles.
    warmup_s: Annotated[float, Field(ge=0.0)] = 0.0
    # The first requests of a run excluded too (a fleet: each of W workers its first
    # N/W); both flag requests.csv's `warmup` column.
    warmup_requests: NonNegativeInt = 0


@dataclass(frozen=True, config=_STRICT)
class Config:
    """A whole kvswarm configuration file."""

    target: TargetConfig = TargetConfig()
    generation: GenerationConfig = GenerationConfig()
    timeouts: TimeoutsConfig = TimeoutsConfig()
    slo: SloConfig = SloConfig()
    targets: TargetsConfig = TargetsConfig()
    deployment_modes: DeploymentModesConfig = DeploymentModesConfig()
    # Addresses of the machines in the deployment, for reports and scraping.
    machines: dict[str, str] = Field(default_factory=dict)
    # The large-model config picks one of `models` by key.
    active_model: str | None = None
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    # Extra Prometheus endpoints to snapshot (name -> URL of a /metrics page).
    metrics_endpoints: dict[str, Url] = Field(default_factory=dict)
    tokenizer: TokenizerConfig = TokenizerConfig()
    # Scenario name -> its config, in order: the built-in scenarios (one per built-in
    # workload type, named after it), then those the file adds.
    scenarios: dict[str, ScenarioConfig] = Field(default_factory=_builtin_scenarios)
    results: ResultsConfig = ResultsConfig()
    load: LoadConfig = LoadConfig()
    # Seed of every deterministic shared prefix; the same on every worker.
    seed: int = 0

    @model_validator(mode="after")
    def _active_model_is_defined(self) -> Config:
        if self.active_model is not None and self.active_model not in self.models:
            defined = ", ".join(sorted(self.models)) or "none"
            raise ValueError(
                f"active_model: '{self.active_model}' is not defined in models (defined: {defined})"
            )
        return self

    @model_validator(mode="after")
    def _scenario_types_are_known(self) -> Config:
        types = _workload_defaults()
        for name, scenario in self.scenarios.items():
            problem = _scenario_problem(name, scenario.type, types)
            if problem:
                raise ValueError(problem)
        return self

    @property
    def model_name(self) -> str:
        """The model sent in requests: the active model's name, else target.model."""
        if self.active_model is not None:
            return self.models[self.active_model].name
        return self.target.model

    @property
    def max_model_len(self) -> int:
        if self.active_model is not None:
            return self.models[self.active_model].max_model_len
        return self.target.max_model_len

    @property
    def max_tokens(self) -> int:
        if self.active_model is not None and self.models[self.active_model].max_tokens:
            return self.models[self.active_model].max_tokens
        return self.generation.max_tokens

    def base_url_for(self, mode: Mode | None) -> str:
        """The entry point for a deployment mode, falling back to target.base_url."""
        if mode is not None:
            url = getattr(self.deployment_modes, mode).base_url
            if url:
                return url
        return self.target.base_url


_ADAPTER = TypeAdapter(Config)


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate already-loaded YAML data; errors name `source` and the key path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {_kind(data)}")
    data = _with_scenario_defaults(data, source)
    try:
        return _ADAPTER.validate_json(orjson.dumps(data), strict=True)
    except orjson.JSONEncodeError as exc:
        raise ConfigError(f"{source}: unsupported YAML value ({exc})") from None
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _with_scenario_defaults(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The built-in scenarios, then the file's: keys left out of `scenarios.<name>` take the
    defaults of its type (90% reuse for long_context_high_reuse, ...), not those of a
    generic scenario. A scenario named after a workload type is of that type unless it
    says otherwise; any other needs `type:`."""
    scenarios = data.get("scenarios", {})
    if not isinstance(scenarios, dict):
        return data
    types = _workload_defaults()
    dump = TypeAdapter(ScenarioConfig).dump_python
    merged: dict[str, Any] = {name: dump(config) for name, config in _builtin_scenarios().items()}
    for name, given in scenarios.items():
        if not isinstance(given, dict):
            merged[name] = given
            continue
        type_ = given.get("type", name if name in types else None)
        problem = _scenario_problem(str(name), type_, types)
        if problem:
            raise ConfigError(f"{source}: {problem}")
        defaults = dump(types[type_]) if isinstance(type_, str) else {}
        merged[name] = {**defaults, **given, "type": type_}
    return {**data, "scenarios": merged}


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML config; `None` gives the built-in defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {where}{problem}") from None
    return parse_config(data, str(path))


def _describe(exc: ValidationError, source: str) -> str:
    """The first validation error as `source: key.path: what was expected, got what`."""
    error = exc.errors(include_url=False)[0]
    loc = ".".join(_key(part) for part in error["loc"])
    message = _MESSAGES.get(error["type"], lambda e: e["msg"])(error)
    if error["type"] == "value_error":
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
        if isinstance(error.get("input"), dict):
            # a whole-section check phrases its own message, naming its keys.
            return f"{source}: {loc + ': ' if loc else ''}{message}"
    shown = _show(error.get("input"))
    # no ", got X" where a check's own message already quotes the value (a URL check does)
    quoted = error["type"] == "value_error" and shown in message
    got = "" if error["type"] in _NO_GOT or quoted else f", got {shown}"
    return f"{source}: {loc}: {message}{got}"


def _key(part: object) -> str:
    """A key of the path as written, quoted when it is empty or holds a dot, a space or a
    control character (a key made of a line break would otherwise break the line)."""
    text = str(part)
    plain = text and text.isprintable() and " " not in text and "." not in text
    return text if plain else repr(text)


_MESSAGES = {
    "extra_forbidden": lambda e: "unknown key",
    "unexpected_keyword_argument": lambda e: "unknown key",
    "missing": lambda e: "required field is missing",
    "missing_argument": lambda e: "required field is missing",
    "greater_than_equal": lambda e: f"must be >= {e['ctx']['ge']}",
    "greater_than": lambda e: f"must be > {e['ctx']['gt']}",
    "less_than_equal": lambda e: f"must be <= {e['ctx']['le']}",
    "int_type": lambda e: "must be an integer",
    "float_type": lambda e: "must be a number",
    "bool_type": lambda e: "must be true or false",
    "string_type": lambda e: "must be a string",
    "dict_type": lambda e: "must be a mapping",
    "dataclass_type": lambda e: "must be a mapping",
    "literal_error": lambda e: f"must be one of {e['ctx']['expected']}",
}
_NO_GOT = {"extra_forbidden", "unexpected_keyword_argument", "missing", "missing_argument"}


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return orjson.dumps(value).decode()


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def redacted(config: Config) -> dict[str, Any]:
    """The config as plain data with every secret removed, for run.json."""
    data = TypeAdapter(Config).dump_python(config, mode="json")
    if data["target"].get("api_key"):
        data["target"]["api_key"] = "<redacted>"
    return data
