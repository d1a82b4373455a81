"""`kvswarm <verb>`: the command line.

Each verb lives in the module that owns its concept and exposes
`register(subparsers) -> None`, which adds its parser and sets `func` (called with the
parsed arguments, returning an exit code). A `KvswarmError` anywhere becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kvswarm import __version__
from kvswarm.errors import KvswarmError

# Modules that contribute verbs, in the order `--help` lists them.
VERB_MODULES = (
    "kvswarm.demo",
    "kvswarm.matrix",
    "kvswarm.sim.cli",
    "kvswarm.llamacpp.cli",
    "kvswarm.vllm.cli",  # adds `vllm` under llamacpp.cli's `engine` verb
    "kvswarm.locust.launcher",
    "kvswarm.analysis.cli",
    "kvswarm.workloads.trace_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvswarm",
        description="Load tests for LLM serving stacks that reuse KV cache.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kvswarm {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="<verb>")
    for name in VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that verb is not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KvswarmError as exc:
        print(f"kvswarm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
