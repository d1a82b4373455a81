"""RAG / document analysis: 16k-32k-token documents, 90% of requests reuse one."""

from kvswarm.scenarios import LongContextHighReuseUser

__all__ = ["LongContextHighReuseUser"]
