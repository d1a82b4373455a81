"""A multi-host fleet: master, workers and target each in their own network namespace.

The test builds its own small network and removes it afterwards: one namespace holding a
bridge, and four "hosts" (`kvs-master-<id>`, `kvs-w1-<id>`, `kvs-w2-<id>`,
`kvs-target-<id>`), each joined to the bridge by a veth pair and given an address in
10.231.7.0/24. The namespaces have loopback and that subnet and nothing else — no default
route — so every byte between the processes crosses the veths, and nothing can leave
the namespaces the test created. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and `ip` from
iproute2 (scripts/setup-system.sh); skipped, saying why, where namespaces cannot be
created.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import REPO, load_requests, run_dirs

LOCUSTFILE = str(REPO / "tests" / "support" / "locustfile_basic.py")
SUBNET_PREFIX = "10.231.7"
PREFIX_LENGTH = 24
# Each host is a fresh namespace with ports of its own, so fixed ports cannot collide.
MASTER_PORT = 5557
TARGET_PORT = 8000
HOSTS = {"master": 1, "w1": 2, "w2": 3, "target": 4}
RUN_TIME = "6s"
PROCESS_TIMEOUT_S = 60


def ip(command: str) -> str:
    """Run `ip <command>` (words split on spaces); its stdout, or an error with its stderr."""
    completed = subprocess.run(["ip", *command.split()], capture_output=True, text=True)
    if completed.returncode != 0:
        raise subprocess.CalledProcessError(
            completed.returncode, f"ip {command}", completed.stdout, completed.stderr
        )
    return completed.stdout


@dataclass
class Network:
    """The test's namespaces: `hosts` maps a host name to its namespace and address."""

    bridge_namespace: str
    hosts: dict[str, tuple[str, str]]

    def namespace(self, host: str) -> str:
        return self.hosts[host][0]

    def address(self, host: str) -> str:
        return self.hosts[host][1]

    def namespaces(self) -> list[str]:
        return [namespace for namespace, _ in self.hosts.values()] + [self.bridge_namespace]

    def popen(self, host: str, command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
        """Start `command` inside `host`'s namespace, its output going to `log`."""
        with open(log, "w") as output:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(host), *command],
                cwd=cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def run(self, host: str, command: list[str], timeout_s: float = 30) -> str:
        completed = subprocess.run(
            ["ip", "netns", "exec", self.namespace(host), *command],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        )
        return completed.stdout


def _create_bridge_namespace(name: str) -> None:
    """The first namespace; skips the module if this machine cannot make one."""
    try:
        ip(f"netns add {name}")
    except FileNotFoundError:
        pytest.skip("`ip` (iproute2) is missing: run scripts/setup-system.sh")
    except subprocess.CalledProcessError as exc:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        pytest.skip(
            "cannot create network namespaces here (needs root with CAP_SYS_ADMIN and "
            f"CAP_NET_ADMIN): `ip netns add` said: {exc.stderr.strip()}"
        )
    ip(f"-n {name} link add br0 type bridge")
    ip(f"-n {name} link set br0 up")


def _add_host(network: Network, host: str, octet: int, suffix: str) -> None:
    """A namespace joined to the bridge by a veth pair made inside the bridge namespace,
    so no link ever appears in the namespace the tests run in."""
    namespace = f"kvs-{host}-{suffix}"
    address = f"{SUBNET_PREFIX}.{octet}"
    ip(f"netns add {namespace}")
    network.hosts[host] = (namespace, address)
    bridge, port = network.bridge_namespace, f"to-{host}"
    ip(f"-n {bridge} link add {port} type veth peer name eth0 netns {namespace}")
    ip(f"-n {bridge} link set {port} master br0 up")
    ip(f"-n {namespace} addr add {address}/{PREFIX_LENGTH} dev eth0")
    ip(f"-n {namespace} link set eth0 up")
    ip(f"-n {namespace} link set lo up")


def _delete(network: Network) -> None:
    """Remove the namespaces (and with them their veths and the bridge), first ending
    any process still inside one: all of them were started by this test."""
    for namespace in network.namespaces():
        pids = subprocess.run(
            ["ip", "netns", "pids", namespace], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    suffix = uuid.uuid4().hex[:8]
    network = Network(bridge_namespace=f"kvs-br-{suffix}", hosts={})
    _create_bridge_namespace(network.bridge_namespace)
    try:
        for host, octet in HOSTS.items():
            _add_host(network, host, octet, suffix)
        yield network
    finally:
        _delete(network)


@dataclass
class Target:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
        return [json.loads(line) for line in lines if line]


@pytest.fixture(scope="module")
def target(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """tests/support/streamserver.py listening on the target host's veth address only."""
    directory = tmp_path_factory.mktemp("target")
    log_path = directory / "server-log.jsonl"
    address = network.address("target")
    process = subprocess.Popen(
        [
            "ip", "netns", "exec", network.namespace("target"),
            sys.executable, "-m", "tests.support.streamserver", "--bind", address,
            "--port", str(TARGET_PORT), "--ttft-ms", "50", "--tpot-ms", "10",
            "--log", str(log_path),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("PORT "), f"stream server did not start: {line!r}"
        yield Target(process, f"http://{address}:{TARGET_PORT}", log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


WAIT_IDLE = """
import json, sys, time, urllib.request
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    with urllib.request.urlopen(sys.argv[1] + "/stats", timeout=5) as response:
        if not json.loads(response.read())["in_flight"]:
            break
    time.sleep(0.05)
"""


@dataclass
class FleetRun:
    master_returncode: int
    worker_returncodes: list[int]
    master_output: str
    run: Path
    rows: list[dict[str, str]]
    served: list[dict[str, Any]]


@pytest.fixture(scope="module")
def fleet_run(
    network: Network, target: Target, tmp_path_factory: pytest.TempPathFactory
) -> FleetRun:
    """A headless run: master in its namespace, one worker in each worker namespace."""
    directory = tmp_path_factory.mktemp("fleet")
    results = directory / "results"
    master_address = network.address("master")
    locust = [sys.executable, "-m", "locust", "-f", LOCUSTFILE]
    processes: list[subprocess.Popen] = []
    try:
        master = network.popen(
            "master",
            [
                *locust, "--master", "--master-bind-host", master_address,
                "--master-bind-port", str(MASTER_PORT), "--headless", "--expect-workers", "2",
                "-u", "20", "-r", "20", "-t", RUN_TIME, "--host", target.url,
                "--kv-results", str(results),
            ],
            directory / "master.log",
            directory,
        )  # fmt: skip
        processes.append(master)
        worker_args = [
            *locust, "--worker", "--master-host", master_address,
            "--master-port", str(MASTER_PORT), "--host", target.url,
        ]  # fmt: skip
        for worker in ("w1", "w2"):
            log = directory / f"{worker}.log"
            processes.append(network.popen(worker, worker_args, log, directory))
        returncodes = [process.wait(timeout=PROCESS_TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    network.run("target", [sys.executable, "-c", WAIT_IDLE, target.url])
    (run,) = run_dirs(results)
    with open(run / "requests.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return FleetRun(
        master_returncode=returncodes[0],
        worker_returncodes=returncodes[1:],
        master_output=(directory / "master.log").read_text(),
        run=run,
        rows=rows,
        served=load_requests(target.log()),
    )


def test_fleet_across_namespaces_completes(fleet_run: FleetRun) -> None:
    assert fleet_run.master_returncode == 0, fleet_run.master_output[-3000:]
    assert fleet_run.worker_returncodes == [0, 0]
    meta = json.loads((fleet_run.run / "run.json").read_text())
    assert meta["status"] == "finished"
    assert meta["fleet"]["lost_workers"] == []


def test_master_has_one_row_per_served_request_from_both_workers(fleet_run: FleetRun) -> None:
    rows, served = fleet_run.rows, fleet_run.served
    assert len(served) > 0
    assert sorted(r["request_id"] for r in rows) == sorted(s["request_id"] for s in served)
    assert len({r["worker_id"] for r in rows}) == 2
    assert sum(r["ok"] == "1" for r in rows) > 0


def test_target_was_reached_from_each_workers_veth_address(
    network: Network, fleet_run: FleetRun
) -> None:
    worker_of = {r["request_id"]: r["worker_id"] for r in fleet_run.rows}
    peers: dict[str, set[str]] = {}
    for entry in fleet_run.served:
        peers.setdefault(worker_of[entry["request_id"]], set()).add(entry["peer"])
    # One worker, one address; the two workers, the two worker namespaces' addresses.
    assert sorted(len(addresses) for addresses in peers.values()) == [1, 1]
    assert set.union(*peers.values()) == {network.address("w1"), network.address("w2")}


def test_namespaces_route_only_the_test_subnet(network: Network) -> None:
    for host in HOSTS:
        routes = ip(f"-n {network.namespace(host)} -4 route show").splitlines()
        assert [route.split()[0] for route in routes] == [f"{SUBNET_PREFIX}.0/{PREFIX_LENGTH}"]


def test_worker_loopback_does_not_reach_the_target(network: Network, target: Target) -> None:
    # Loopback is per namespace: the target's port is open on its veth address only.
    probe = (
        "import socket, sys\n"
        "for address in sys.argv[1:]:\n"
        "    try:\n"
        f"        socket.create_connection((address, {TARGET_PORT}), timeout=5).close()\n"
        "        print(address, 'open')\n"
        "    except ConnectionRefusedError:\n"
        "        print(address, 'refused')\n"
    )
    output = network.run(
        "w1", [sys.executable, "-c", probe, "127.0.0.1", network.address("target")]
    )
    assert output.split("\n")[:2] == ["127.0.0.1 refused", f"{network.address('target')} open"]
