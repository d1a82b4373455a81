"""Which kvswarm plugin belongs to which Locust environment."""

from __future__ import annotations

from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from locust.env import Environment

from kvswarm.errors import KvswarmError

if TYPE_CHECKING:
    from kvswarm.locust.plugin import KvswarmPlugin

__all__ = ["bind", "plugin_of"]

_plugins: WeakKeyDictionary[Environment, KvswarmPlugin] = WeakKeyDictionary()


def bind(environment: Environment, plugin: KvswarmPlugin) -> None:
    _plugins[environment] = plugin


def plugin_of(environment: Environment) -> KvswarmPlugin:
    """The kvswarm plugin of a Locust environment (made by Locust's `init` event)."""
    try:
        return _plugins[environment]
    except KeyError:
        raise KvswarmError(
            "kvswarm is not initialised for this Locust environment: load a kvswarm "
            "locustfile (or import kvswarm.locust.plugin) before Locust's init event"
        ) from None
