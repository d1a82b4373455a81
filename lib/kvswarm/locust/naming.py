"""How a scenario's Locust user class is named: `long_context_high_reuse` ->
`LongContextHighReuseUser`. The class picker, `locust ... ClassName` and the demo use it."""

from __future__ import annotations

__all__ = ["user_class_name"]


def user_class_name(scenario: str) -> str:
    """The Locust user class name of a scenario (CamelCase of its name, then `User`)."""
    return "".join(part[:1].upper() + part[1:] for part in scenario.split("_") if part) + "User"
