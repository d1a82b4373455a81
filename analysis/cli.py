"""The analysis verbs of the `kvswarm` command line: summary, report, compare."""

from __future__ import annotations

import argparse
from pathlib import Path

from kvswarm.analysis.compare import build_comparison
from kvswarm.analysis.formats import FORMATS, resolve_formats, write_document
from kvswarm.analysis.report import build_report
from kvswarm.analysis.runs import load_run, open_run
from kvswarm.analysis.summary import format_summary, summarize
from kvswarm.analysis.targets import targets_from

__all__ = ["register", "write_comparison", "write_report"]

FORMAT_CHOICES = (*FORMATS.names(), "both")


def write_report(source: str | Path, out_dir: Path | None, formats: list[str],
                 mode: str | None = None, with_charts: bool = True) -> list[Path]:  # fmt: skip
    """Load a run (directory or Locust prefix) and write its report; the files written."""
    run = open_run(source, mode)
    target = out_dir or (run.path if run.has_requests else run.path.parent / "reports")
    document = build_report(run, target, with_charts)
    return write_document(document, target, resolve_formats(formats))


def write_comparison(sources: list[tuple[str | Path, str | None]], out_dir: Path,
                     baseline: tuple[str | Path, str | None] | None = None,
                     targets_file: Path | None = None, with_charts: bool = True,
                     formats: tuple[str, ...] = ("md", "html", "json")) -> list[Path]:  # fmt: skip
    """Load the runs ((path, mode) pairs; mode for Locust prefixes) and write the
    comparison; the files written."""
    runs = [open_run(path, mode) for path, mode in sources]
    base = open_run(*baseline) if baseline else None
    targets = None
    if targets_file is not None:
        import yaml

        from kvswarm.errors import ConfigError

        try:
            data = yaml.safe_load(targets_file.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{targets_file}: cannot read ({exc})") from None
        targets = targets_from(data if "targets" in data else {"targets": data}, str(targets_file))
    document = build_comparison(runs, out_dir, base, targets, with_charts)
    return write_document(document, out_dir, list(formats))


def _summary(args: argparse.Namespace) -> int:
    run = load_run(args.run_dir)
    print(format_summary(summarize(run), str(run.path), run), end="")
    return 0


def _report(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else None
    for path in write_report(args.run_dir, out, args.format or ["both"], args.mode):
        print(f"report: {path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    out = Path(args.output)
    baseline = (args.baseline, args.mode) if args.baseline else None
    files = write_comparison([(run, args.mode) for run in args.runs], out, baseline,
                             Path(args.targets) if args.targets else None)  # fmt: skip
    for path in files:
        print(f"comparison: {path}")
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

    report = subparsers.add_parser(
        "report",
        help="write a run's report (Markdown, HTML with embedded charts, JSON)",
        description="Write the report of a results/<run-id>/ directory (or of a Locust "
        "--csv prefix, with what its files allow): setup, summary, exact percentiles, hits "
        "vs misses, PD split, server figures and charts under charts/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    report.add_argument("run_dir", help="a results/<run-id>/ directory or a Locust --csv prefix")
    report.add_argument("-o", "--output", help="output directory (default: the run directory; "
                        "reports/ beside a Locust prefix)")  # fmt: skip
    report.add_argument(
        "--format",
        action="append",
        choices=FORMAT_CHOICES,
        help="report format, repeatable; both = md and html (default: both)",
    )
    report.add_argument("--mode", help="deployment mode of a Locust prefix (its files do not say)")
    report.set_defaults(func=_report)

    compare = subparsers.add_parser(
        "compare",
        help="compare runs: side-by-side tables, cache effect and deployment-mode verdicts",
        description="Compare runs (directories or Locust --csv prefixes): side by side, the "
        "cache effect (TTFT of hits vs misses or vs cold_start) and the deployment modes "
        "(PD vs non-PD: TPOT, throughput, TTFT, E2E), each with a 95%% bootstrap interval "
        "and a PASS/FAIL/INCONCLUSIVE verdict against the targets (a run config's "
        "`targets:`, --targets, else the original suite's). Writes comparison.md, "
        "comparison.html, comparison.json and comparison_charts/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    compare.add_argument("runs", nargs="+", help="run directories or Locust --csv prefixes")
    compare.add_argument("--baseline", help="the run the others are compared against "
                         "(default: the non_disaggregated runs)")  # fmt: skip
    compare.add_argument("-o", "--output", default="comparison", help="output directory")
    compare.add_argument("--targets", help="a YAML file with a targets: mapping")
    compare.add_argument("--mode", help="deployment mode of Locust prefixes given")
    compare.set_defaults(func=_compare)
