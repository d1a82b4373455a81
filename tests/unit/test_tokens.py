"""Token sizing: the three sizers, choosing one, fitting text to a length, length stats."""

from __future__ import annotations

import itertools
import json
import socket
from pathlib import Path

import pytest

from kvswarm.config import TokenizerConfig
from kvswarm.engines import LLAMACPP_TOKENIZE, VLLM_TOKENIZE
from kvswarm.errors import ConfigError
from kvswarm.tokens import (
    HFSizer,
    LengthStats,
    RatioSizer,
    ServerSizer,
    TextFitter,
    TokenizeError,
    TokenizeShape,
    calibration_probes,
    choose_sizer,
    find_tokenizer_file,
    tokenize_url,
)
from kvswarm.workloads import text

SAMPLE = "The quarterly ledger rose from 12 to 14.5 units.\n\ndef load_cache(x: int) -> int:"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- fitting -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generator", "target"),
    [
        (text.document, 6000),
        (text.code, 3000),
        (text.instructions, 2500),
        (text.opener, 1200),
        (text.question, 64),
        (text.user_turn, 17),
    ],
)
def test_fit_lands_within_tolerance_of_target(bpe_sizer, generator, target):
    fitter = TextFitter(bpe_sizer)
    fitted = fitter.fit(generator(text.seeded(3, target)), target, generator.__name__)
    assert bpe_sizer.count(fitted.text) == fitted.tokens
    assert abs(fitted.tokens - target) <= fitter.tolerance(target)


def test_fit_cuts_are_prefixes_of_the_same_stream(bpe_sizer):
    fitter = TextFitter(bpe_sizer)
    short = fitter.fit(text.document(text.seeded(8)), 300, "document")
    long = fitter.fit(text.document(text.seeded(8)), 900, "document")
    assert long.text.startswith(short.text)
    assert not short.text[-1].isspace()


def test_fit_with_remote_sizer_stops_counting_once_calibrated(tokenize_server):
    fitter = TextFitter(ServerSizer(tokenize_server.root + "/tokenize", "m"))
    calls = []
    for i in range(50):
        fitter.fit(text.question(text.seeded(i)), 64, "question")
        calls.append(tokenize_server.calls)
    assert calls[TextFitter.CALIBRATION_TEXTS - 1] == calls[-1]


def test_fit_with_remote_sizer_verifies_with_one_count(tokenize_server, bpe_sizer):
    fitter = TextFitter(ServerSizer(tokenize_server.root + "/tokenize", "m"))
    for i in range(TextFitter.CALIBRATION_TEXTS):
        fitter.fit(text.report_request(text.seeded(i)), 1000, "report")
    before = tokenize_server.calls
    for i in range(10):
        fitted = fitter.fit(text.report_request(text.seeded("v", i)), 1000, "report", verify=True)
        assert bpe_sizer.count(fitted.text) == pytest.approx(1000, rel=0.01)
    assert tokenize_server.calls - before == 10


def test_fit_exact_counts_with_remote_sizer_too(tokenize_server, bpe_sizer):
    sizer = ServerSizer(tokenize_server.root + "/tokenize", "m")
    fitted = TextFitter(sizer).fit(text.document(text.seeded(1)), 2000, "document", exact=True)
    assert abs(bpe_sizer.count(fitted.text) - 2000) <= 4
    assert tokenize_server.calls <= TextFitter.MAX_COUNTS


def test_fit_of_zero_tokens_is_empty(bpe_sizer):
    assert TextFitter(bpe_sizer).fit(text.prose(text.seeded(1)), 0, "prose").text == ""


# --- the server's /tokenize ----------------------------------------------------------------


def test_server_sizer_counts_with_vllm_shape(tokenize_server, bpe_sizer):
    sizer = ServerSizer(tokenize_server.root + "/tokenize", "my-model", VLLM_TOKENIZE)
    assert sizer.count(SAMPLE) == bpe_sizer.count(SAMPLE)
    body = tokenize_server.bodies[0]
    assert body == {"prompt": SAMPLE, "model": "my-model", "add_special_tokens": False}


def test_server_sizer_without_a_shape_sends_the_generic_one(tokenize_server, bpe_sizer):
    sizer = ServerSizer(tokenize_server.root + "/tokenize", "my-model")
    assert sizer.count(SAMPLE) == bpe_sizer.count(SAMPLE)
    assert tokenize_server.bodies[0] == {"prompt": SAMPLE, "model": "my-model"}


def test_server_sizer_counts_with_llamacpp_shape(tokenize_server, bpe_sizer):
    sizer = ServerSizer(tokenize_server.root + "/llama/tokenize", shape=LLAMACPP_TOKENIZE)
    assert sizer.count(SAMPLE) == bpe_sizer.count(SAMPLE)
    assert tokenize_server.bodies[0] == {"content": SAMPLE, "add_special": False}


def test_server_sizer_http_error_is_tokenize_error(tokenize_server):
    sizer = ServerSizer(tokenize_server.root + "/nowhere")
    with pytest.raises(TokenizeError, match="HTTP 404"):
        sizer.count("hello")


def test_server_sizer_connection_refused_is_tokenize_error():
    sizer = ServerSizer(f"http://127.0.0.1:{_free_port()}/tokenize", timeout_s=2)
    with pytest.raises(TokenizeError, match="POST http://127.0.0.1"):
        sizer.count("hello")


def test_tokenize_shape_reads_tokens_list_without_count():
    shape = TokenizeShape("x", "/t", "text", None)
    assert shape.read_count({"tokens": [1, 2, 3]}) == 3
    with pytest.raises(ValueError):
        shape.read_count({"nothing": 1})


@pytest.mark.parametrize(
    "base", ["http://h:8000/v1", "http://h:8000/v1/", "http://h:8000", "http://h:8000/"]
)
def test_tokenize_url_is_at_the_server_root(base):
    assert tokenize_url(base, VLLM_TOKENIZE) == "http://h:8000/tokenize"


# --- a local Hugging Face tokenizer --------------------------------------------------------


def test_hf_sizer_loads_a_tokenizer_json(tokenizer_file, bpe_sizer):
    assert HFSizer.load(tokenizer_file).count(SAMPLE) == bpe_sizer.count(SAMPLE)


def test_hf_sizer_loads_a_directory(tokenizer_file, bpe_sizer):
    assert HFSizer.load(tokenizer_file.parent).count(SAMPLE) == bpe_sizer.count(SAMPLE)


def test_hf_repo_id_is_found_in_the_local_cache_only(tokenizer_file, tmp_path, monkeypatch):
    repo = tmp_path / "models--acme--tiny-llm"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "tokenizer.json").write_bytes(tokenizer_file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert find_tokenizer_file("acme/tiny-llm") == snapshot / "tokenizer.json"
    with pytest.raises(FileNotFoundError, match="models--acme--other"):
        find_tokenizer_file("acme/other")


# --- a calibrated ratio --------------------------------------------------------------------


def test_ratio_calibration_separates_the_template_overhead():
    observations = [("x" * 400, 100 + 12), ("x" * 2000, 500 + 12)]
    sizer = RatioSizer.calibrated(observations)
    assert sizer.chars_per_token == pytest.approx(4.0)
    assert sizer.overhead_tokens == pytest.approx(12.0)
    assert sizer.count("y" * 40) == 10


def test_ratio_calibration_from_one_observation_is_the_plain_ratio():
    assert RatioSizer.calibrated([("x" * 350, 100)]).chars_per_token == pytest.approx(3.5)


def test_calibration_probes_are_deterministic_and_of_two_lengths():
    short, long = calibration_probes()
    assert (short, long) == calibration_probes()
    assert len(long) > 4 * len(short)


# --- choosing a sizer ----------------------------------------------------------------------


def test_auto_prefers_the_server(tokenize_server, tokenizer_file):
    config = TokenizerConfig(hf_name=str(tokenizer_file))
    choice = choose_sizer(config, base_url=tokenize_server.root + "/v1", model="m")
    assert choice.method == "server"
    assert isinstance(choice.sizer, ServerSizer)
    assert json.dumps(choice.as_dict())


def test_auto_falls_back_to_hf_when_the_server_has_no_tokenize(tokenizer_file):
    config = TokenizerConfig(hf_name=str(tokenizer_file))
    choice = choose_sizer(config, base_url=f"http://127.0.0.1:{_free_port()}/v1", timeout_s=2)
    assert choice.method == "hf"
    assert choice.skipped[0].startswith("server: POST http://127.0.0.1")


def test_auto_falls_back_to_a_calibrated_ratio(bpe_sizer):
    config = TokenizerConfig(hf_name="/nonexistent/tokenizer.json")
    choice = choose_sizer(config, observe=lambda prompt: bpe_sizer.count(prompt) + 9)
    assert choice.method == "ratio"
    assert "calibrated" in choice.detail
    assert [reason.split(":")[0] for reason in choice.skipped] == ["server", "hf"]
    assert choice.sizer.overhead_tokens == pytest.approx(9, abs=2)
    probe = calibration_probes()[0]
    assert choice.sizer.count(probe) == pytest.approx(bpe_sizer.count(probe), rel=0.02)


def test_ratio_without_observations_uses_the_configured_ratio():
    choice = choose_sizer(TokenizerConfig(method="ratio", chars_per_token=3.0))
    assert choice.sizer.count("x" * 300) == 100


def test_explicit_hf_without_a_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^tokenizer\.hf_name: required"):
        choose_sizer(TokenizerConfig(method="hf"))


def test_explicit_hf_that_does_not_load_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"^tokenizer\.hf_name: cannot load"):
        choose_sizer(TokenizerConfig(method="hf", hf_name=str(tmp_path)))


def test_explicit_server_that_fails_is_a_tokenize_error():
    config = TokenizerConfig(method="server")
    with pytest.raises(TokenizeError):
        choose_sizer(config, base_url=f"http://127.0.0.1:{_free_port()}", timeout_s=2)


def test_tokenize_url_from_config_wins(tokenize_server):
    config = TokenizerConfig(method="server", tokenize_url=tokenize_server.root + "/tokenize")
    choice = choose_sizer(config, base_url="http://127.0.0.1:1/v1")
    assert choice.sizer.url == tokenize_server.root + "/tokenize"


# --- length stats --------------------------------------------------------------------------


def test_length_stats_summarise_error_against_target():
    stats = LengthStats()
    for target, achieved in [(100, 102), (100, 98), (200, 200), (50, 60)]:
        stats.add(target, achieved)
    summary = stats.summary()
    assert summary.count == 4
    assert summary.target_mean == 112.5
    assert summary.error_mean_pct == pytest.approx(5.0)
    assert summary.error_min_pct == pytest.approx(-2.0)
    assert summary.error_max_pct == pytest.approx(20.0)
    assert summary.within_2pct == 0.75
    # errors +2, -2, 0, +20: deviations from the mean -3, -7, -5, +15
    assert summary.error_std_pct == pytest.approx((308 / 4) ** 0.5)


def test_length_stats_merge_across_workers_through_plain_state():
    a, b, whole = LengthStats(), LengthStats(), LengthStats()
    for i, (target, achieved) in enumerate(zip(range(100, 140), itertools.cycle([-1, 0, 2]))):
        (a if i % 2 else b).add(target, target + achieved)
        whole.add(target, target + achieved)
    merged = LengthStats.from_state(json.loads(json.dumps(a.as_state())))
    merged.merge(LengthStats.from_state(b.as_state()))
    assert merged.summary().as_dict() == pytest.approx(whole.summary().as_dict())


def test_empty_length_stats_state_is_json():
    state = LengthStats().as_state()
    assert json.loads(json.dumps(state))["error_min"] is None
    assert LengthStats.from_state(state).summary().count == 0
