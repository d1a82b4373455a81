"""kvswarm: Locust-based load testing for LLM serving stacks that reuse KV cache."""

from __future__ import annotations

__version__ = "0.1.0"
