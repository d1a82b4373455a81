"""The text generators: deterministic, varied, and each looking like its kind."""

from __future__ import annotations

import collections
import itertools
import re

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
