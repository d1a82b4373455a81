"""Client overhead against a real engine: llama-server with the tiny model, 1/4/16 slots.

For each slot count N, starts llama-server with N slots (one thread), runs N concurrent
streams (one per slot) of `--requests` each through kvswarm's StreamingClient, and
reports:

- client CPU µs per streamed token (this process's user+system time / tokens received);
- client TTFT minus the engine's own `timings.prompt_ms` for the same request, p50/p99.
  That difference is not only client error: it also holds the engine's sampling of the
  first token and its HTTP write, so it bounds the client's error from above.

    .venv/bin/python bench/bench_llamacpp.py --slots 1 4 16 --requests 8
"""

from __future__ import annotations

import gevent.monkey

gevent.monkey.patch_all()

import argparse  # noqa: E402
import itertools  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvswarm.client import CompletionRequest, StreamingClient  # noqa: E402
from kvswarm.llamacpp.build import ensure_llama_server  # noqa: E402
from kvswarm.llamacpp.server import (  # noqa: E402
    DEFAULT_ALIAS,
    LlamaServerOptions,
    start_llama_server,
)
from kvswarm.workloads.text import prose  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def run(slots: int, requests: int, tokens: int, prompt_words: int) -> tuple[float, list[float]]:
    build = ensure_llama_server()
    options = LlamaServerOptions(slots=slots, ctx_per_slot=2048, threads=1)
    gaps: list[float] = []
    token_count = 0
    with start_llama_server(options, binary=build.binary) as server:

        def user(index: int) -> None:
            nonlocal token_count
            client = StreamingClient(server.base_url)
            for n in range(requests):
                # unique from its first word: every request is a cold prefill
                text = "".join(itertools.islice(prose(random.Random(index * 1000 + n)), 60))
                prompt = f"r{index}x{n} " + " ".join(text.split()[:prompt_words])
                result = client.complete(
                    CompletionRequest(
                        endpoint="completions",
                        model=DEFAULT_ALIAS,
                        max_tokens=tokens,
                        prompt=prompt,
                        extra={"ignore_eos": True, "temperature": 0},
                    )
                )
                if not result.ok:
                    raise RuntimeError(result.error)
                token_count += result.output_tokens
                gaps.append(result.ttft_s * 1000.0 - result.server_timings["prompt_ms"])
            client.close()

        before = cpu_seconds()
        gevent.joinall([gevent.spawn(user, i) for i in range(slots)], raise_error=True)
        cpu = cpu_seconds() - before
    return cpu / max(token_count, 1) * 1e6, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=8, help="per stream")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=200)
    args = parser.parse_args()
    print(
        f"{'slots':>5} {'requests':>8} {'µs CPU/token':>12} {'TTFT-prompt_ms p50':>18} "
        f"{'p99 ms':>7}"
    )
    for slots in args.slots:
        cpu_per_token, gaps = run(slots, args.requests, args.tokens, args.prompt_words)
        print(
            f"{slots:>5} {len(gaps):>8} {cpu_per_token:>12.1f} "
            f"{statistics.median(gaps):>18.2f} {percentile(gaps, 0.99):>7.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
