"""Synthetic load for a fleet's master: users that keep 64-token records at a set rate,
with no HTTP (bench/bench_locust.py --ceiling, the fleet back-pressure test).

`KV_BENCH_RATE_PER_USER`: records per second per user; `KV_BENCH_SINK_US`: CPU µs a
record sink on the master burns per record (no yield), to push the master past what it
can take.
"""

from __future__ import annotations

import os
import time
from typing import Any

import gevent
from locust import constant, events, task
from locust.env import Environment

from kvswarm.locust.binding import plugin_of
from kvswarm.locust.users import LLMUser
from kvswarm.records import RequestRecord

# Records per wake-up, so that timer granularity does not cap the rate.
BATCH = 20
INTERVAL_S = BATCH / float(os.environ["KV_BENCH_RATE_PER_USER"])
# A slow record sink on the master (CPU burnt per record, no yield): pushes the master
# past its ceiling on purpose.
SINK_S = float(os.environ.get("KV_BENCH_SINK_US", "0")) / 1e6


@events.init.add_listener
def _slow_sink(environment: Environment, **_kwargs: Any) -> None:
    plugin = plugin_of(environment)
    if SINK_S and plugin.is_master:

        def burn(record: RequestRecord, **_kwargs: Any) -> None:
            end = time.perf_counter() + SINK_S
            while time.perf_counter() < end:
                pass

        plugin.events.record_kept.add_listener(burn)


class SyntheticUser(LLMUser):
    scenario = "synthetic"
    wait_time = constant(0)

    @task
    def ship(self) -> None:
        due = time.monotonic() + INTERVAL_S
        for _ in range(BATCH):
            self.n = getattr(self, "n", 0) + 1
            self.kv.recorder.report(
                RequestRecord(
                    request_id=f"{self.kv.worker_id}-{self.user_id}-{self.n}",
                    worker_id=self.kv.worker_id,
                    user_id=self.user_id,
                    scenario="synthetic",
                    mode="non_disaggregated",
                    endpoint="chat",
                    streamed=True,
                    start_unix_s=time.time(),
                    ok=True,
                    output_tokens=64,
                    output_tokens_source="usage",
                    text_chunks=64,
                    ttft_s=0.05,
                    tpot_s=0.01,
                    e2e_s=0.68,
                    itl_s=(0.01,) * 63,
                )
            )
        gevent.sleep(max(0.0, due - time.monotonic()))
