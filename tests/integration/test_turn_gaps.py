"""`turn_gap_s`: each user's turns on a schedule of its own (AIPerf's user-centric rate),
for cache-lifetime tests: a user comes back a set time after its previous turn was due,
however long that turn took, and a late turn says how late."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from tests.support.processes import run_scenario, start_stream_server

GAP_S = 0.6
CONFIG = f"""\
generation: {{max_tokens: 4}}
scenarios:
  multi_turn_conversation: {{turn_gap_s: {GAP_S}, shared_tokens_min: 50, shared_tokens_max: 80,
                             unique_tokens: 16}}
"""


@pytest.fixture(scope="module")
def turns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, str]]]:
    directory = tmp_path_factory.mktemp("turn-gaps")
    server = start_stream_server(directory, ttft_ms=20, tpot_ms=5, tokens=4)
    try:
        rows, _ = run_scenario(server.url, CONFIG, directory, "multi_turn_conversation", 3, 4)
    finally:
        server.stop()
    by_user: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        if row["failure"] != "cancelled":
            by_user[row["user_id"]].append(row)
    return {
        user: sorted(r, key=lambda r: float(r["scheduled_unix_s"])) for user, r in by_user.items()
    }


def test_each_users_turns_are_due_a_gap_apart(turns) -> None:
    assert len(turns) == 3
    for rows in turns.values():
        due = [float(row["scheduled_unix_s"]) for row in rows]
        assert len(due) >= 4
        gaps = [b - a for a, b in zip(due, due[1:], strict=False)]
        assert gaps == pytest.approx([GAP_S] * len(gaps), abs=1e-3)


def test_a_turn_goes_at_its_time_and_its_lag_is_recorded(turns) -> None:
    lags = []
    for rows in turns.values():
        for row in rows:
            lag_s = float(row["start_unix_s"]) - float(row["scheduled_unix_s"])
            assert lag_s == pytest.approx(float(row["send_lag_ms"]) / 1000, abs=0.005)
            lags.append(lag_s)
    # Turns of ~40 ms do not run into the next: a median, not a bound on every request.
    assert np.median(lags) < GAP_S


def test_users_start_spread_over_the_first_gap(turns) -> None:
    # Each first turn is drawn in its user's first gap: no two users' coincide.
    firsts = sorted(float(rows[0]["scheduled_unix_s"]) for rows in turns.values())
    assert len(set(firsts)) == 3
