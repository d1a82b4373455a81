"""The original suite's report scripts, for its users: `generate_report` and
`compare_results` (console scripts), with their options, on kvswarm's reports.

Each accepts kvswarm run directories and Locust `--csv` prefixes. `generate_report` writes
reports/report.html, report.md and charts/ (several `--stats`: one folder per run under
reports/); `compare_results` writes comparison_report.md, .html, .json and
comparison_charts/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kvswarm.analysis.cli import write_comparison, write_report
from kvswarm.errors import KvswarmError

__all__ = ["compare_results_main", "generate_report_main"]


def _run_errors(main):  # type: ignore[no-untyped-def]
    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except KvswarmError as exc:
            print(f"{Path(sys.argv[0]).name}: {exc}", file=sys.stderr)
            return 2

    wrapped.__doc__ = main.__doc__
    return wrapped


@_run_errors
def generate_report_main(argv: Sequence[str] | None = None) -> int:
    """`generate_report --stats PATH... [--format md|html|both] [--generate-charts]`."""
    parser = argparse.ArgumentParser(
        prog="generate_report",
        description="The original suite's report generator, on kvswarm's report: a run "
        "directory or Locust --csv prefix per --stats.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--stats",
        nargs="+",
        required=True,
        metavar="PATH",
        help="kvswarm run directories or Locust --csv prefixes",
    )
    parser.add_argument("--format", choices=("md", "html", "both"), default="both")
    parser.add_argument(
        "--generate-charts", action="store_true", help="draw the charts (under charts/)"
    )
    parser.add_argument("--output-dir", default="reports", help="where reports go")
    parser.add_argument("--mode", help="deployment mode of Locust prefixes")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    for stats in args.stats:
        where = out if len(args.stats) == 1 else out / Path(stats).name
        for path in write_report(stats, where, [args.format], args.mode, args.generate_charts):
            print(f"report: {path}")
    return 0


@_run_errors
def compare_results_main(argv: Sequence[str] | None = None) -> int:
    """`compare_results --pd-stats PATH... --non-pd-stats PATH... [--generate-charts]`."""
    parser = argparse.ArgumentParser(
        prog="compare_results",
        description="The original suite's PD vs non-PD comparison, on kvswarm's compare.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--pd-stats",
        nargs="+",
        required=True,
        metavar="PATH",
        help="PD runs: kvswarm run directories or Locust --csv prefixes",
    )
    parser.add_argument(
        "--non-pd-stats",
        nargs="+",
        required=True,
        metavar="PATH",
        help="non-PD runs: kvswarm run directories or Locust --csv prefixes",
    )
    parser.add_argument(
        "--generate-charts", action="store_true", help="draw the charts (under comparison_charts/)"
    )
    parser.add_argument("--output-dir", default=".", help="where the comparison goes")
    args = parser.parse_args(argv)
    sources = [(p, "non_disaggregated") for p in args.non_pd_stats]
    sources += [(p, "pd_disaggregated") for p in args.pd_stats]
    out = Path(args.output_dir)
    files = write_comparison(sources, out, with_charts=args.generate_charts)
    for path in files:
        renamed = path.with_name(f"comparison_report{path.suffix}")
        path.replace(renamed)
        print(f"comparison: {renamed}")
    return 0
