"""Client overhead: CPU time per streamed token and TTFT error against server ground truth.

Starts the tests' streaming server (TTFT 50 ms, TPOT 10 ms) pinned to one core, runs N
concurrent streams in this process pinned to the other, and reports, for each N:

- CPU µs per streamed token (this process's user+system time / tokens received),
- TTFT error (client TTFT - server's first-token write time + its receipt time), p50/p99,

first for the bare client, then with everything kvswarm does per request under Locust
(record, requests.csv, Locust request events for LLM/TTFT/TPOT/ITL).

    .venv/bin/python bench/bench_client.py --streams 1 20 50 100 --seconds 10
"""

from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvswarm.client import CompletionRequest, StreamingClient  # noqa: E402
from tests.support.processes import start_stream_server  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def make_reporter(results_dir: Path):
    """Everything kvswarm does with a finished request in a Locust process."""
    from locust.env import Environment

    from kvswarm.locust.plugin import KvswarmPlugin
    from kvswarm.records import build_record

    environment = Environment(user_classes=[])
    environment.create_local_runner()
    plugin = KvswarmPlugin.recording(environment, results_dir)

    def report(result, request_id: str) -> None:
        record = build_record(
            result,
            plugin.engine.request_timings(result),
            request_id=request_id,
            worker_id="bench",
            user_id=0,
            scenario="bench",
            mode="non_disaggregated",
            endpoint="chat",
        )
        plugin.recorder.report(record)

    def finish() -> None:
        plugin.recorder.drain()
        plugin.run.finish()

    return report, finish


def run_streams(url: str, streams: int, seconds: float, tokens: int, with_locust: bool):
    results: list[tuple[str, float]] = []
    token_count = 0
    reporter, finish = (None, None)
    if with_locust:
        reporter, finish = make_reporter(Path(tempfile.mkdtemp(prefix="kvswarm-bench-")))

    def user(index: int) -> None:
        nonlocal token_count
        client = StreamingClient(url)
        sequence = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sequence += 1
            request_id = f"b{streams}-{with_locust:d}-{index}-{sequence}"
            result = client.complete(
                CompletionRequest(
                    endpoint="chat",
                    model="m",
                    max_tokens=tokens,
                    messages=[{"role": "user", "content": "hello"}],
                    request_id=request_id,
                )
            )
            if not result.ok:
                raise RuntimeError(result.error)
            token_count += result.text_chunks
            results.append((request_id, result.ttft_s))
            if reporter is not None:
                reporter(result, request_id)
        client.close()

    # Stagger the starts over one TPOT so streams do not all tick in the same instant.
    cpu_before = cpu_seconds()
    greenlets = [gevent.spawn_later(0.01 * i / streams, user, i) for i in range(streams)]
    gevent.joinall(greenlets, raise_error=True)
    cpu = cpu_seconds() - cpu_before
    if finish is not None:
        finish()
    return results, token_count, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 20, 50, 100])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kvswarm-bench-"))
    server = start_stream_server(workdir, ttft_ms=50, tpot_ms=10)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        os.sched_setaffinity(server.process.pid, {cores[0]})
        os.sched_setaffinity(0, {cores[1]})
    print(
        f"client on core(s) {sorted(os.sched_getaffinity(0))}, server on another; "
        f"{args.tokens} tokens/request, TTFT 50 ms, TPOT 10 ms, {args.seconds:.0f} s each"
    )
    print(
        f"{'variant':<16} {'streams':>7} {'requests':>8} {'tokens':>7} {'µs CPU/token':>12} "
        f"{'TTFT err p50 ms':>15} {'p99 ms':>7}"
    )
    try:
        for with_locust in (False, True):
            for streams in args.streams:
                results, tokens, cpu = run_streams(
                    server.url, streams, args.seconds, args.tokens, with_locust
                )
                server.wait_idle()
                truth = {entry["request_id"]: entry for entry in server.log()}
                errors = [
                    (ttft - (truth[rid]["first_write"] - truth[rid]["received"])) * 1000.0
                    for rid, ttft in results
                ]
                variant = "client+locust" if with_locust else "client"
                print(
                    f"{variant:<16} {streams:>7} {len(results):>8} {tokens:>7} "
                    f"{cpu / tokens * 1e6:>12.1f} {statistics.median(errors):>15.3f} "
                    f"{percentile(errors, 0.99):>7.3f}",
                    flush=True,
                )
    finally:
        server.stop()
    json.dumps({})


if __name__ == "__main__":
    main()
