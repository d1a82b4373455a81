"""Target outages read from requests.csv rows: stretches of `connect` failures."""

from __future__ import annotations

import pandas as pd

from kvswarm.analysis.outages import Outage, describe_outage, target_outages

T0 = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC


def rows(*cells: tuple[float, str]) -> pd.DataFrame:
    """(seconds after T0, failure) per request, in any order."""
    return pd.DataFrame(
        {"start_unix_s": [T0 + t for t, _ in cells], "failure": [f for _, f in cells]}
    )


def test_a_run_without_connect_failures_has_no_outage() -> None:
    assert target_outages(rows((0, ""), (1, "http_503"), (2, "disconnect"))) == []


def test_an_outage_lasts_until_the_first_request_that_connects_again() -> None:
    found = target_outages(
        rows((0, ""), (1.5, "connect"), (2, "connect"), (3, "connect"), (41.5, "http_503"))
    )
    assert found == [Outage(T0 + 1.5, 40.0, 3, until_end=False)]


def test_rows_are_taken_in_order_of_their_start() -> None:
    found = target_outages(rows((5, ""), (2, "connect"), (0, ""), (3, "connect")))
    assert found == [Outage(T0 + 2, 3.0, 2, until_end=False)]


def test_two_outages_are_told_apart_and_one_may_last_until_the_end() -> None:
    found = target_outages(rows((0, "connect"), (1, ""), (10, "connect"), (12, "connect")))
    assert found == [Outage(T0, 1.0, 1, until_end=False), Outage(T0 + 10, 2.0, 2, until_end=True)]


def test_an_outage_is_described_in_one_line_with_its_clock_time() -> None:
    line = describe_outage(Outage(T0 + 3 * 3600 + 4, 40.0, 1234, until_end=False))
    assert line == (
        "the target refused connections from 19:00:04 UTC for 40.0 s "
        "(1,234 requests failed `connect`)"
    )
