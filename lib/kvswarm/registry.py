"""One registry helper for every pluggable kind: items of one kind, by name.

Every pluggable kind registers through a `Registry`: engine profiles
(`kvswarm.engines.registry`), workload types (`kvswarm.workloads.registry`), and later
report formats, record sinks and load shapes. A kind's package owns one registry; adding
an item of that kind is one file that registers it when the package imports it:

    FORMATS: Registry[type[ReportFormat]] = Registry("report format")

    @FORMATS.register_as("markdown")
    class MarkdownReport(ReportFormat): ...

    FORMATS.get("html", where="--report")  # UnknownNameError listing the known formats

Names keep their registration order (`names()`, `items()`, `view`), so a package decides
the order users see by the order it imports its modules.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

from kvswarm.errors import ConfigError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(ConfigError, ValueError):
    """No item of the kind is registered under the name asked for.

    A `ConfigError`, so the CLI prints it in one line; also a `ValueError`, which is what
    the lookups raised before this helper existed.
    """


class Registry(Generic[T]):
    """Items of one kind, by name, in registration order.

    - `kind`: the kind in words ("engine", "workload type"), used in error messages;
    - `listing`: the word before the known names in an unknown-name error ("known");
    - `sort_listing`: list the known names sorted rather than in registration order.
    """

    def __init__(self, kind: str, *, listing: str = "known", sort_listing: bool = False) -> None:
        self.kind = kind
        self._listing = listing
        self._sort_listing = sort_listing
        self._items: dict[str, T] = {}
        self._view: Mapping[str, T] = MappingProxyType(self._items)

    def register(self, name: str, item: T) -> T:
        """Register `item` under `name`; returns it (so a module can write `X = register(...)`).

        Registering an equal item again under the same name is allowed (a module imported
        twice); a different one is a ValueError.
        """
        if name in self._items and self._items[name] != item:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def register_as(self, name: str) -> Callable[[T], T]:
        """Decorator form of `register`, for a class (or function) that is itself the item."""

        def decorate(item: T) -> T:
            return self.register(name, item)

        return decorate

    def get(self, name: str, where: str = "") -> T:
        """The item called `name`.

        `UnknownNameError` listing the known names if there is none, prefixed with
        `where: ` when given (the config key or option the name came from).
        """
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self._unknown(name, where)) from None

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._items)

    def items(self) -> ItemsView[str, T]:
        """Every (name, item) pair, in registration order."""
        return self._view.items()

    @property
    def view(self) -> Mapping[str, T]:
        """A read-only mapping of every item by name that follows later registrations."""
        return self._view

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self._items)!r})"

    def _unknown(self, name: str, where: str) -> str:
        names = sorted(self._items) if self._sort_listing else list(self._items)
        known = f"{self._listing}: {', '.join(names)}" if names else "none registered"
        prefix = f"{where}: " if where else ""
        return f"{prefix}unknown {self.kind} {name!r} ({known})"
