"""The baseline: 0% reuse, every prompt unique from its first token."""

from kvswarm.scenarios import ColdStartUser

__all__ = ["ColdStartUser"]
