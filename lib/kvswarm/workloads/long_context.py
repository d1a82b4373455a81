"""`long_context_high_reuse`: questions about long documents (RAG, document analysis).

Shared prefix: a document of `shared_tokens_min`..`shared_tokens_max` tokens (defaults
16k-32k) from a pool of `pool_size`; unique part: a question about it (`unique_tokens`).
One user message holds both. Default reuse 90%.
"""

from __future__ import annotations

from kvswarm.config import ScenarioConfig
from kvswarm.workloads import text
from kvswarm.workloads.prefixed import PrefixWorkload
from kvswarm.workloads.registry import register_workload


@register_workload(
    "long_context_high_reuse",
    defaults=ScenarioConfig(
        type="long_context_high_reuse",
        reuse_ratio=0.9,
        pool_size=4,
        shared_tokens_min=16000,
        shared_tokens_max=32000,
        unique_tokens=64,
    ),
)
class LongContextWorkload(PrefixWorkload):
    family = "doc"
    shared_text = staticmethod(text.document)
    unique_text = staticmethod(text.question)
    layout = "user"
