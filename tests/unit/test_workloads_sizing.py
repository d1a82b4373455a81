"""Prompt sizes in tokens: targets met, context window respected, few /tokenize calls."""

from __future__ import annotations

import pytest

from kvswarm.errors import ConfigError
from kvswarm.tokens import ServerSizer, TextFitter
from kvswarm.workloads import SharedMaterial, builtin_scenarios, make_workload, text
from tests.unit.conftest import SCENARIOS, reply_to, small_config


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_prompt_lengths_are_within_2_percent_of_target(build_workload, bpe_sizer, scenario):
    workload = build_workload(scenario)
    for _ in range(60):
        request = workload.next_request()
        workload.observe_reply(request, reply_to(request))
        actual = bpe_sizer.count(str(request.prompt))
        assert actual == pytest.approx(request.prompt_tokens_target, rel=0.02)
        assert request.prompt_tokens_sized == pytest.approx(actual, rel=0.01, abs=2)
    summary = workload.stats.lengths.summary()
    assert summary.count == 60
    assert summary.within_2pct == 1.0


def test_pool_items_are_sized_within_the_configured_range(build_workload, bpe_sizer):
    config = small_config(
        "long_context_high_reuse", shared_tokens_min=1500, shared_tokens_max=1800, pool_size=6
    )
    workload = build_workload("long_context_high_reuse", config)
    workload.prepare()
    for index in range(6):
        item = workload.pool.item(index)
        assert 1500 <= item.target_tokens <= 1500 + 300
        assert bpe_sizer.count(item.text) == item.tokens
        assert item.tokens == pytest.approx(item.target_tokens, rel=0.005)


def test_default_32k_document_is_sized_exactly_enough(bpe_sizer):
    material = SharedMaterial(bpe_sizer)
    config = small_config(
        "long_context_high_reuse", shared_tokens_min=32000, shared_tokens_max=32000, pool_size=1
    )
    workload = make_workload(
        "long_context_high_reuse",
        config,
        seed=1,
        run_id="r",
        worker_id="w",
        user_id=0,
        sizer=bpe_sizer,
        max_model_len=32768,
        max_tokens=64,
        material=material,
    )
    item = workload.pool.item(0)
    assert abs(bpe_sizer.count(item.text) - 32000) <= 64


@pytest.mark.parametrize(
    ("scenario", "changes", "key"),
    [
        ("long_context_high_reuse", {"shared_tokens_max": 32700}, "shared_tokens_max"),
        ("code_generation", {"unique_tokens": 32700}, "unique_tokens"),
        ("cold_start", {"unique_tokens": 32750}, "unique_tokens"),
        ("multi_turn_conversation", {"max_history_tokens": 32750}, "max_history_tokens"),
    ],
)
def test_prompt_that_cannot_fit_is_a_config_error_naming_the_key(
    build_workload, scenario, changes, key
):
    config = small_config(scenario, **changes)
    with pytest.raises(ConfigError) as caught:
        build_workload(scenario, config, max_model_len=32768, max_tokens=64)
    message = str(caught.value)
    assert message.startswith(f"scenarios.{scenario}.{key}: ")
    assert "max_model_len 32768" in message
    assert "\n" not in message


def test_scenario_max_tokens_counts_against_the_context_window(build_workload):
    config = small_config("cold_start", unique_tokens=1000, max_tokens=1100)
    with pytest.raises(ConfigError, match="max_tokens 1100"):
        build_workload("cold_start", config, max_model_len=2048, max_tokens=16)
    fits = build_workload(
        "cold_start", small_config("cold_start", unique_tokens=1000), max_model_len=2048
    )
    assert fits.next_request().max_tokens == 64


def test_first_turn_longer_than_max_history_is_a_config_error(build_workload):
    config = small_config("multi_turn_conversation", max_history_tokens=150)
    with pytest.raises(ConfigError, match=r"^scenarios\.multi_turn_conversation\.max_history"):
        build_workload("multi_turn_conversation", config)


def test_cold_start_with_reuse_is_a_config_error(build_workload):
    with pytest.raises(ConfigError, match=r"^scenarios\.cold_start\.reuse_ratio: must be 0"):
        build_workload("cold_start", small_config("cold_start", reuse_ratio=0.5))


def test_shared_scenario_without_shared_tokens_is_a_config_error(build_workload):
    config = small_config("batch_processing", shared_tokens_min=0, shared_tokens_max=0)
    with pytest.raises(ConfigError, match=r"^scenarios\.batch_processing\.shared_tokens_max"):
        build_workload("batch_processing", config)


def test_unknown_workload_type_is_a_config_error_naming_the_scenario(build_workload):
    config = small_config("cold_start", type="chit_chat")
    with pytest.raises(ConfigError, match=r"^scenarios\.quiet\.type: unknown workload type"):
        build_workload("quiet", config)


def test_a_scenario_of_any_name_is_built_by_its_type(build_workload):
    config = small_config("code_generation", pool_size=2)
    workload = build_workload("code_small", config)
    assert workload.workload_type == "code_generation"
    request = workload.next_request()
    assert request.scenario == "code_small"
    assert workload.stats.summary().type == "code_generation"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_remote_sizer_costs_no_tokenize_call_per_request_once_calibrated(
    tokenize_server, bpe_sizer, scenario
):
    sizer = ServerSizer(tokenize_server.root + "/tokenize", "m")
    if scenario == "cold_start":
        config = small_config(scenario, unique_tokens=1000)
    else:  # default unique parts, shared prefixes and histories somewhat shorter
        default = builtin_scenarios()[scenario]
        config = small_config(
            scenario,
            unique_tokens=default.unique_tokens,
            shared_tokens_min=1000,
            shared_tokens_max=2000,
            max_history_tokens=4000,
        )
    workload = make_workload(
        scenario,
        config,
        seed=3,
        run_id="r",
        worker_id="w",
        user_id=1,
        sizer=sizer,
        max_model_len=32768,
        max_tokens=64,
        material=SharedMaterial(sizer),
    )
    workload.prepare()
    calls, errors = [], []
    for _ in range(200):
        request = workload.next_request()
        workload.observe_reply(request, reply_to(request, tokens_hint=60))
        calls.append(tokenize_server.calls)
        actual = bpe_sizer.count(str(request.prompt))
        errors.append((actual - request.prompt_tokens_target) / request.prompt_tokens_target)
    # the first texts of each kind are counted to learn its ratio (and, for cold start,
    # the sentence bank once, at prepare); after that, no call per request
    assert calls[-1] == calls[50]
    if scenario == "cold_start":
        assert calls[50] <= len(text.sentence_bank()) + 10
    else:
        assert calls[50] <= config.pool_size * TextFitter.MAX_COUNTS + 70
    # unique parts are estimated from a ratio: close on average, a few % per request
    assert sum(errors) / len(errors) == pytest.approx(0, abs=0.02)
    assert max(abs(e) for e in errors) < 0.06
