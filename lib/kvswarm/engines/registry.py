"""The registry of engine profiles, by name (`vllm`, `sim`, `llama.cpp`, `sglang`, `openai`).

A `kvswarm.registry.Registry` of `EngineProfile`s; each engine's module registers its
profile with `register_engine`, and `kvswarm.engines` imports every such module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from kvswarm.engines.profile import EngineProfile
from kvswarm.registry import Registry

__all__ = ["ENGINES", "engine_profile", "register_engine"]

P = TypeVar("P", bound=EngineProfile)

_PROFILES: Registry[EngineProfile] = Registry("engine", sort_listing=True)

# Read-only view of every registered profile, by name.
ENGINES: Mapping[str, EngineProfile] = _PROFILES.view


def register_engine(profile: P) -> P:
    """Register `profile` under its name; returns it (so a module can write `X = register(...)`).

    ValueError if another, different profile has that name.
    """
    _PROFILES.register(profile.name, profile)
    return profile


def engine_profile(name: str) -> EngineProfile:
    """The profile called `name`.

    `UnknownNameError` (a `ConfigError` and a `ValueError`) naming the known ones if there
    is none.
    """
    return _PROFILES.get(name)
