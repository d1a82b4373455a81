"""Every kvswarm scenario in one locustfile, shipped inside the package.

`kvswarm demo` runs it, and `locust -f` takes its path (`kvswarm.locustfile.__file__`), so
it works from any directory. The repository's locustfiles/ hold one scenario per file.
"""

from kvswarm.scenarios import (
    BatchProcessingUser,
    CodeGenerationUser,
    ColdStartUser,
    LongContextHighReuseUser,
    MultiTurnConversationUser,
)

__all__ = [
    "BatchProcessingUser",
    "CodeGenerationUser",
    "ColdStartUser",
    "LongContextHighReuseUser",
    "MultiTurnConversationUser",
]
