"""The registry of engine profiles, by name (`vllm`, `sim`, `llama.cpp`, `sglang`, `openai`)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

from kvswarm.engines.profile import EngineProfile

__all__ = ["ENGINES", "engine_profile", "register_engine"]

P = TypeVar("P", bound=EngineProfile)

_PROFILES: dict[str, EngineProfile] = {}

# Read-only view of every registered profile, by name.
ENGINES: Mapping[str, EngineProfile] = MappingProxyType(_PROFILES)


def register_engine(profile: P) -> P:
    """Register `profile` under its name; returns it (so a module can write `X = register(...)`)."""
    if profile.name in _PROFILES and _PROFILES[profile.name] != profile:
        raise ValueError(f"engine {profile.name!r} is already registered")
    _PROFILES[profile.name] = profile
    return profile


def engine_profile(name: str) -> EngineProfile:
    """The profile called `name`; ValueError naming the known ones if there is none."""
    try:
        return _PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(_PROFILES))
        raise ValueError(f"unknown engine {name!r} (known: {known})") from None
