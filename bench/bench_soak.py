"""Soak: a Locust master and 2 workers at steady load on the simulator for `--minutes`.

Starts `kvswarm sim` (non_disaggregated, a cost model of `--tpot-ms` per token and a quick
prefill, so streams of 32-64 tokens take 0.1-0.2 s), then `kvswarm locust` headless as a
master and two workers (`-f locustfiles`, the five built-in scenarios shrunk to fit the
simulator, `--users` users with a short think time, `-t` the duration, the exporter
serving and the server-metrics sampler on, as a run has them by default). Every
`--interval` s it samples each process's RSS, open file descriptors and CPU time (psutil)
— the master, each worker and the simulator — and the machine's 1-minute load average.

Writes under `--out`: `samples.csv` (one row per process per sample), `rss-fds.png` (RSS
and fds over time per process), the processes' logs and the run's directory
(`results/soak/`: requests.csv, run.json). Prints per process the RSS at `--settle-minutes`
and at the end, its growth in between (%), and the fd count at both and its min/max after
the settle point; then whether the run closed `finished` and how many requests
requests.csv holds. Targets (issue 14): RSS growth after the first 5 minutes under 10%,
and no fd growth (after the first 5 minutes the count never exceeds their maximum).

`--tracemalloc` runs the master and worker-0 with Python's tracemalloc on from their first
import (their RSS then includes its overhead: use it for a second run, to find what
grows) and prints, per traced process, the allocation sites whose memory grew most
between a snapshot at the settle point and one shortly before the end.

    nice -n 10 .venv/bin/python bench/bench_soak.py --minutes 30 --out bench/results/soak
    nice -n 10 .venv/bin/python bench/bench_soak.py --minutes 12 --tracemalloc --out DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO))

from kvswarm.sim import CostModel, SimOptions, spawn_stack  # noqa: E402
from kvswarm.sim.stack import StackProcess  # noqa: E402
from tests.support.processes import free_port, run_dirs  # noqa: E402

WORKERS = 2
RUN_ID = "soak"
USER_CLASSES = (
    "LongContextHighReuseUser",
    "CodeGenerationUser",
    "MultiTurnConversationUser",
    "BatchProcessingUser",
    "ColdStartUser",
)
# The five built-in scenarios, shrunk for the simulator (one word, one token): prompts of
# 300-2,000 tokens, 32-64 output tokens.
SCENARIOS = {
    "long_context_high_reuse": {
        "shared_tokens_min": 1000, "shared_tokens_max": 2000, "unique_tokens": 32,
        "max_tokens": 32,
    },
    "code_generation": {
        "shared_tokens_min": 800, "shared_tokens_max": 800, "unique_tokens": 32,
        "max_tokens": 64,
    },
    "multi_turn_conversation": {
        "shared_tokens_min": 200, "shared_tokens_max": 400, "unique_tokens": 32,
        "max_turns": 4, "max_history_tokens": 2000, "max_tokens": 48,
    },
    "batch_processing": {
        "shared_tokens_min": 300, "shared_tokens_max": 400, "unique_tokens": 40,
        "max_tokens": 32,
    },
    "cold_start": {"unique_tokens": 300, "max_tokens": 64},
}  # fmt: skip
STOP_TIMEOUT_S = 120.0
TRACE_FRAMES = 6
TRACED = ("master", "worker-0")
# `python -c TRACED_LOCUST DIR SECONDS,... LOCUST_ARGS...`: `kvswarm locust` with
# tracemalloc on from the first import, dumping a snapshot to DIR/<seconds>.snapshot at
# each SECONDS after the start. A program of its own rather than this file: this file's
# imports would run before Locust patches the standard library for gevent.
TRACED_LOCUST = f"""\
import sys, tracemalloc
tracemalloc.start({TRACE_FRAMES})
import locust, gevent
from kvswarm.locust.launcher import run_locust
directory, at, locust_args = sys.argv[1], sys.argv[2], sys.argv[3:]
def dump(seconds):
    tracemalloc.take_snapshot().dump(f"{{directory}}/{{seconds:g}}.snapshot")
for seconds in map(float, at.split(",")):
    gevent.spawn_later(seconds, dump, seconds)
sys.exit(run_locust(locust_args))
"""


@dataclass(frozen=True)
class Sample:
    """One process at one moment; `t_s` counts from the start of the load."""

    t_s: float
    process: str
    pid: int
    rss_bytes: int
    fds: int
    cpu_s: float
    load1: float


@dataclass(frozen=True)
class Growth:
    """One process over the run: from the settle point to the end of the load."""

    process: str
    rss_settle_mib: float
    rss_end_mib: float
    rss_growth_pct: float
    fds_settle: int
    fds_end: int
    fds_min_after: int
    fds_max_after: int
    fds_max_before: int

    @property
    def rss_ok(self) -> bool:
        return self.rss_growth_pct < 10.0

    @property
    def fds_ok(self) -> bool:
        return self.fds_max_after <= self.fds_max_before


# --- the processes ---------------------------------------------------------------------


def start_sim(tpot_ms: float, log: Path) -> StackProcess:
    cost = CostModel(
        prefill_base_ms=1.0,
        prefill_ms_per_token=0.01,
        decode_base_ms=tpot_ms,
        decode_ms_per_seq=0.0,
        prefill_interference_ms=0.0,
        prefill_concurrency=8,
    )
    return spawn_stack(SimOptions(cost=cost).with_free_ports(), log_path=log)


def write_config(path: Path, stack: StackProcess, wait_s: tuple[float, float]) -> Path:
    wait = {"wait_min_s": wait_s[0], "wait_max_s": wait_s[1]}
    config = {
        "target": {"max_model_len": 4096},
        "generation": {"max_tokens": 48},
        "scenarios": {name: {**knobs, **wait} for name, knobs in SCENARIOS.items()},
        "metrics_endpoints": dict(stack.metrics_urls),
    }
    path.write_text(yaml.safe_dump(config))
    return path


def kvswarm_locust(
    args: list[str], out: Path, name: str, snapshots_at: tuple[float, ...] = ()
) -> subprocess.Popen[bytes]:
    """`kvswarm locust ARGS` in `out`, logging to `out/NAME.log`; with `snapshots_at`,
    traced, its snapshots in `out/NAME-snapshots/`."""
    command = [sys.executable, "-m", "kvswarm.cli", "locust"]
    if snapshots_at:
        snapshots = out / f"{name}-snapshots"
        snapshots.mkdir()
        at = ",".join(f"{s:g}" for s in snapshots_at)
        command = [sys.executable, "-c", TRACED_LOCUST, str(snapshots), at]
    with open(out / f"{name}.log", "wb") as log:
        return subprocess.Popen(
            [*command, *args],
            cwd=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def start_fleet(
    stack: StackProcess, config: Path, out: Path, args: argparse.Namespace
) -> dict[str, subprocess.Popen[bytes]]:
    """The master, then its workers; name -> process."""
    master_port = str(free_port())
    common = ["-f", str(REPO / "locustfiles"), "--kv-config", str(config)]
    master = [
        *common, "--headless", "-u", str(args.users), "-r", str(args.users / 4),
        "-t", f"{args.minutes * 60:g}s", "--host", stack.base_url,
        "--kv-mode", "non_disaggregated", "--kv-results", str(out / "results"),
        "--kv-run-id", RUN_ID, "--kv-exporter-port", str(free_port()),
        "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", master_port,
        "--expect-workers", str(WORKERS), *USER_CLASSES,
    ]  # fmt: skip
    worker = [*common, "--worker", "--master-host", "127.0.0.1", "--master-port", master_port]
    commands = {"master": master, **{f"worker-{n}": worker for n in range(WORKERS)}}
    snapshots_at = (args.settle_minutes * 60, args.minutes * 60 - 20) if args.tracemalloc else ()
    return {
        name: kvswarm_locust(command, out, name, snapshots_at if name in TRACED else ())
        for name, command in commands.items()
    }


def wait_started(results: Path, fleet: dict[str, subprocess.Popen[bytes]], out: Path) -> float:
    """When the load started (monotonic): the master opened the run directory."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if results.exists() and run_dirs(results):
            return time.monotonic()
        if any(p.poll() is not None for p in fleet.values()):
            break
        time.sleep(0.05)
    logs = "\n".join(f"== {log.name}\n{log.read_text()[-1500:]}" for log in out.glob("*.log"))
    raise RuntimeError(f"the load did not start\n{logs}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- sampling --------------------------------------------------------------------------


def sample(t_s: float, processes: dict[str, psutil.Process]) -> list[Sample]:
    """Every process still running, now."""
    load1 = os.getloadavg()[0]
    taken = []
    for name, process in processes.items():
        try:
            with process.oneshot():
                cpu = process.cpu_times()
                taken.append(
                    Sample(
                        t_s=t_s,
                        process=name,
                        pid=process.pid,
                        rss_bytes=process.memory_info().rss,
                        fds=process.num_fds(),
                        cpu_s=cpu.user + cpu.system,
                        load1=load1,
                    )
                )
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return taken


def sample_until_exit(
    started: float,
    interval_s: float,
    processes: dict[str, psutil.Process],
    master: subprocess.Popen[bytes],
    deadline: float,
    csv_path: Path,
) -> list[Sample]:
    """Every `interval_s` from `started` until the master exits (or `deadline`), each
    sample also appended to `csv_path` as it is taken."""
    samples: list[Sample] = []
    fields = list(Sample.__dataclass_fields__)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        tick = 0
        while master.poll() is None and time.monotonic() < deadline:
            now = sample(round(tick * interval_s, 1), processes)
            writer.writerows([getattr(s, f) for f in fields] for s in now)
            handle.flush()
            samples += now
            tick += 1
            time.sleep(max(0.0, started + tick * interval_s - time.monotonic()))
    return samples


# --- the figures -----------------------------------------------------------------------


def growth(samples: list[Sample], name: str, settle_s: float, end_s: float) -> Growth:
    """`name`'s figures: at the sample nearest `settle_s` and the last at or before `end_s`."""
    own = [s for s in samples if s.process == name and s.t_s <= end_s]
    at_settle = min(own, key=lambda s: abs(s.t_s - settle_s))
    end = own[-1]
    before = [s.fds for s in own if s.t_s <= at_settle.t_s]
    after = [s.fds for s in own if s.t_s >= at_settle.t_s]
    return Growth(
        process=name,
        rss_settle_mib=at_settle.rss_bytes / 2**20,
        rss_end_mib=end.rss_bytes / 2**20,
        rss_growth_pct=100.0 * (end.rss_bytes - at_settle.rss_bytes) / at_settle.rss_bytes,
        fds_settle=at_settle.fds,
        fds_end=end.fds,
        fds_min_after=min(after),
        fds_max_after=max(after),
        fds_max_before=max(before),
    )


def print_table(rows: list[Growth], settle_min: float) -> None:
    s = f"{settle_min:g} min"
    print(
        f"| process | RSS at {s}, MiB | RSS at end, MiB | growth after {s} | fds at {s} "
        f"| fds at end | fds min/max after {s} | fds max in first {s} | targets |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for g in rows:
        verdict = "met" if g.rss_ok and g.fds_ok else "**missed**"
        print(
            f"| {g.process} | {g.rss_settle_mib:.1f} | {g.rss_end_mib:.1f} "
            f"| {g.rss_growth_pct:+.1f}% | {g.fds_settle} | {g.fds_end} "
            f"| {g.fds_min_after}/{g.fds_max_after} | {g.fds_max_before} | {verdict} |"
        )


def print_run(results: Path) -> None:
    """How the run closed, and what requests.csv holds."""
    run = results / RUN_ID
    meta = json.loads((run / "run.json").read_text())
    with open(run / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ok = sum(1 for r in rows if r["ok"] == "1")
    failures: dict[str, int] = {}
    for r in rows:
        if r["ok"] != "1":
            failures[r["failure"]] = failures.get(r["failure"], 0) + 1
    lost = meta.get("fleet", {}).get("lost_workers", [])
    print(
        f"\nrun.json status: {meta['status']}; requests.csv: {len(rows)} rows, {ok} ok, "
        f"not ok by failure: {failures or 'none'}; lost workers: {lost or 'none'}"
    )


def print_load(samples: list[Sample], end_s: float) -> None:
    loads = [s.load1 for s in samples if s.process == "master" and s.t_s <= end_s]
    print(
        f"load average (1 min) during the run: min {min(loads):.2f}, "
        f"mean {sum(loads) / len(loads):.2f}, max {max(loads):.2f}"
    )


def print_growing_allocations(out: Path, name: str, top: int = 12) -> None:
    """The allocation sites whose memory grew most between `name`'s two snapshots."""
    import tracemalloc

    paths = sorted((out / f"{name}-snapshots").glob("*.snapshot"), key=lambda p: float(p.stem))
    if len(paths) < 2:
        print(f"\n{name}: {len(paths)} tracemalloc snapshot(s), two needed")
        return
    first, last = (tracemalloc.Snapshot.load(str(p)) for p in (paths[0], paths[-1]))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    first, last = first.filter_traces(ignore), last.filter_traces(ignore)
    print(
        f"\n{name}: traced Python memory {sum(t.size for t in first.traces) / 2**20:.1f} MiB "
        f"at {paths[0].stem} s, {sum(t.size for t in last.traces) / 2**20:.1f} MiB at "
        f"{paths[-1].stem} s; the sites that grew most (the allocating line, then its callers):"
    )
    for stat in last.compare_to(first, "traceback")[:top]:
        frames = [f"{f.filename.split('site-packages/')[-1]}:{f.lineno}" for f in stat.traceback]
        print(
            f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  "
            f"{' < '.join(reversed(frames))}"
        )


def plot(samples: list[Sample], names: list[str], settle_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rss, fds) = plt.subplots(2, 1, sharex=True, figsize=(8, 5.5), dpi=90)
    for name in names:
        own = [s for s in samples if s.process == name]
        minutes = [s.t_s / 60 for s in own]
        rss.plot(minutes, [s.rss_bytes / 2**20 for s in own], label=name)
        fds.plot(minutes, [s.fds for s in own], label=name)
    for axis in (rss, fds):
        axis.axvline(settle_s / 60, color="grey", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    rss.set_ylabel("RSS, MiB")
    rss.set_ylim(bottom=0)
    fds.set_ylabel("open fds")
    fds.set_ylim(bottom=0)
    fds.set_xlabel("minutes since the load started")
    rss.legend(loc="lower right", fontsize="small", ncol=len(names))
    rss.set_title("kvswarm soak: Locust master + 2 workers against the simulator")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# --- the run ---------------------------------------------------------------------------


def soak(args: argparse.Namespace, out: Path) -> list[Sample]:
    results = out / "results"
    with start_sim(args.tpot_ms, out / "sim.log") as stack:
        config = write_config(out / "config.yaml", stack, (args.wait_min_s, args.wait_max_s))
        fleet = start_fleet(stack, config, out, args)
        try:
            started = wait_started(results, fleet, out)
            processes = {name: psutil.Process(p.pid) for name, p in fleet.items()}
            processes["sim"] = psutil.Process(stack.pid)
            deadline = started + args.minutes * 60 + STOP_TIMEOUT_S
            samples = sample_until_exit(
                started, args.interval, processes, fleet["master"], deadline, out / "samples.csv"
            )
            for process in fleet.values():
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for process in fleet.values():  # the master first: its workers quit with it
                stop(process)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="run time of the load")
    parser.add_argument(
        "--settle-minutes", type=float, default=5.0, help="growth is measured from here"
    )
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--users", type=int, default=20, help="users over the two workers")
    parser.add_argument("--wait-min-s", type=float, default=0.1, help="think time, least")
    parser.add_argument("--wait-max-s", type=float, default=0.3, help="think time, most")
    parser.add_argument("--tpot-ms", type=float, default=3.0, help="sim: ms per output token")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak"))
    parser.add_argument(
        "--tracemalloc", action="store_true", help="trace the master's and worker-0's memory"
    )
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=False)
    print(
        f"{os.cpu_count()} cores; {args.minutes:g} min, {args.users} users, think time "
        f"{args.wait_min_s:g}-{args.wait_max_s:g} s, sim {args.tpot_ms:g} ms/token; "
        f"samples every {args.interval:g} s into {out}; load average before: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    samples = soak(args, out)
    names = ["master", *(f"worker-{n}" for n in range(WORKERS)), "sim"]
    settle_s, end_s = args.settle_minutes * 60, args.minutes * 60 - args.interval / 2
    print()
    print_table([growth(samples, name, settle_s, end_s) for name in names], args.settle_minutes)
    print_run(out / "results")
    print_load(samples, end_s)
    if args.tracemalloc:
        for name in TRACED:
            print_growing_allocations(out, name)
    plot(samples, names, settle_s, out / "rss-fds.png")
    print(f"\nsamples: {out / 'samples.csv'}\nplot: {out / 'rss-fds.png'}")
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
