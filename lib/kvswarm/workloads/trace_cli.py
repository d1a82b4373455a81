"""`kvswarm trace analyze|sample`: what a Mooncake-format trace asks of a server, and
smaller traces cut from one (kvswarm.workloads.trace_file, kvswarm.workloads.trace_hits)."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from kvswarm.errors import KvswarmError
from kvswarm.workloads.trace_file import (
    DEFAULT_BLOCK_TOKENS,
    load_trace,
    rebased,
    select_rows,
    write_trace,
)
from kvswarm.workloads.trace_hits import TraceAnalysis, analyze_trace, capacity_blocks

__all__ = ["format_analysis", "register"]


def format_analysis(analysis: TraceAnalysis) -> str:
    """The table `kvswarm trace analyze` prints."""
    a = analysis
    i, o = a.input_lengths, a.output_lengths
    lines = [
        f"trace: {a.path} ({a.block_tokens} tokens per block)",
        f"{'requests':<28}{a.requests:>14,}",
        f"{'duration':<28}{a.duration_s:>14,.1f} s",
        f"{'arrival rate':<28}{a.arrival_rate_rps:>14.3f} req/s",
        f"{'input tokens (sum)':<28}{a.input_tokens:>14,}",
        f"{'output tokens (sum)':<28}{a.output_tokens:>14,}",
        "",
        f"{'tokens':<12}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}",
        f"{'input':<12}{i.mean:>10.0f}{i.p50:>10.0f}{i.p90:>10.0f}{i.p99:>10.0f}{i.max:>10}",
        f"{'output':<12}{o.mean:>10.0f}{o.p50:>10.0f}{o.p90:>10.0f}{o.p99:>10.0f}{o.max:>10}",
        "",
        f"{'unique blocks':<28}{a.unique_blocks:>14,}",
        f"{'working set':<28}{a.working_set_tokens:>14,} tokens",
    ]
    if a.working_set_gb is not None:
        lines.append(f"{'':<28}{a.working_set_gb:>14,.1f} GB of KV")
    lines.append("theoretical prefix hit rate (share of prompt tokens a prefix cache could serve)")
    lines.append(f"  {'infinite cache':<26}{100 * a.infinite.rate:>13.1f}%")
    if a.lru is not None:
        label = f"LRU, {a.lru.cache_blocks:,} blocks"
        lines.append(f"  {label:<26}{100 * a.lru.rate:>13.1f}%")
    return "\n".join(lines) + "\n"


def _analyze(args: argparse.Namespace) -> int:
    cache_blocks = args.cache_blocks
    if args.cache_gb is not None:
        if args.kv_bytes_per_token is None:
            raise KvswarmError("--cache-gb: needs --kv-bytes-per-token (KV bytes per token)")
        cache_blocks = capacity_blocks(args.cache_gb, args.kv_bytes_per_token, args.block_tokens)
        if cache_blocks == 0:
            raise KvswarmError(
                f"--cache-gb: {args.cache_gb} GB holds no block of {args.block_tokens} tokens "
                f"at {args.kv_bytes_per_token} bytes per token"
            )
    trace = load_trace(args.file, args.block_tokens)
    analysis = analyze_trace(
        trace, cache_blocks=cache_blocks, kv_bytes_per_token=args.kv_bytes_per_token
    )
    print(format_analysis(analysis), end="")
    if args.json:
        out = Path(args.json)
        try:
            out.write_bytes(orjson.dumps(analysis.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
        except OSError as exc:
            raise KvswarmError(f"{out}: cannot write ({exc.strerror or exc})") from None
        print(f"json: {out}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.rows is None and args.seconds is None:
        raise KvswarmError("trace sample: give --rows N, --seconds S or both")
    trace = load_trace(args.file, args.block_tokens)
    if args.seconds is not None and not trace.timed:
        raise KvswarmError(f"{args.file}: --seconds: the trace has no timestamps")
    end_s = None if args.seconds is None else args.start_s + args.seconds
    rows = select_rows(
        trace, start_s=args.start_s, end_s=end_s, max_rows=args.rows, time_scale=args.time_scale
    )
    if not rows:
        raise KvswarmError(f"{args.file}: no rows in the stretch asked for")
    written = write_trace(rebased(rows, time_scale=args.time_scale, start_s=args.start_s), args.o)
    print(f"{written} of {len(trace)} rows -> {args.o}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="analyze or sample a Mooncake-format request trace",
        description="Mooncake-format traces (JSON Lines, optionally .gz): timestamp (ms), "
        "input_length, output_length, hash_ids (one id per block of --block-tokens).",
    )
    verbs = parser.add_subparsers(dest="trace_verb", metavar="<analyze|sample>", required=True)
    formatter = argparse.ArgumentDefaultsHelpFormatter

    analyze = verbs.add_parser(
        "analyze",
        help="requests, rates, lengths and the theoretical prefix hit rate",
        description="Print requests, duration, arrival rate, input/output length "
        "percentiles, unique blocks and the theoretical prefix hit rate (the share of prompt "
        "tokens in blocks a prefix cache could serve; a block counts only while every block "
        "before it in its request was seen before) for an infinite cache and, with "
        "--cache-blocks or --cache-gb, an LRU cache of that size.",
        formatter_class=formatter,
    )
    analyze.add_argument("file", help="the trace (.jsonl or .jsonl.gz)")
    analyze.add_argument(
        "--block-tokens", type=_positive_int, default=DEFAULT_BLOCK_TOKENS,
        help="tokens per hash id",
    )  # fmt: skip
    size = analyze.add_mutually_exclusive_group()
    size.add_argument("--cache-blocks", type=_positive_int, help="LRU capacity in blocks")
    size.add_argument(
        "--cache-gb", type=_positive_float, help="LRU capacity in GB (1e9 bytes) of KV cache"
    )
    analyze.add_argument(
        "--kv-bytes-per-token", type=_positive_float,
        help="KV cache bytes per token of the model (for --cache-gb and the working set)",
    )  # fmt: skip
    analyze.add_argument("--json", metavar="OUT", help="also write the figures as JSON here")
    analyze.set_defaults(func=_analyze)

    sample = verbs.add_parser(
        "sample",
        help="write a smaller trace: the first rows or seconds of one",
        description="Write the rows of FILE in [--start-s, --start-s + --seconds) of its "
        "timeline scaled by --time-scale (or its first --rows rows, or both) as a trace of "
        "its own: timestamps scaled and counted from --start-s, rows in order.",
        formatter_class=formatter,
    )
    sample.add_argument("file", help="the trace (.jsonl or .jsonl.gz)")
    sample.add_argument("--rows", type=_positive_int, help="keep at most this many rows")
    sample.add_argument(
        "--seconds", type=_positive_float, help="keep rows due in this many (scaled) seconds"
    )
    sample.add_argument(
        "--start-s", type=_non_negative_float, default=0.0,
        help="skip rows due before this many (scaled) seconds",
    )  # fmt: skip
    sample.add_argument(
        "--time-scale", type=_positive_float, default=1.0,
        help="factor on timestamps (0.5: twice as fast)",
    )  # fmt: skip
    sample.add_argument(
        "--block-tokens", type=_positive_int, default=DEFAULT_BLOCK_TOKENS,
        help="tokens per hash id (rows are checked at it)",
    )  # fmt: skip
    sample.add_argument("-o", "--output", dest="o", required=True, help="the trace to write")
    sample.set_defaults(func=_sample)
