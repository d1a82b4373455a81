"""Translation / summarisation: large shared instruction templates, 95% reuse."""

from kvswarm.scenarios import BatchProcessingUser

__all__ = ["BatchProcessingUser"]
