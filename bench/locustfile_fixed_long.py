"""The bench's `fixed-long` case: one fixed prompt as long as ColdStartUser's.

ColdStartUser's prompts are 4,000 tokens of the bench server (whitespace-separated words),
about 27,800 characters; this prompt is the same prose cut at that length, built once at
import and sent by every request. Set against `fixed` (a short prompt) it prices the
prompt's size in the client (encoding and sending it); set against ColdStartUser, what
building a unique prompt per request adds. `bench_locust.py --long-chars N` (the
variable KV_BENCH_LONG_CHARS) sets another length, e.g. LongContextHighReuseUser's.
"""

import os
import random

from locust import task

from kvswarm.locust.users import LLMUser
from kvswarm.workloads import text

PROMPT_CHARS = int(os.environ.get("KV_BENCH_LONG_CHARS", "27800"))


def _prompt(chars: int) -> str:
    pieces: list[str] = []
    have = 0
    for piece in text.report_request(random.Random(0)):
        if have >= chars:
            break
        pieces.append(piece)
        have += len(piece)
    return "".join(pieces)


PROMPT = _prompt(PROMPT_CHARS)


class FixedLongUser(LLMUser):
    scenario = "fixed_long"

    @task
    def ask(self) -> None:
        self.send(messages=[{"role": "user", "content": PROMPT}])
