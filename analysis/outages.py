"""When the target refused connections during a run, from requests.csv alone.

An outage is a stretch of requests (in order of their start) that could not connect:
it starts with the first of them and ends with the first later request that reached the
server, whatever its outcome; one the run ended in is open (`until_end`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

__all__ = ["Outage", "describe_outage", "target_outages"]

CONNECT = "connect"


@dataclass(frozen=True)
class Outage:
    """One stretch during which every request failed to connect."""

    start_unix_s: float
    # Until the first request that connected again; to the last failed one if none did.
    duration_s: float
    failed_requests: int
    until_end: bool


def target_outages(requests: pd.DataFrame) -> list[Outage]:
    """Every stretch of `connect` failures, in order."""
    if requests.empty:
        return []
    rows = requests.sort_values("start_unix_s", kind="stable")
    refused = (rows["failure"].astype(str) == CONNECT).to_numpy()
    starts = rows["start_unix_s"].to_numpy(dtype=float)
    # Stretch number of each row: it changes wherever refused flips.
    stretch = pd.Series(refused).ne(pd.Series(refused).shift()).cumsum().to_numpy()
    outages = []
    for number in pd.unique(stretch[refused]):
        positions = (stretch == number).nonzero()[0]
        first, last = positions[0], positions[-1]
        until_end = last + 1 >= len(starts)
        end = starts[last] if until_end else starts[last + 1]
        outages.append(
            Outage(
                start_unix_s=float(starts[first]),
                duration_s=float(end - starts[first]),
                failed_requests=len(positions),
                until_end=bool(until_end),
            )
        )
    return outages


def describe_outage(outage: Outage) -> str:
    """`the target refused connections from 12:03:04 for 40.0 s (1,234 requests)`."""
    clock = datetime.fromtimestamp(outage.start_unix_s, tz=UTC).strftime("%H:%M:%S UTC")
    span = f"for {outage.duration_s:.1f} s" + (" until the run ended" if outage.until_end else "")
    plural = "s" if outage.failed_requests != 1 else ""
    return (
        f"the target refused connections from {clock} {span} "
        f"({outage.failed_requests:,} request{plural} failed `connect`)"
    )
