"""The analysis verbs of the `kvswarm` command line."""

from __future__ import annotations

import argparse

from kvswarm.analysis.runs import load_run
from kvswarm.analysis.summary import format_summary, summarize


def _summary(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir)
    print(format_summary(summarize(run), str(run.path), run), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summary",
        help="print a run's summary (exact percentiles per scenario)",
        description="Print the summary of a results/<run-id>/ directory, computed from "
        "its requests.csv and run.json.",
    )
    parser.add_argument("run_dir", help="a results/<run-id>/ directory")
    parser.set_defaults(func=_summary)
