"""Coding assistant: an 8k-token codebase context shared by 80% of requests."""

from kvswarm.scenarios import CodeGenerationUser

__all__ = ["CodeGenerationUser"]
