"""`cold_start`: every prompt unique from its first tokens, the no-reuse baseline.

A prompt is the request's tag (a 12-letter digest first, so no two prompts share their first
16-token block), then a request to summarise a report drawn for this request alone,
`unique_tokens` long in all (default 4000). `reuse_ratio` must be 0.

The report is drawn from the counted sentence bank (`kvswarm.workloads.bank`): exact in
length with no count per request. Where the sizer's counts do not add up, it is generated
and counted whole instead (one /tokenize call per request with a server sizer).
"""

from __future__ import annotations

from kvswarm.config import ScenarioConfig
from kvswarm.errors import ConfigError
from kvswarm.tokens import Fitted
from kvswarm.workloads import text
from kvswarm.workloads.bank import CountedBank
from kvswarm.workloads.registry import register_workload
from kvswarm.workloads.request import PromptRequest
from kvswarm.workloads.workload import RequestIdentity, Workload


@register_workload(
    "cold_start",
    defaults=ScenarioConfig(
        type="cold_start",
        reuse_ratio=0.0,
        pool_size=1,
        shared_tokens_min=0,
        shared_tokens_max=0,
        unique_tokens=4000,
    ),
)
class ColdStartWorkload(Workload):
    @classmethod
    def check_shape(cls, scenario: str, config: ScenarioConfig, tag_tokens: int) -> None:
        if config.reuse_ratio != 0.0:
            raise ConfigError(
                f"scenarios.{scenario}.reuse_ratio: must be 0 (every cold-start prompt "
                f"is unique), got {config.reuse_ratio}"
            )

    @classmethod
    def prompt_bound(cls, config: ScenarioConfig, tag_tokens: int) -> tuple[int, str]:
        return max(config.unique_tokens, tag_tokens), "unique_tokens"

    def prepare(self) -> None:
        self.material.counted_bank()

    def _next(self) -> PromptRequest:
        identity = self._identity()
        bank = self.material.counted_bank()
        if bank is None:
            # All of it is unique, so a remote sizer verifies it (one /tokenize call).
            fitted = self._unique_text(
                identity, text.report_request, self.config.unique_tokens, "\n", verify=True
            )
        else:
            fitted = self._drawn(identity, bank)
        return PromptRequest(
            scenario=self.context.scenario,
            request_id=identity.request_id,
            messages=({"role": "user", "content": fitted.text},),
            prompt=fitted.text,
            max_tokens=self.context.max_tokens,
            prompt_tokens_target=self.config.unique_tokens,
            prompt_tokens_sized=fitted.tokens,
        )

    def _drawn(self, identity: RequestIdentity, bank: CountedBank) -> Fitted:
        """Tag, the request's standing words, then the bank's sentences to the target."""
        head = identity.tag + "\n" + text.REPORT_REQUEST
        head_tokens = self._tag_tokens(identity, "\n")
        head_tokens += self.material.text_tokens(text.REPORT_REQUEST)
        body, body_tokens = bank.draw(identity.rng, self.config.unique_tokens - head_tokens)
        return Fitted(head + body, head_tokens + body_tokens)
