"""The simulated stack's capacity: concurrent streams, streamed tokens/s and send lateness.

Starts `kvswarm sim` (non_disaggregated) in a child process pinned to one core, with a
cost model that gives every stream one token per `--tpot-ms` whatever the batch, and
drives it from load-generator processes pinned to the other core(s): `--streams`
keep-alive connections, each streaming chat completions back to back (starts spread over
`--ramp-s`). Over the `--seconds` after warm-up it reports:

- tokens/s the clients received, and the streams open at the end of the window,
- the sim's CPU use (user+system time / wall time, from /proc, one core = 100%),
- the sim's send lateness (socket write returned minus scheduled send time) p50/p99/max,
  from its `kvswarm_sim_send_lateness_seconds` histogram (bucket upper bounds).

    .venv/bin/python bench/bench_sim.py --streams 500 --tpot-ms 25 --seconds 20

The sim is a simulator: these figures are about the simulator's own overhead, never
about real serving performance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from kvswarm.sim import CostModel, SimOptions, spawn_stack  # noqa: E402


def run_client(args: argparse.Namespace) -> None:
    """One load-generator process: `--streams` concurrent streams, JSON counts on stdout."""
    import gevent
    import httptools
    from gevent import socket

    host, port = args.client.split(":")
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "benchmark the simulator please"}],
            "max_tokens": args.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    marker = b'"delta":{"content":'
    counts = {"tokens": 0, "requests": 0, "errors": 0, "open": 0}
    window = {"start": None}
    # Streams go on a little past the window, so all are open when it is measured.
    stop_at = time.monotonic() + args.ramp_s + args.warmup_s + args.seconds + 2.0

    class Response:
        def __init__(self) -> None:
            self.done = False
            self.status = 0

        def on_body(self, data: bytes) -> None:
            if window["start"] is not None:
                counts["tokens"] += data.count(marker)

        def on_message_complete(self) -> None:
            self.done = True

    def stream_forever(index: int) -> None:
        gevent.sleep(args.ramp_s * index / args.streams)
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        counts["open"] += 1
        try:
            while time.monotonic() < stop_at:
                response = Response()
                parser = httptools.HttpResponseParser(response)
                sock.sendall(request)
                while not response.done:
                    data = sock.recv(65536)
                    if not data:
                        counts["errors"] += 1
                        return
                    parser.feed_data(data)
                if parser.get_status_code() != 200:
                    counts["errors"] += 1
                if window["start"] is not None:
                    counts["requests"] += 1
        finally:
            counts["open"] -= 1
            sock.close()

    greenlets = [gevent.spawn(stream_forever, i) for i in range(args.streams)]
    gevent.sleep(args.ramp_s + args.warmup_s)
    window["start"] = time.monotonic()
    print(json.dumps({"event": "window_start"}), flush=True)
    gevent.sleep(args.seconds)
    elapsed = time.monotonic() - window["start"]
    snapshot = {**counts, "seconds": elapsed}
    print(json.dumps(snapshot), flush=True)
    gevent.joinall(greenlets, timeout=args.max_tokens * args.tpot_ms / 1000 * 3 + 5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin_process(pid: int, cores: set[int]) -> None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cores)


def lateness_buckets(metrics_url: str) -> dict[float, float]:
    with urllib.request.urlopen(metrics_url) as response:
        text = response.read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith("kvswarm_sim_send_lateness_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    bounds = sorted(after)
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= q * total:
            return bound
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--tpot-ms", type=float, default=25.0)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--ramp-s", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--sim-log", help="append the sim's stderr to this file")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        return run_client(args)

    cores = sorted(os.sched_getaffinity(0))
    sim_core, client_cores = {cores[0]}, set(cores[1:] or cores)
    cost = CostModel(
        prefill_base_ms=1.0,
        prefill_ms_per_token=0.01,
        decode_base_ms=args.tpot_ms,
        decode_ms_per_seq=0.0,
        prefill_interference_ms=0.0,
        max_num_seqs=args.streams * 2,
        prefill_concurrency=args.streams,
    )
    with spawn_stack(SimOptions(cost=cost).with_free_ports(), log_path=args.sim_log) as sim:
        pin_process(sim.pid, sim_core)
        address = sim.root_url.removeprefix("http://")
        per_client = [args.streams // args.clients] * args.clients
        per_client[0] += args.streams - sum(per_client)
        clients = []
        for streams in per_client:
            command = [sys.executable, __file__, "--client", address, "--streams", str(streams)]
            for flag in ("tpot_ms", "max_tokens", "seconds", "warmup_s", "ramp_s"):
                command += ["--" + flag.replace("_", "-"), str(getattr(args, flag))]
            client = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            pin_process(client.pid, client_cores)
            clients.append(client)
        for client in clients:
            assert client.stdout is not None
            client.stdout.readline()  # window_start
        before, cpu_before, wall_before = (
            lateness_buckets(sim.metrics_urls["server"]),
            cpu_seconds(sim.pid),
            time.monotonic(),
        )
        reports = [json.loads(client.stdout.readline()) for client in clients]
        after, cpu_after, wall_after = (
            lateness_buckets(sim.metrics_urls["server"]),
            cpu_seconds(sim.pid),
            time.monotonic(),
        )
        for client in clients:
            client.wait()
    tokens = sum(r["tokens"] for r in reports)
    seconds = max(r["seconds"] for r in reports)
    result = {
        "streams_requested": args.streams,
        "streams_open": sum(r["open"] for r in reports),
        "tokens_per_s": round(tokens / seconds),
        "requests": sum(r["requests"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "sim_cpu_percent": round(100 * (cpu_after - cpu_before) / (wall_after - wall_before), 1),
        "lateness_p50_ms": quantile(before, after, 0.50) * 1000,
        "lateness_p99_ms": quantile(before, after, 0.99) * 1000,
        "lateness_p999_ms": quantile(before, after, 0.999) * 1000,
        "load_average": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
