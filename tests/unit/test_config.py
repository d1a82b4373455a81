"""Config loading: the shipped files, defaults, and one clear line for each kind of error."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kvswarm.config import Config, load_config, parse_config, redacted
from kvswarm.errors import ConfigError

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
    scenario = config.scenarios.long_context_high_reuse
    assert scenario.unique_tokens == 10
    assert scenario.reuse_ratio == 0.9 and scenario.shared_tokens_min == 16000
