"""What a kvswarm locustfile does when Locust loads it: scenario user classes from the config.

Locust imports locustfiles before it parses the whole command line, so the config that
decides which scenario classes exist is read here from the command line (`--kv-config`,
or `$KVSWARM_CONFIG`) with Locust's own parser. A bad config, or a user class named on
the command line that the config does not define, ends the process with one line naming
the problem (and the valid class names) and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kvswarm.config import load_config
from kvswarm.errors import KvswarmError
from kvswarm.locust.plugin import exit_with
from kvswarm.locust.scenarios import ScenarioUser, make_user_classes

__all__ = ["scenario_users"]


def scenario_users(module: str) -> dict[str, type[ScenarioUser]]:
    """The scenario user classes for a locustfile's globals (`module` is its `__name__`)."""
    options = _command_line_options()
    try:
        config = load_config(getattr(options, "kv_config", None) or None)
        classes = make_user_classes(config, module)
        _check_class_names(getattr(options, "user_classes", None) or [], classes)
    except KvswarmError as exc:
        exit_with(str(exc))
    return classes


def _command_line_options() -> Any:
    """Locust's parse of this process's command line, when it is the locust command."""
    if not _running_locust():
        return None
    from locust.argument_parser import get_parser

    try:
        options, _unknown = get_parser().parse_known_args(sys.argv[1:])
    except SystemExit:
        return None  # Locust reports its own parse errors, later and in its words
    return options


def _running_locust() -> bool:
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return program.name == "locust" or (
        program.name == "__main__.py" and program.parent.name == "locust"
    )


def _check_class_names(requested: list[str], classes: dict[str, Any]) -> None:
    unknown = [name for name in requested if name not in classes]
    if unknown:
        raise KvswarmError(
            f"no user class named {', '.join(unknown)}; the config's scenarios give: "
            f"{', '.join(classes)}"
        )
