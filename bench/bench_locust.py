"""Real Locust against ground truth: CPU per streamed token and TTFT error of `locust --headless`.

Each case runs real processes for `--seconds` against the tests' streaming server
(tests/support/streamserver.py: TTFT 50 ms, TPOT 10 ms, every stream `--tokens` tokens
whatever its max_tokens, a fresh server per case, `--lean` unless `--full-server`: its
own work per request does not grow with the prompt, so that it does not hold its loop
while other requests wait unread), and over the steady part (from
`--warmup` s after the run started to `STOP_MARGIN_S` before its end) reports:

- µs CPU/token: each load-generating process's user+system CPU in the window (/proc)
  divided by the tokens the server wrote in the window (token i of a request at its first
  write + i x TPOT, no later than its last write); for a fleet, the workers' together;
  "in kernel": the system time's share of it (on loopback the kernel's receive path of
  what the client sends runs in the client's system calls);
- TTFT err p50/p99: the client's TTFT minus the server's own (first-token write - request
  receipt, same monotonic clock), over the requests that started in the window;
- ratio: µs CPU/token over the bare gevent loop's at the same users.

The cases, each run unpinned (as a user runs it) and then pinned (server on one core, the
load generator on the other) unless `--pinning` says otherwise:

- `loop`: a bare gevent socket loop in its own process: raw sockets, the SSE events
  split by hand and parsed with orjson (the floor for any gevent client);
- `client`: kvswarm's bare `StreamingClient`, one greenlet per user, no Locust;
- `fixed`: `locust -f tests/support/locustfile_basic.py` (one fixed prompt);
- `fixed-long`: `locust -f bench/locustfile_fixed_long.py` (one fixed prompt as long as
  ColdStartUser's, ~27,800 characters: the prompt's size without building one);
- one per scenario: `locust -f locustfiles/ <Class>` with the small `SCENARIO_CONFIG`;
- `fleet`: a master and two workers with the fixed prompt (the master's CPU is reported
  as a share of one worker's).

`--ceiling` measures instead the records/s one master takes: two `locust --worker`
processes whose users ship synthetic 64-token records (no HTTP) at a controlled rate;
reported per rate: records/s received, the master's CPU share of a core and µs per record,
how far the master fell behind (records held on a worker at most, from run.json), how long
after the end the run closed, and whether requests.csv holds every record exactly once.
`--exporter` serves kvswarm's Prometheus exporter on the master (as a run does by
default: every record is decoded for it); `--sink-us N` adds a record sink on the master
that burns N µs of CPU per record, to push it past its ceiling on purpose.

    .venv/bin/python bench/bench_locust.py --users 50 200
    .venv/bin/python bench/bench_locust.py --ceiling --rates 2000 4000 8000
    .venv/bin/python bench/bench_locust.py --ceiling --rates 2000 4000 8000 --exporter
    .venv/bin/python bench/bench_locust.py --ceiling --rates 4000 --sink-us 400

`--rounds N` runs every case N times, round after round, and adds a table of medians: each
ratio (to the loop, to the fixed prompt) and each TTFT difference is taken within a round,
then its median over the rounds, since a shared machine drifts between one case and the
next. `--tpot-ms` sets the server's TPOT: at 200 users, 40 ms streams as many tokens per
second as 50 users at 10 ms, which a 2-core machine's server and load generator can keep.

    .venv/bin/python bench/bench_locust.py --users 50 --rounds 3
    .venv/bin/python bench/bench_locust.py --users 200 --tpot-ms 40 --scenarios --no-fleet \
        --no-fixed-long --rounds 3

`--paired` runs every other case at the same time as the fixed prompt (each with its own
server; pinned, both servers on core 0 and both load generators on core 1), so a ratio
to the fixed prompt is taken within one window on the same cores: on this shared
machine one case's µs/token moved by 20-30% between runs minutes apart, the ratio of two
cases run side by side by a few %. The TTFT errors of paired runs include each other's
work on the shared core: take TTFT figures from runs without `--paired`.

    .venv/bin/python bench/bench_locust.py --users 50 --paired --rounds 3

`--kvswarm-lib DIR` runs the Locust processes with another kvswarm (a `lib/` folder of an
older commit, e.g. from `git archive`) first on PYTHONPATH, for before/after figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.processes import StreamServer, run_dirs, start_stream_server  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# No Prometheus exporter (nothing scrapes it here, and its default port may be taken);
# a kvswarm without the option ignores the variable.
QUIET = {"KVSWARM_EXPORTER_PORT": "0"}
STOP_MARGIN_S = 1.0
# Locust's run time (-t) counts from before kvswarm's pre-run checks (engine detection, the
# pre-flight request), which end when the run directory opens, the start seen here; the
# slack keeps the test's stop (and its summary's CPU) out of the window.
RUN_TIME_SLACK_S = 3.0
TTFT_MS = 50.0
TPOT_MS = 10.0
BASIC_LOCUSTFILE = REPO / "tests" / "support" / "locustfile_basic.py"
SCENARIOS = {
    "LongContextHighReuseUser": "long_context_high_reuse",
    "CodeGenerationUser": "code_generation",
    "MultiTurnConversationUser": "multi_turn_conversation",
    "BatchProcessingUser": "batch_processing",
    "ColdStartUser": "cold_start",
}
# The built-in scenarios as they are (ColdStartUser: 4,000-token unique prompts), with
# room in the context for the longest and the streams' length.
SCENARIO_CONFIG = """\
target: {max_model_len: 40000}
generation: {max_tokens: 64}
"""
FIXED_LONG_LOCUSTFILE = REPO / "bench" / "locustfile_fixed_long.py"
SYNTHETIC_LOCUSTFILE = REPO / "tests" / "support" / "locustfile_synthetic.py"


# --- the bare load generators (run as `bench_locust.py --bare KIND ...`) -----------------


def bare_main(kind: str, url: str, users: int, seconds: float, out: Path) -> None:
    import gevent.monkey

    gevent.monkey.patch_all()
    import gevent

    ttfts: dict[str, float] = {}
    one = _bare_loop_request if kind == "loop" else _bare_client_request
    print("READY", flush=True)
    deadline = time.monotonic() + seconds

    def user(index: int) -> None:
        state: dict = {}
        sequence = 0
        while time.monotonic() < deadline:
            sequence += 1
            request_id = f"{kind}-{index}-{sequence}"
            ttfts[request_id] = one(state, url, request_id)

    greenlets = [gevent.spawn_later(0.01 * i / users, user, i) for i in range(users)]
    gevent.joinall(greenlets, raise_error=True)
    out.write_text(json.dumps(ttfts))


def _bare_client_request(state: dict, url: str, request_id: str) -> float:
    from kvswarm.client import CompletionRequest, StreamingClient

    client = state.get("client") or state.setdefault("client", StreamingClient(url))
    result = client.complete(
        CompletionRequest(
            endpoint="chat",
            model="m",
            max_tokens=64,
            messages=[{"role": "user", "content": "Say something."}],
            request_id=request_id,
        )
    )
    if not result.ok:
        raise RuntimeError(result.error)
    return result.ttft_s


def _bare_loop_request(state: dict, url: str, request_id: str) -> float:
    """One streamed chat completion over a raw keep-alive socket; its TTFT."""
    import orjson

    sock = state.get("sock")
    if sock is None:
        host, port = url.removeprefix("http://").split(":")
        sock = state["sock"] = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = orjson.dumps(
        {
            "model": "m",
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "Say something."}],
        }
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {url}\r\nContent-Type: application/json"
        f"\r\nX-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    sock.sendall(head + body)
    ttft = None
    buffer = b""
    while True:
        data = sock.recv(65536)
        now = time.perf_counter()
        if not data:
            raise RuntimeError("server closed the connection")
        buffer += data
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            at = event.find(b"data: ")
            if at < 0:
                continue
            payload = event[at + 6 :]
            if payload == b"[DONE]":
                continue
            chunk = orjson.loads(payload)
            choices = chunk.get("choices")
            if ttft is None and choices and choices[0].get("delta", {}).get("content"):
                ttft = now - start
        if buffer.endswith(b"0\r\n\r\n"):
            return ttft


# --- running a case --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_s(pid: int) -> float:
    return sum(process_times_s(pid))


def process_times_s(pid: int) -> tuple[float, float]:
    """The process's user and system (kernel) CPU seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


@dataclass
class Case:
    name: str
    users: int
    kind: str  # loop, client, locust, fleet
    locust_args: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    case: Case
    pinned: bool
    tokens: int
    requests: int
    failed: int
    cpu_s: float  # the load generator's (a fleet's workers together)
    system_s: float  # of cpu_s, in the kernel (on loopback: the server's receive path too)
    master_cpu_s: float | None
    errors_ms: list[float]
    window_s: float
    # --paired: the fixed prompt's run beside this one (same window, same cores)
    beside: Outcome | None = None

    @property
    def us_per_token(self) -> float:
        return self.cpu_s / self.tokens * 1e6 if self.tokens else float("nan")

    @property
    def kernel_share(self) -> float:
        return self.system_s / self.cpu_s if self.cpu_s else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def spawn(
    command: list[str], cwd: Path, log: Path, core: int | None, env: dict
) -> subprocess.Popen:
    cores = sorted(os.sched_getaffinity(0))
    preexec = None
    if core is not None and len(cores) >= 2:
        chosen = {cores[core]}
        preexec = lambda: os.sched_setaffinity(0, chosen)  # noqa: E731
    with open(log, "w") as output:
        return subprocess.Popen(
            command, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec
        )


def locust_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "locust", *args]


@dataclass
class Running:
    """A case under way: its own server and load-generating processes."""

    case: Case
    pinned: bool
    workdir: Path
    results: Path
    server: StreamServer
    processes: list[subprocess.Popen]  # the load generator's (a fleet's workers)
    master: subprocess.Popen | None
    started: float = 0.0  # when load started (monotonic)

    def everything(self) -> list[subprocess.Popen]:
        return [*self.processes, *([self.master] if self.master else [])]


@dataclass
class Window:
    """One case's CPU over the measured window (shared by cases run side by side)."""

    start: float
    end: float
    before: list[tuple[float, float]]
    after: list[tuple[float, float]]
    master_cpu_s: float | None


def run_case(case: Case, pinned: bool, args: argparse.Namespace, base: Path) -> Outcome:
    (outcome,) = run_together([case], pinned, args, base)
    return outcome


def run_together(
    chosen: list[Case], pinned: bool, args: argparse.Namespace, base: Path
) -> list[Outcome]:
    """Run `chosen` (named apart) at the same time, each with its own server, over one
    window."""
    runs: list[Running] = []
    try:
        for case in chosen:
            runs.append(launch(case, pinned, args, base))
        windows = measure(runs, args)
        for run in runs:
            for process in run.everything():
                process.wait(timeout=120)
            run.server.wait_idle()
    finally:
        for run in runs:
            for process in run.everything():
                if process.poll() is None:
                    process.kill()
                    process.wait()
            run.server.stop()
    return [finish(run, window, args) for run, window in zip(runs, windows, strict=True)]


def launch(case: Case, pinned: bool, args: argparse.Namespace, base: Path) -> Running:
    """Start the case's server (pinned: on core 0) and its processes (pinned: core 1)."""
    pinning = "pinned" if pinned else "unpinned"
    workdir = base / f"{case.name.replace(' ', '-')}-u{case.users}-{pinning}"
    workdir.mkdir()
    server = start_stream_server(
        workdir,
        ttft_ms=TTFT_MS,
        tpot_ms=args.tpot_ms,
        core=0 if pinned else None,
        tokens=args.tokens,
        lean=not args.full_server,
    )
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "KV_BENCH_LONG_CHARS": str(args.long_chars),
        **QUIET,
    }
    if args.kvswarm_lib:
        env["PYTHONPATH"] = f"{args.kvswarm_lib}:{REPO}"
    results = workdir / "results"
    try:
        processes, master = start_processes(
            case,
            server,
            workdir,
            results,
            1 if pinned else None,
            env,
            args,
            args.seconds + RUN_TIME_SLACK_S,
        )
    except BaseException:
        server.stop()
        raise
    return Running(case, pinned, workdir, results, server, processes, master)


def measure(runs: list[Running], args: argparse.Namespace) -> list[Window]:
    """Each run's CPU over one window: from `--warmup` after the last of them started to
    `STOP_MARGIN_S` before the first of them stops."""
    for run in runs:
        run.started = wait_started(run.case, run.processes, run.master, run.workdir, run.results)
    time.sleep(max(0.0, max(r.started for r in runs) + args.warmup - time.monotonic()))
    start = time.monotonic()
    before = [[process_times_s(p.pid) for p in r.processes] for r in runs]
    master_before = [process_cpu_s(r.master.pid) if r.master else 0.0 for r in runs]
    time.sleep(
        max(0.0, min(r.started for r in runs) + args.seconds - STOP_MARGIN_S - time.monotonic())
    )
    after = [[process_times_s(p.pid) for p in r.processes] for r in runs]
    master_after = [process_cpu_s(r.master.pid) if r.master else 0.0 for r in runs]
    end = time.monotonic()
    return [
        Window(start, end, b, a, (ma - mb) if r.master else None)
        for r, b, a, mb, ma in zip(runs, before, after, master_before, master_after, strict=True)
    ]


def finish(run: Running, window: Window, args: argparse.Namespace) -> Outcome:
    """The case's outcome from its window, its server's log and its requests."""
    ttfts, failed = client_ttfts(run.case, run.workdir, run.results)
    served = run.server.log()
    tokens = tokens_in(served, window.start, window.end, args.tpot_ms)
    truth = {entry["request_id"]: entry for entry in served}
    errors = [
        (ttft - (truth[rid]["first_write"] - truth[rid]["received"])) * 1000.0
        for rid, ttft in ttfts.items()
        if rid in truth
        and "first_write" in truth[rid]
        and window.start <= truth[rid]["received"] < window.end
    ]
    pairs = list(zip(window.before, window.after, strict=True))
    return Outcome(
        case=run.case,
        pinned=run.pinned,
        tokens=tokens,
        requests=sum(1 for e in served if window.start <= e["received"] < window.end),
        failed=failed,
        cpu_s=sum(sum(b) - sum(a) for a, b in pairs),
        system_s=sum(b[1] - a[1] for a, b in pairs),
        master_cpu_s=window.master_cpu_s,
        errors_ms=errors,
        window_s=window.end - window.start,
    )


def start_processes(
    case: Case,
    server: StreamServer,
    workdir: Path,
    results: Path,
    core: int | None,
    env: dict,
    args: argparse.Namespace,
    run_time_s: float,
) -> tuple[list[subprocess.Popen], subprocess.Popen | None]:
    """The load generator's processes (a fleet's workers), and a fleet's master; Locust's
    run time `run_time_s`."""
    if case.kind in ("loop", "client"):
        command = [
            sys.executable, str(Path(__file__).resolve()), "--bare", case.kind, server.url,
            str(case.users), str(args.seconds), str(workdir / "ttft.json"),
        ]  # fmt: skip
        return [spawn(command, workdir, workdir / "bare.log", core, env)], None
    common = [
        "--headless", "-u", str(case.users), "-r", str(case.users), "-t", f"{run_time_s:g}s",
        "--host", server.url, "--kv-results", str(results), "--only-summary",
    ]  # fmt: skip
    if case.kind == "locust":
        command = locust_command([*case.locust_args, *common])
        return [spawn(command, workdir, workdir / "locust.log", core, env)], None
    port = free_port()
    master = spawn(
        locust_command(
            [*case.locust_args, "--master", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", str(port), "--expect-workers", "2", *common]
        ),
        workdir, workdir / "master.log", core, env,
    )  # fmt: skip
    workers = [
        spawn(
            locust_command(
                [
                    *case.locust_args,
                    "--worker",
                    "--master-host",
                    "127.0.0.1",
                    "--master-port",
                    str(port),
                ]
            ),
            workdir,
            workdir / f"worker{i}.log",
            core,
            env,
        )  # fmt: skip
        for i in range(2)
    ]
    return workers, master


def wait_started(
    case: Case,
    processes: list[subprocess.Popen],
    master: subprocess.Popen | None,
    workdir: Path,
    results: Path,
) -> float:
    """When load started (monotonic): the run directory opened, or the bare process ready."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if case.kind in ("loop", "client"):
            if "READY" in (workdir / "bare.log").read_text():
                return time.monotonic()
        elif results.exists() and run_dirs(results):
            return time.monotonic()
        if any(p.poll() is not None for p in [*processes, *([master] if master else [])]):
            break
        time.sleep(0.02)
    logs = "\n".join(p.read_text()[-1500:] for p in workdir.glob("*.log"))
    raise RuntimeError(f"{case.name}: load did not start\n{logs}")


def client_ttfts(case: Case, workdir: Path, results: Path) -> tuple[dict[str, float], int]:
    if case.kind in ("loop", "client"):
        return json.loads((workdir / "ttft.json").read_text()), 0
    (run,) = run_dirs(results)
    with open(run / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    ok = {r["request_id"]: float(r["ttft_ms"]) / 1000.0 for r in rows if r["ok"] == "1"}
    failed = sum(1 for r in rows if r["ok"] != "1" and r["failure"] != "cancelled")
    return ok, failed


def tokens_in(served: list[dict], start: float, end: float, tpot_ms: float = TPOT_MS) -> int:
    """Tokens the server wrote in [start, end): token i at first_write + i x TPOT."""
    tpot = tpot_ms / 1000.0
    total = 0
    for entry in served:
        first, last = entry.get("first_write"), entry.get("last_write")
        if first is None or last is None:
            continue
        n = round((last - first) / tpot) + 1
        lo = max(0, int((start - first) / tpot + 0.999999))
        hi = min(n - 1, int((end - first) / tpot - 1e-9))
        total += max(0, hi - lo + 1)
    return total


# --- the cases and the table ----------------------------------------------------------


def cases(args: argparse.Namespace, base: Path) -> list[Case]:
    config = base / "scenarios.yaml"
    config.write_text(SCENARIO_CONFIG)
    basic = ["-f", str(BASIC_LOCUSTFILE)]
    chosen: list[Case] = []
    for users in args.users:
        chosen.append(Case("loop", users, "loop"))
        chosen.append(Case("client", users, "client"))
        chosen.append(Case("fixed", users, "locust", basic))
        if args.fixed_long:
            chosen.append(Case("fixed-long", users, "locust", ["-f", str(FIXED_LONG_LOCUSTFILE)]))
    for class_name in args.scenarios:
        scenario_args = ["-f", str(REPO / "locustfiles"), "--kv-config", str(config), class_name]
        chosen.append(Case(class_name, args.users[0], "locust", scenario_args))
    if args.fleet:
        chosen.append(Case("fleet", args.users[0], "fleet", basic))
    return chosen


def ratio_to_loop(o: Outcome, floor: Outcome | None) -> float | None:
    """µs/token over the loop's; where both ran beside a fixed prompt, through those:
    (o ÷ its fixed) ÷ (loop ÷ its fixed), each ratio taken within one window."""
    if floor is None:
        return None
    if o.beside is not None and floor.beside is not None:
        return (o.us_per_token / o.beside.us_per_token) / (
            floor.us_per_token / floor.beside.us_per_token
        )
    return o.us_per_token / floor.us_per_token


def ratio_to_fixed(o: Outcome, fixed: Outcome | None) -> float | None:
    """µs/token over the fixed prompt's: the one beside it if any, else the round's."""
    reference = o.beside or fixed
    return o.us_per_token / reference.us_per_token if reference else None


def p99_over_fixed(o: Outcome, fixed: Outcome | None) -> float | None:
    reference = o.beside or fixed
    if reference is None or not o.errors_ms or not reference.errors_ms:
        return None
    return percentile(o.errors_ms, 0.99) - percentile(reference.errors_ms, 0.99)


def print_row(o: Outcome, loop: dict[tuple[int, bool], Outcome]) -> None:
    to_loop = ratio_to_loop(o, loop.get((o.case.users, o.pinned)))
    master = (
        f"{o.master_cpu_s / (o.cpu_s / 2):.1%}" if o.master_cpu_s is not None and o.cpu_s else "-"
    )
    errors = o.errors_ms or [float("nan")]
    print(
        f"| {o.case.name} | {o.case.users} | {'pinned' if o.pinned else 'unpinned'} "
        f"| {o.requests} | {o.failed} | {o.tokens} | {o.cpu_s / o.window_s:.2f} "
        f"| {o.us_per_token:.1f} | {o.kernel_share:.0%} | {_fmt(to_loop)} "
        f"| {_fmt(ratio_to_fixed(o, None))} "
        f"| {statistics.median(errors):.2f} | {percentile(errors, 0.99):.2f} | {master} |",
        flush=True,
    )


def run_cases(args: argparse.Namespace, base: Path) -> None:
    print(
        "| case | users | pinning | requests in window | failed | tokens in window "
        "| cores | µs CPU/token | in kernel | ratio to loop | ratio to fixed beside "
        "| TTFT err p50 ms | p99 ms | master / one worker CPU |"
    )
    print("| --- | ---: | --- |" + " ---: |" * 11)
    rounds: list[list[Outcome]] = []
    for number in range(args.rounds):
        where = base / f"round-{number + 1}" if args.rounds > 1 else base
        where.mkdir(exist_ok=True)
        loop: dict[tuple[int, bool], Outcome] = {}
        outcomes: list[Outcome] = []
        for pinned in args.pinning:
            chosen = cases(args, where)
            for case in chosen:
                if not args.paired:
                    ran = [run_case(case, pinned, args, where)]
                elif case.name == "fixed":
                    continue  # it runs beside every other case
                else:
                    ran = run_beside_fixed(case, chosen, pinned, args, where)
                if case.kind == "loop":
                    loop[(case.users, pinned)] = ran[0]
                for outcome in ran:
                    print_row(outcome, loop)
                outcomes.extend(ran)
        rounds.append(outcomes)
    if args.rounds > 1:
        print_medians(rounds)


def run_beside_fixed(
    case: Case, chosen: list[Case], pinned: bool, args: argparse.Namespace, base: Path
) -> list[Outcome]:
    """`case` and the fixed prompt at the same time (--paired): its outcome, `beside` the
    fixed prompt's, then the fixed prompt's (named "fixed" beside the loop, the round's
    fixed-prompt row; "fixed beside <case>" otherwise)."""
    (fixed,) = [c for c in chosen if c.name == "fixed" and c.users == case.users]
    name = "fixed" if case.kind == "loop" else f"fixed beside {case.name}"
    companion = Case(name, fixed.users, fixed.kind, fixed.locust_args)
    outcome, beside = run_together([case, companion], pinned, args, base)
    outcome.beside = beside
    return [outcome, beside]


def print_medians(rounds: list[list[Outcome]]) -> None:
    """Each case's median over the rounds; ratios and differences are taken within a round
    (against the loop and the fixed prompt of the same round, or of the same window where
    they ran beside it) and then their median, so a machine that drifts between rounds
    moves both sides of each ratio together."""
    print(
        f"\nMedians over {len(rounds)} rounds (ratios and differences within each round):\n\n"
        "| case | users | pinning | µs CPU/token | in kernel | ratio to loop | ratio to fixed "
        "| TTFT err p50 ms | p99 ms | p99 − fixed's p99 ms |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    per_case: dict[tuple[str, int, bool], list[tuple[Outcome, Outcome | None, Outcome | None]]]
    per_case = {}
    for outcomes in rounds:
        by_key = {(o.case.name, o.case.users, o.pinned): o for o in outcomes}
        for o in outcomes:
            loop = by_key.get(("loop", o.case.users, o.pinned))
            fixed = by_key.get(("fixed", o.case.users, o.pinned))
            per_case.setdefault((o.case.name, o.case.users, o.pinned), []).append((o, loop, fixed))
    for (name, users, pinned), entries in per_case.items():
        us = statistics.median(o.us_per_token for o, _, _ in entries)
        kernel = statistics.median(o.kernel_share for o, _, _ in entries)
        to_loop = _median_of(ratio_to_loop(o, lo) for o, lo, _ in entries)
        to_fixed = _median_of(ratio_to_fixed(o, f) for o, _, f in entries)
        p50 = statistics.median(statistics.median(o.errors_ms or [math.nan]) for o, _, _ in entries)
        p99 = statistics.median(percentile(o.errors_ms or [math.nan], 0.99) for o, _, _ in entries)
        over = _median_of(p99_over_fixed(o, f) for o, _, f in entries)
        print(
            f"| {name} | {users} | {'pinned' if pinned else 'unpinned'} | {us:.1f} | {kernel:.0%} "
            f"| {to_loop} | {to_fixed} | {p50:.2f} | {p99:.2f} | {over} |",
            flush=True,
        )


def _fmt(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _median_of(values: Iterable[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.median(present):.2f}" if present else "-"


# --- the master's ceiling -------------------------------------------------------------


def run_ceiling(args: argparse.Namespace, base: Path) -> None:
    locustfile = SYNTHETIC_LOCUSTFILE
    users_per_worker = 10
    print(
        "| records/s asked | records/s received | master cores | master µs/record "
        "| worker cores (each) | held on a worker, max | late records | lost workers "
        "| run closed, s after the end | rows = records, no duplicate |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for rate in args.rates:
        workdir = base / f"ceiling-{rate}"
        workdir.mkdir()
        results = workdir / "results"
        env = {
            **os.environ,
            **QUIET,
            "PYTHONUNBUFFERED": "1",
            "KV_BENCH_RATE_PER_USER": str(rate / (2 * users_per_worker)),
            "KV_BENCH_SINK_US": str(args.sink_us),
        }
        if args.kvswarm_lib:
            env["PYTHONPATH"] = f"{args.kvswarm_lib}:{REPO}"
        if args.exporter:
            env["KVSWARM_EXPORTER_PORT"] = str(free_port())
        case = Case("ceiling", 2 * users_per_worker, "fleet", ["-f", str(locustfile)])
        server = start_stream_server(workdir)
        try:
            workers, master = start_processes(
                case, server, workdir, results, None, env, args, args.seconds
            )
            started = wait_started(case, workers, master, workdir, results)
            time.sleep(args.warmup)
            t0, m0 = time.time(), process_cpu_s(master.pid)
            w0 = [process_cpu_s(w.pid) for w in workers]
            time.sleep(max(0.0, started + args.seconds - STOP_MARGIN_S - time.monotonic()))
            t1, m1 = time.time(), process_cpu_s(master.pid)
            w1 = [process_cpu_s(w.pid) for w in workers]
            closed_after_s = wait_closed(master, workers, t1)
        finally:
            server.stop()
        if closed_after_s is None:
            busy = f"master still busy {CLOSE_TIMEOUT_S:g} s after the end: killed"
            cores = (m1 - m0) / (t1 - t0)
            print(f"| {rate} | - | {cores:.2f} | - | - | - | - | - | {busy} | - |")
            continue
        (run,) = run_dirs(results)
        meta = json.loads((run / "run.json").read_text())
        with open(run / "requests.csv", newline="") as handle:
            rows = [(r["request_id"], float(r["start_unix_s"])) for r in csv.DictReader(handle)]
        received = sum(1 for _, s in rows if t0 <= s < t1) / (t1 - t0)
        master_cores = (m1 - m0) / (t1 - t0)
        worker_cores = statistics.mean(b - a for a, b in zip(w0, w1, strict=True)) / (t1 - t0)
        shipped = meta["fleet"]["workers"].values()
        held = max((w.get("held_max_records", 0) for w in shipped), default=0)
        exact = len(rows) == len({rid for rid, _ in rows}) == sum(w["records"] for w in shipped)
        print(
            f"| {rate} | {received:.0f} | {master_cores:.2f} "
            f"| {master_cores / received * 1e6:.1f} | {worker_cores:.2f} | {held} "
            f"| {meta['fleet']['late_records']} | {len(meta['fleet']['lost_workers'])} "
            f"| {closed_after_s:.1f} | {'yes' if exact else 'NO'} ({len(rows)}) |",
            flush=True,
        )


CLOSE_TIMEOUT_S = 90.0


def wait_closed(
    master: subprocess.Popen, workers: list[subprocess.Popen], end: float
) -> float | None:
    """Seconds after `end` (Unix time) the fleet exited; None (all killed) when the master
    was still busy `CLOSE_TIMEOUT_S` later."""
    try:
        for process in [master, *workers]:
            process.wait(timeout=max(1.0, end + CLOSE_TIMEOUT_S - time.time()))
    except subprocess.TimeoutExpired:
        for process in [master, *workers]:
            if process.poll() is None:
                process.kill()
                process.wait()
        return None
    return time.time() - end


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--bare":
        kind, url, users, seconds, out = sys.argv[2:7]
        bare_main(kind, url, int(users), float(seconds), Path(out))
        return
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--users", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), help="user classes")
    parser.add_argument("--no-fleet", dest="fleet", action="store_false")
    parser.add_argument(
        "--no-fixed-long", dest="fixed_long", action="store_false",
        help="leave out the fixed prompt as long as ColdStartUser's",
    )  # fmt: skip
    parser.add_argument(
        "--long-chars", type=int, default=27_800,
        help="the fixed-long prompt's length (160000: LongContextHighReuseUser's order)",
    )  # fmt: skip
    parser.add_argument(
        "--pinning", nargs="+", default=["unpinned", "pinned"], choices=["unpinned", "pinned"]
    )
    parser.add_argument("--seconds", type=float, default=14.0, help="run time of each case")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run every case this many times, round after round, and add a table of medians",
    )  # fmt: skip
    parser.add_argument("--warmup", type=float, default=4.0, help="left out of the window")
    parser.add_argument(
        "--paired", action="store_true",
        help="run every case at the same time as the fixed prompt (their ratio taken in one "
        "window, on the same cores), not one after the other",
    )  # fmt: skip
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    parser.add_argument(
        "--full-server",
        action="store_true",
        help="the ground-truth server logs every prompt whole and looks for fault markers "
        "(before: ~2.5 ms of its loop per 160-kB prompt); default: its --lean",
    )
    parser.add_argument(
        "--tpot-ms", type=float, default=TPOT_MS,
        help="the server's time per output token (e.g. 40 at 200 users: 50 users' token rate)",
    )  # fmt: skip
    parser.add_argument("--kvswarm-lib", default="", help="another kvswarm's lib/ folder")
    parser.add_argument("--ceiling", action="store_true", help="measure the master's ceiling")
    parser.add_argument("--rates", type=int, nargs="+", default=[2000, 4000, 8000])
    parser.add_argument(
        "--exporter", action="store_true", help="ceiling: the master serves the exporter"
    )
    parser.add_argument(
        "--sink-us", type=float, default=0.0, help="ceiling: CPU µs a master sink burns per record"
    )
    parser.add_argument("--keep", action="store_true", help="keep the runs' files in /tmp")
    args = parser.parse_args()
    args.pinning = [p == "pinned" for p in args.pinning]
    print(
        f"{os.cpu_count()} cores; server TTFT {TTFT_MS:g} ms, TPOT {args.tpot_ms:g} ms, "
        f"{args.tokens} tokens/stream; {args.seconds:g} s per case, window from "
        f"{args.warmup:g} s to {args.seconds - STOP_MARGIN_S:g} s; kvswarm "
        f"{args.kvswarm_lib or 'this checkout'}; load average before: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}\n"
    )
    base = Path(tempfile.mkdtemp(prefix="kvswarm-bench-locust-"))
    try:
        if args.ceiling:
            run_ceiling(args, base)
        else:
            run_cases(args, base)
    finally:
        if args.keep:
            print(f"\nfiles kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
