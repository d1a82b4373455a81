"""The text generators: deterministic, varied, and each looking like its kind."""

from __future__ import annotations

import collections
import itertools
import os
import re
import subprocess
import sys

import pytest

from kvswarm.workloads import text

GENERATORS = [
    text.prose,
    text.document,
    text.code,
    text.instructions,
    text.opener,
    text.question,
    text.coding_request,
    text.batch_input,
    text.user_turn,
    text.report_request,
]


def _take(generator, seed, pieces: int = 400) -> str:
    return "".join(itertools.islice(generator(text.seeded(seed, generator.__name__)), pieces))


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.__name__)
def test_same_seed_same_stream_other_seed_other_stream(generator):
    assert _take(generator, 1) == _take(generator, 1)
    assert _take(generator, 1) != _take(generator, 2)


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.__name__)
def test_text_has_a_varied_vocabulary(generator):
    words = re.findall(r"[A-Za-z]+", _take(generator, 5, pieces=600))
    counts = collections.Counter(w.lower() for w in words)
    assert len(words) > 1500
    assert len(counts) > 250
    # no word dominates (English "the" is about 6% of running text)
    assert counts.most_common(1)[0][1] / len(words) < 0.12


def test_each_kind_looks_like_its_kind():
    assert _take(text.document, 3).startswith("Read the following document")
    code = _take(text.code, 3)
    assert "\ndef " in code and "\nclass " in code and "    return " in code
    instructions = _take(text.instructions, 3)
    assert "## Guidelines" in instructions and "Input: " in instructions
    assert _take(text.opener, 3).startswith("You are ")
    assert _take(text.report_request, 3).startswith("Summarise the following report")


def test_seeding_does_not_depend_on_the_process():
    # A digest, not hash(): the same in every process, whatever PYTHONHASHSEED says.
    assert text.seeded(0, "x").getrandbits(32) == 1294091585


UNIQUE_GENERATORS = [
    text.report_request,
    text.question,
    text.coding_request,
    text.batch_input,
    text.user_turn,
]


@pytest.mark.parametrize("generator", UNIQUE_GENERATORS, ids=lambda g: g.__name__)
def test_request_unique_text_draws_its_sentences_from_the_bank(generator, monkeypatch):
    text.sentence_bank()  # built once per process, before any request
    generated = []
    monkeypatch.setattr(text, "_sentence", lambda w: generated.append(w) or "x.")
    unique = _take(generator, 7, pieces=300)
    assert generated == []
    bank = set(text.sentence_bank())
    assert sum(sentence in bank for sentence in _sentences(unique)) > 100


def test_shared_text_and_the_tiny_models_corpus_are_generated_sentence_by_sentence():
    bank = set(text.sentence_bank())
    for generator in (text.prose, text.document):
        assert not bank & set(_sentences(_take(generator, 7, pieces=300)))
    fresh = "".join(itertools.islice(text.user_turn(text.seeded(7), banked=False), 300))
    assert not bank & set(_sentences(fresh))


def test_the_bank_is_the_same_in_every_process():
    bank = text.sentence_bank()
    assert len(bank) == len(set(bank)) == 1024
    script = "from kvswarm.workloads import text; print(repr(text.sentence_bank()))"
    other = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == repr(bank)


def test_cold_start_prompts_never_repeat_a_run_of_eight_sentences():
    # Eight sentences are ~200 tokens: no chunk-matching cache (llama.cpp's --cache-reuse,
    # LMCache's blending) finds a chunk of one unique prompt in another.
    seen: set[tuple[str, ...]] = set()
    runs = 0
    for seed in range(60):
        sentences = _sentences(_take(text.report_request, seed, pieces=200))
        for start in range(len(sentences) - 8):
            seen.add(tuple(sentences[start : start + 8]))
            runs += 1
    assert runs > 6000
    assert len(seen) == runs


def _sentences(stream: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.?\"])\s+", stream) if s]
