"""`kvswarm sim`: run the simulated serving stack until Ctrl-C or SIGTERM.

Every field of `SimOptions`, `CostModel` and `FaultConfig` is a flag (fault knobs with a
`--fault-` prefix), with its default in `--help`. `options_to_argv` is the inverse of
`options_from_args`, so a `SimOptions` can be handed to a child process.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event

from kvswarm.errors import KvswarmError
from kvswarm.sim.faults import FaultConfig
from kvswarm.sim.knobs import flag_name, knob_type
from kvswarm.sim.model import CostModel
from kvswarm.sim.options import SimOptions
from kvswarm.sim.stack import Stack, StackInfo

DESCRIPTION = (
    "Run kvswarm's simulated serving stack: an OpenAI-compatible server with vLLM's metric "
    "names that models a prefix cache, prefill and decode cost, a request queue and (in "
    "pd_disaggregated mode) a prefiller, KV transfer through a Mooncake or in-process store, "
    "and a decoder behind a proxy. It is a SIMULATOR: no model runs and its latencies come "
    "from the cost model below, so its numbers say nothing about real serving performance. "
    "Use it to try kvswarm without a GPU and to test the load tester itself."
)

# (group, dataclass, flag prefix): the SimOptions fields first, then the nested knobs.
_GROUPS: tuple[tuple[str, type, str], ...] = (
    ("sim", SimOptions, ""),
    ("cost", CostModel, ""),
    ("fault", FaultConfig, "fault-"),
)
_GROUP_TITLES = {
    "sim": "stack",
    "cost": "cost model (per engine)",
    "fault": "fault injection (at the entry point)",
}


def _knob_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def _metavar(field: dataclasses.Field) -> str:
    if field.metadata.get("metavar"):
        return field.metadata["metavar"]
    return {int: "N", float: "X", str: "TEXT"}.get(knob_type(field), "VALUE")


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Add a flag for every knob of SimOptions, CostModel and FaultConfig."""
    for group_name, cls, prefix in _GROUPS:
        group = parser.add_argument_group(_GROUP_TITLES[group_name])
        for field in _knob_fields(cls):
            group.add_argument(
                flag_name(field, prefix),
                dest=f"{group_name}__{field.name}",
                type=knob_type(field),
                default=field.default,
                choices=field.metadata.get("choices"),
                help=field.metadata["help"],
                metavar=None if field.metadata.get("choices") else _metavar(field),
            )
    parser.add_argument(
        "--print-json",
        action="store_true",
        help="print one JSON line with the stack's URLs once it is ready, instead of the banner",
    )


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """The validated SimOptions of parsed arguments (KvswarmError if out of bounds)."""
    values: dict[str, dict[str, Any]] = {name: {} for name, _, _ in _GROUPS}
    for group_name, cls, _ in _GROUPS:
        for field in _knob_fields(cls):
            values[group_name][field.name] = getattr(args, f"{group_name}__{field.name}")
    return SimOptions(
        **values["sim"],
        cost=CostModel(**values["cost"]),
        faults=FaultConfig(**values["fault"]),
    )


def options_to_argv(options: SimOptions) -> list[str]:
    """Flags that reproduce `options` (only those that differ from the defaults)."""
    argv: list[str] = []
    for group_name, cls, prefix in _GROUPS:
        instance = {"sim": options, "cost": options.cost, "fault": options.faults}[group_name]
        for field in _knob_fields(cls):
            value = getattr(instance, field.name)
            if value != field.default and value is not None:
                argv += [flag_name(field, prefix), str(value)]
    return argv


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the simulated serving stack (a simulator: no model, no GPU)",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_sim_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the stack, print where it is, serve until SIGINT/SIGTERM, stop cleanly."""
    options = options_from_args(args)
    stack = Stack(options)
    stopping = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stopping.set) for sig in (signal.SIGINT, signal.SIGTERM)]
    try:
        info = stack.start()
        if args.print_json:
            print(info.to_json(), flush=True)
        else:
            print(banner(info), flush=True)
        stopping.wait()
    finally:
        stack.stop()
        for handler in handlers:
            handler.cancel()
    if not args.print_json:
        print("kvswarm sim: stopped", flush=True)
    return 0


def banner(info: StackInfo) -> str:
    """What `kvswarm sim` prints at start: what it is and where it answers."""
    lines = [
        "kvswarm sim: simulated serving stack (a simulator: no model runs, latencies come "
        "from a cost model)",
        f"  mode          {info.mode}",
        f"  OpenAI API    {info.base_url}",
    ]
    for index, (name, url) in enumerate(info.metrics_urls.items()):
        label = "metrics" if index == 0 else ""
        lines.append(f"  {label:<13} {name}: {url}")
    if info.kv_store:
        store = info.kv_store
        if info.mooncake_master_rpc:
            store += f" (mooncake_master RPC {info.mooncake_master_rpc}, started by the sim)"
        lines.append(f"  KV store      {store}")
    if info.ground_truth:
        lines.append(f"  ground truth  {info.ground_truth}")
    lines.append("Stop with Ctrl-C (or SIGTERM).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kvswarm.sim`: the same as `kvswarm sim`."""
    parser = argparse.ArgumentParser(
        prog="python -m kvswarm.sim",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_sim_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KvswarmError as exc:
        print(f"kvswarm: {exc}", file=sys.stderr)
        return 2
