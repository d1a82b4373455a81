"""`batch_processing`: long shared instruction templates applied to short inputs.

Shared prefix: an instruction template (translation, summarisation, classification or
extraction: guidelines, glossary, worked examples) of `shared_tokens_min`..
`shared_tokens_max` tokens (defaults 2k-4k) as the system message; unique part: the input
to process (`unique_tokens`, default 256) as the user message. Default reuse 95%.
"""

from __future__ import annotations

from kvswarm.config import ScenarioConfig
from kvswarm.workloads import text
from kvswarm.workloads.prefixed import PrefixWorkload
from kvswarm.workloads.registry import register_workload


@register_workload(
    "batch_processing",
    defaults=ScenarioConfig(
        type="batch_processing",
        reuse_ratio=0.95,
        pool_size=3,
        shared_tokens_min=2000,
        shared_tokens_max=4000,
        unique_tokens=256,
    ),
)
class BatchProcessingWorkload(PrefixWorkload):
    family = "tmpl"
    shared_text = staticmethod(text.instructions)
    unique_text = staticmethod(text.batch_input)
    layout = "system"
