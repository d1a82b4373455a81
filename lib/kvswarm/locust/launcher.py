"""`kvswarm locust ...`: Locust's own command line, with kvswarm's options known from the start.

Locust prints `--help` before it imports the locustfiles (`parse_locustfile_option` in
`locust/argument_parser.py` builds the full parser as soon as it sees `-h`), so
`locust -f locustfiles --help` cannot list the `--kv-*` options that a kvswarm locustfile
registers when it is imported. This launcher imports kvswarm's plugin first, which
registers them on Locust's `init_command_line_parser` event exactly as a locustfile's
import would (once per process: the locustfile's later import finds the module loaded),
then runs Locust's `main()` with the arguments unchanged. Everything else is Locust's:
`kvswarm locust -f locustfiles --headless -u 20 ...` is `locust -f locustfiles ...`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["register", "run_locust"]

# The verb's parser treats no argument as an option (no argument starts with this
# character), so every argument after `locust`, `--help` included, reaches Locust intact.
_NO_OPTIONS = "\N{NO-BREAK SPACE}"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `locust` verb to `kvswarm`'s command line."""
    parser = subparsers.add_parser(
        "locust",
        help="run Locust with kvswarm's options listed in its --help",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
        prefix_chars=_NO_OPTIONS,
    )
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="Locust's arguments")
    parser.set_defaults(func=lambda args: run_locust(args.locust_args))


def run_locust(locust_args: Sequence[str]) -> int:
    """Run Locust's command line with `locust_args`, kvswarm's plugin loaded first.

    Returns Locust's exit code where Locust returns rather than exits."""
    # Imported here, not at the top: importing Locust monkey-patches the standard library
    # for gevent, which the other `kvswarm` verbs must not get.
    from locust.main import main as locust_main

    import kvswarm.locust.plugin  # noqa: F401  (registers the --kv-* options)

    # Locust reads sys.argv itself, and kvswarm's locustfile loader recognises the locust
    # command by its name.
    sys.argv = ["locust", *locust_args]
    return locust_main() or 0


if __name__ == "__main__":
    sys.exit(run_locust(sys.argv[1:]))
