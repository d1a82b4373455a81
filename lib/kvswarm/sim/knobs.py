"""Simulator knobs: dataclass fields that are also command-line flags.

A knob is declared once, as a field of a frozen options dataclass with its default, help
text and bounds; `kvswarm sim` turns every knob into a flag (`prefill_ms_per_token` ->
`--prefill-ms-per-token`, with the group's prefix where it has one) and `check_knobs`
validates an instance, naming the flag in its one-line error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kvswarm.errors import KvswarmError


def knob(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    type: type | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field carrying what the CLI and validation need to know about it."""
    metadata = {
        "help": help,
        "ge": ge,
        "gt": gt,
        "le": le,
        "type": type,
        "choices": choices,
        "metavar": metavar,
    }
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field, prefix: str = "") -> str:
    """The command-line flag of a knob: `--<prefix><name with dashes>`."""
    return "--" + prefix + field.name.replace("_", "-")


def knob_type(field: dataclasses.Field) -> type:
    """The Python type a knob's flag parses to."""
    declared = field.metadata.get("type")
    if declared is not None:
        return declared
    return type(field.default)


def check_knobs(options: Any, prefix: str = "") -> None:
    """Raise a KvswarmError naming the flag of the first knob out of its bounds."""
    for field in dataclasses.fields(options):
        if "help" not in field.metadata:
            continue
        value = getattr(options, field.name)
        problem = _problem(field.metadata, value)
        if problem:
            raise KvswarmError(f"{flag_name(field, prefix)}: {problem}, got {value!r}")


def _problem(metadata: Any, value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    choices = metadata.get("choices")
    if choices and value not in choices:
        return "must be one of " + ", ".join(choices)
    if not isinstance(value, int | float):
        return None
    if metadata.get("ge") is not None and value < metadata["ge"]:
        return f"must be >= {metadata['ge']}"
    if metadata.get("gt") is not None and value <= metadata["gt"]:
        return f"must be > {metadata['gt']}"
    if metadata.get("le") is not None and value > metadata["le"]:
        return f"must be <= {metadata['le']}"
    return None
