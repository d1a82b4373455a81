"""Config loading: the shipped files, defaults, and one clear line for each kind of error."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kvswarm.config import Config, ScenarioConfig, load_config, parse_config, redacted
from kvswarm.errors import ConfigError
from kvswarm.workloads import workload_types

REPO = Path(__file__).resolve().parents[2]


def error_for(data: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "configs/x.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_shipped_small_model_config_equals_the_built_in_defaults() -> None:
    loaded = load_config(REPO / "configs" / "test_config.yaml")
    assert replace(loaded, machines={}) == Config()


def test_shipped_large_model_config_selects_its_active_model() -> None:
    loaded = load_config(REPO / "configs" / "test_config_large_models.yaml")
    assert loaded.active_model == "qwen_72b"
    assert loaded.model_name == "Qwen/Qwen2.5-72B-Instruct"
    assert loaded.models["qwen_72b"].tensor_parallel_size == 8
    assert loaded.max_tokens == 128


def test_out_of_range_ratio_names_file_key_path_and_value() -> None:
    message = error_for({"scenarios": {"code_generation": {"reuse_ratio": 1.5}}})
    assert message == (
        "configs/x.yaml: scenarios.code_generation.reuse_ratio: must be between 0 and 1, got 1.5"
    )


def test_wrong_type_is_an_error() -> None:
    assert error_for({"generation": {"max_tokens": "64"}}) == (
        "configs/x.yaml: generation.max_tokens: must be an integer, got '64'"
    )


def test_unknown_key_is_an_error() -> None:
    assert error_for({"target": {"modle": "x"}}) == "configs/x.yaml: target.modle: unknown key"


def test_missing_required_field_is_an_error() -> None:
    message = error_for({"models": {"big": {"tensor_parallel_size": 2}}})
    assert message == "configs/x.yaml: models.big.name: required field is missing"


def test_negative_length_is_an_error() -> None:
    message = error_for({"scenarios": {"cold_start": {"unique_tokens": -5}}})
    assert message == "configs/x.yaml: scenarios.cold_start.unique_tokens: must be > 0, got -5"


def test_undefined_active_model_is_an_error() -> None:
    message = error_for({"active_model": "llama_405b", "models": {"qwen_72b": {"name": "q"}}})
    assert message == (
        "configs/x.yaml: active_model: 'llama_405b' is not defined in models (defined: qwen_72b)"
    )


def test_unknown_choice_lists_the_valid_ones() -> None:
    message = error_for({"target": {"endpoint": "embeddings"}})
    assert message == (
        "configs/x.yaml: target.endpoint: must be one of 'chat' or 'completions', got 'embeddings'"
    )


def test_inverted_range_is_an_error() -> None:
    message = error_for(
        {"scenarios": {"batch_processing": {"shared_tokens_min": 10, "shared_tokens_max": 5}}}
    )
    assert message == (
        "configs/x.yaml: scenarios.batch_processing: shared_tokens_max (5) must be >= "
        "shared_tokens_min (10)"
    )


def test_top_level_must_be_a_mapping() -> None:
    assert error_for(["a"]) == "configs/x.yaml: expected a mapping at the top level, got a list"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("target:\n  model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+: "):
        load_config(path)


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_mode_url_falls_back_to_target_base_url() -> None:
    config = parse_config(
        {"target": {"base_url": "http://a:1/v1"}, "deployment_modes": {"pd_disaggregated": {}}}
    )
    assert config.base_url_for("pd_disaggregated") == "http://a:1/v1"
    assert config.base_url_for("non_disaggregated") == "http://localhost:8000/v1"


def test_redacted_config_hides_the_api_key() -> None:
    config = parse_config({"target": {"api_key": "sk-very-secret"}})
    assert "sk-very-secret" not in str(redacted(config))


def test_keys_left_out_of_a_scenario_take_that_scenarios_defaults() -> None:
    config = parse_config({"scenarios": {"long_context_high_reuse": {"unique_tokens": 10}}})
    scenario = config.scenarios["long_context_high_reuse"]
    assert scenario.unique_tokens == 10
    assert scenario.reuse_ratio == 0.9 and scenario.shared_tokens_min == 16000
    assert scenario.type == "long_context_high_reuse"


def test_every_built_in_scenario_is_present_by_default() -> None:
    config = parse_config({"scenarios": {"cold_start": {"enabled": False}}})
    builtin = [name for name, registered in workload_types().items() if registered.builtin]
    assert list(config.scenarios) == builtin
    assert list(Config().scenarios) == builtin
    assert all(name == s.type for name, s in config.scenarios.items())
    assert not config.scenarios["cold_start"].enabled


def test_a_new_scenario_takes_the_defaults_of_its_type() -> None:
    config = parse_config(
        {
            "scenarios": {
                "long_context_small": {
                    "type": "long_context_high_reuse",
                    "shared_tokens_min": 2000,
                    "shared_tokens_max": 3000,
                }
            }
        }
    )
    small = config.scenarios["long_context_small"]
    assert small.type == "long_context_high_reuse"
    assert (small.shared_tokens_min, small.shared_tokens_max) == (2000, 3000)
    assert small.reuse_ratio == 0.9 and small.pool_size == 4
    # after the built-in ones, which keep their own defaults
    assert list(config.scenarios)[-1] == "long_context_small"
    assert config.scenarios["long_context_high_reuse"].shared_tokens_min == 16000


def test_a_new_scenario_without_a_type_is_an_error() -> None:
    message = error_for({"scenarios": {"chit_chat": {"reuse_ratio": 0.5}}})
    assert message.startswith(
        "configs/x.yaml: scenarios.chit_chat.type: required for a scenario not named after "
        "a workload type (types: long_context_high_reuse, code_generation, "
    )


def test_an_unknown_type_is_an_error_listing_the_types() -> None:
    message = error_for({"scenarios": {"chit_chat": {"type": "chat"}}})
    types = ", ".join(workload_types())
    assert message == (
        f"configs/x.yaml: scenarios.chit_chat.type: unknown workload type 'chat' (types: {types})"
    )


def test_a_type_that_is_not_a_string_is_an_error() -> None:
    message = error_for({"scenarios": {"chit_chat": {"type": 3}}})
    assert message == "configs/x.yaml: scenarios.chit_chat.type: must be a string, got 3"


@pytest.mark.parametrize("name", ["Chat", "chit-chat", "2nd", "_hidden"])
def test_a_scenario_name_must_be_an_identifier(name: str) -> None:
    message = error_for({"scenarios": {name: {"type": "cold_start"}}})
    assert message.startswith(f"configs/x.yaml: scenarios.{name}: a scenario name must be ")


def test_a_scenario_of_an_unknown_type_made_in_python_is_refused() -> None:
    with pytest.raises(ValueError, match=r"scenarios\.x\.type: unknown workload type 'nope'"):
        Config(scenarios={"x": ScenarioConfig(type="nope")})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"target": {"base_url": "http//x"}}, "target.base_url"),
        (
            {"deployment_modes": {"pd_disaggregated": {"base_url": "localhost:9000"}}},
            "deployment_modes.pd_disaggregated.base_url",
        ),
        (
            {"metrics_endpoints": {"prefiller": "http://:8100/metrics"}},
            "metrics_endpoints.prefiller",
        ),
        ({"tokenizer": {"tokenize_url": "http://h:99999/tokenize"}}, "tokenizer.tokenize_url"),
    ],
)
def test_a_malformed_url_is_an_error_naming_its_key(data: dict, key: str) -> None:
    message = error_for(data)
    assert message.startswith(f"configs/x.yaml: {key}: '")
    assert message.count("'") == 2  # the URL quoted once, not repeated as "got"


def test_urls_are_kept_as_given_when_well_formed() -> None:
    config = parse_config({"metrics_endpoints": {"decoder": "https://d.example:8200/metrics"}})
    assert config.metrics_endpoints["decoder"] == "https://d.example:8200/metrics"


def test_targets_in_the_config_reach_the_comparison() -> None:
    from kvswarm.analysis.targets import targets_from
    from kvswarm.config import parse_config, redacted

    config = parse_config({"targets": {"pd_throughput_gain": {"low": 1.0}}}, "x.yaml")
    targets = targets_from(redacted(config))
    assert targets.pd_throughput_gain.low == 1.0
    assert targets.cache_ttft_reduction.low == 0.60  # the original suite's default


def test_an_unknown_target_is_one_line_naming_it() -> None:
    import pytest

    from kvswarm.config import parse_config
    from kvswarm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"x.yaml: targets.pd_speedup: unknown key"):
        parse_config({"targets": {"pd_speedup": {"low": 1.0}}}, "x.yaml")
