"""Workload generation speed and memory: how much CPU a Locust worker spends making prompts.

Run: .venv/bin/python bench/bench_workloads.py [--quick]

Measures, with the offline test tokenizer (tests/support/tokenizer.py) standing in for the
served model's:
- a 32k-token document: the text stream alone, and cut to size with a local tokenizer,
  with a ratio, and through a /tokenize endpoint (the tokenizer behind a fake remote
  sizer: the HTTP round trips themselves are not included);
- peak Python memory while sizing that document (tracemalloc);
- each scenario at its default config: pool preparation, and time per `next_request()`
  with a local tokenizer and with a remote (server) sizer; and with the remote sizer,
  the request's bytes too (`StreamingClient`'s JSON body and head: what a user makes per
  request before sending).

`--only SCENARIO` measures that scenario alone, with nothing else done in the process
before it. `--keep-freed-memory` first calls `kvswarm.heap.keep_freed_memory()`, as kvswarm's Locust
processes do (glibc's heap kept for the next request); compare a run with and without it.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.support

from kvswarm.client import CompletionRequest, StreamingClient  # noqa: E402
from kvswarm.heap import keep_freed_memory  # noqa: E402
from kvswarm.tokens import HFSizer, RatioSizer, TextFitter  # noqa: E402
from kvswarm.workloads import SharedMaterial, builtin_scenarios, make_workload, text  # noqa: E402
from tests.support.tokenizer import train_tokenizer  # noqa: E402


class RemoteLike:
    """A sizer that says it is remote (as the server's /tokenize is), counting locally."""

    method = "server"
    local = False

    def __init__(self, sizer: HFSizer) -> None:
        self.sizer = sizer
        self.calls = 0

    def count(self, text_: str) -> int:
        self.calls += 1
        return self.sizer.count(text_)


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_document(sizer: HFSizer, repeat: int) -> None:
    seeds = itertools.count()
    target = 32000
    chars = len(TextFitter(sizer).fit(text.document(text.seeded("d")), target, "document").text)

    def stream_only() -> str:
        rng = text.seeded("bench", next(seeds))
        parts, have = [], 0
        for piece in text.document(rng):
            parts.append(piece)
            have += len(piece)
            if have >= chars:
                break
        return "".join(parts)

    def fitted(make_sizer: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            fitter = TextFitter(make_sizer())  # a new process: nothing learnt yet
            return fitter.fit(text.document(text.seeded("bench", next(seeds))), target, "doc")

        return run

    print(f"## 32k-token document ({chars} characters), median of {repeat}")
    print(f"text stream only:                  {_median_ms(stream_only, repeat):7.1f} ms")
    hf_ms = _median_ms(fitted(lambda: sizer), repeat)
    print(f"cut to size, local tokenizer:      {hf_ms:7.1f} ms")
    ratio_ms = _median_ms(fitted(lambda: RatioSizer(4.0)), repeat)
    print(f"cut to size, ratio:                {ratio_ms:7.1f} ms")
    remote = RemoteLike(sizer)
    remote_ms = _median_ms(fitted(lambda: remote), repeat)
    calls = remote.calls / repeat
    print(f"cut to size, /tokenize (exact):    {remote_ms:7.1f} ms, {calls:.1f} calls")
    tracemalloc.start()
    fitted(lambda: sizer)()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"peak Python memory while sizing:   {peak / 1e6:7.2f} MB ({peak / chars:.1f} x text)")


def bench_scenarios(sizer: HFSizer, requests: int, only: str = "") -> None:
    print(f"\n## Scenarios at default config ({requests} requests each)")
    print(
        f"{'scenario':26} {'prepare':>9} {'local/req':>10} {'remote/req':>11} {'calls/req':>9} "
        f"{'+body/req':>10}"
    )
    for scenario, config in builtin_scenarios().items():
        if only and scenario != only:
            continue
        results = []
        for use in (sizer, RemoteLike(sizer)):
            workload = make_workload(
                scenario,
                config,
                seed=0,
                run_id="bench",
                worker_id="bench",
                user_id=0,
                sizer=use,
                max_model_len=32768,
                max_tokens=64,
                material=SharedMaterial(use),
            )
            start = time.perf_counter()
            workload.prepare()
            prepare_s = time.perf_counter() - start
            for _ in range(10):  # calibration and first uses out of the way
                _exchange(workload)
            calls_before = getattr(use, "calls", 0)
            start = time.perf_counter()
            for _ in range(requests):
                _exchange(workload)
            per_request_ms = (time.perf_counter() - start) / requests * 1000
            calls = (getattr(use, "calls", 0) - calls_before) / requests
            start = time.perf_counter()
            for _ in range(requests):
                _exchange(workload, body=True)
            with_body_ms = (time.perf_counter() - start) / requests * 1000
            results.append((prepare_s, per_request_ms, calls, with_body_ms))
        (prepare_s, local_ms, _, _), (_, remote_ms, calls, body_ms) = results
        print(
            f"{scenario:26} {prepare_s:8.2f}s {local_ms:8.2f}ms {remote_ms:9.2f}ms {calls:9.2f} "
            f"{body_ms:8.2f}ms"
        )


_CLIENT = StreamingClient("http://127.0.0.1:8000/v1")


def _exchange(workload, body: bool = False) -> None:
    request = workload.next_request()
    if body:
        _CLIENT._encode(
            CompletionRequest(endpoint="chat", model="m", max_tokens=64, messages=request.messages)
        )
    reply = " " + "".join(itertools.islice(text.user_turn(text.seeded(request.request_id)), 4))
    workload.observe_reply(request, reply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--keep-freed-memory", action="store_true", help="glibc's heap kept, as in Locust"
    )
    parser.add_argument(
        "--only", default="", help="this scenario alone, in a process that did nothing else"
    )
    args = parser.parse_args()
    if args.keep_freed_memory:
        print(f"freed memory kept: {keep_freed_memory()}")
    sizer = HFSizer(train_tokenizer(), source="test BPE")
    if not args.only:
        bench_document(sizer, repeat=3 if args.quick else 9)
    bench_scenarios(sizer, requests=50 if args.quick else 300, only=args.only)


if __name__ == "__main__":
    main()
