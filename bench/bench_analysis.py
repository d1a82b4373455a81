"""Loading and reporting a 1,000,000-request run: time and peak memory.

Generates a run directory (two scenarios, 31 inter-token gaps per request, every column of
requests.csv) once under --dir, then in a fresh process times `load_run` and
`build_report` + every format (md, html, json, with charts) and reads the peak RSS.

    python bench/bench_analysis.py [--requests 1000000] [--dir /tmp/kvswarm-bench-analysis]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

MEASURE = """
import resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from kvswarm.analysis.runs import load_run
from kvswarm.analysis.report import build_report
from kvswarm.analysis.formats import write_document
run = load_run(sys.argv[1])
t1 = time.perf_counter()
out = Path(sys.argv[2])
write_document(build_report(run, out), out, ["md", "html", "json"])
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"rows {len(run.requests)}  load {t1 - t0:.1f} s  report {t2 - t1:.1f} s  "
      f"total {t2 - t0:.1f} s  peak RSS {peak:.0f} MiB")
"""


def generate(directory: Path, requests: int) -> None:
    from kvswarm.analysis.synthetic import SyntheticScenario, write_synthetic_run

    half = requests // 2
    write_synthetic_run(directory, [
        SyntheticScenario("batch_processing", half, 0.95, 30.0, 120.0, itl_gaps=31,
                          failure_share=0.01, pd_split=True),
        SyntheticScenario("cold_start", requests - half, 0.0, 30.0, 120.0, itl_gaps=31),
    ], "pd_disaggregated", window_s=3600.0)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--dir", default="/tmp/kvswarm-bench-analysis")
    args = parser.parse_args()
    run = Path(args.dir) / f"run-{args.requests}"
    if not (run / "requests.csv").exists():
        started = time.perf_counter()
        generate(run, args.requests)
        print(f"generated {run} in {time.perf_counter() - started:.0f} s "
              f"({(run / 'requests.csv').stat().st_size / 2**20:.0f} MiB)")  # fmt: skip
    subprocess.run([sys.executable, "-c", MEASURE, str(run), str(run.parent / "report")],
                   check=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
