"""`code_generation`: a coding assistant primed with a codebase.

Shared prefix: a Python codebase of `shared_tokens_min`..`shared_tokens_max` tokens
(default 8k) as the system message; unique part: a coding request (`unique_tokens`) as the
user message. Default reuse 80%.
"""

from __future__ import annotations

from kvswarm.config import ScenarioConfig
from kvswarm.workloads import text
from kvswarm.workloads.prefixed import PrefixWorkload
from kvswarm.workloads.registry import register_workload


@register_workload(
    "code_generation",
    defaults=ScenarioConfig(
        type="code_generation",
        reuse_ratio=0.8,
        pool_size=4,
        shared_tokens_min=8000,
        shared_tokens_max=8000,
        unique_tokens=128,
    ),
)
class CodeGenerationWorkload(PrefixWorkload):
    family = "code"
    shared_text = staticmethod(text.code)
    unique_text = staticmethod(text.coding_request)
    layout = "system"
