"""`trace`: the requests of a Mooncake-format trace (kvswarm.workloads.trace_file).

A scenario of type `trace` names the file and how to read it:

    scenarios:
      conversation:
        type: trace
        path: traces/conversation_trace.jsonl   # relative to the working directory
        block_tokens: 512      # tokens per hash id (Mooncake's)
        time_scale: 1.0        # a row is due at timestamp * time_scale
        start_s: 0             # replay [start_s, end_s) of the scaled timeline
        end_s: 60
        max_rows: 1000

Row `i`'s request (`request_for(row)`) is its `text_input`/`messages` verbatim, or else
text made from its hash ids (`BlockText`: equal ids, equal blocks, on every worker with
the same seed), exactly `input_length` tokens with a local tokenizer; `max_tokens` is its
`output_length`. `expected_hit` and `prefix_tokens` are what an infinite prefix cache
could serve of it (kvswarm.workloads.trace_hits) when the rows are sent in trace order.

Sending rows on the trace's schedule, dealt across a fleet, is the replay user's job
(issue 16 item 3). `next_request()`, as a plain scenario user calls it, hands out the
selected rows in order from a cursor shared by every user of the process, and starts
again after the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvswarm.config import ScenarioConfig
from kvswarm.errors import ConfigError, KvswarmError
from kvswarm.tokens import TokenSizer
from kvswarm.workloads.registry import register_workload
from kvswarm.workloads.request import PromptRequest
from kvswarm.workloads.trace_blocks import BlockText
from kvswarm.workloads.trace_file import Trace, TraceRow, load_trace, select_rows
from kvswarm.workloads.trace_hits import infinite_cache_hits
from kvswarm.workloads.workload import CHAT_TEMPLATE_ALLOWANCE, Workload, WorkloadContext

__all__ = ["ScenarioTrace", "TraceWorkload", "scenario_trace"]


@dataclass(frozen=True)
class ScenarioTrace:
    """The rows a trace scenario replays, and what an infinite prefix cache could serve of
    each (`hit_tokens[i]` for `rows[i]`, the rows sent in order)."""

    trace: Trace
    rows: tuple[TraceRow, ...]
    hit_tokens: tuple[int, ...]


_TRACES: dict[tuple[object, ...], ScenarioTrace] = {}


def scenario_trace(scenario: str, config: ScenarioConfig) -> ScenarioTrace:
    """The rows of a trace scenario, read once per process (`ConfigError` naming the key)."""
    if config.path is None:
        raise ConfigError(f"scenarios.{scenario}.path: required for a scenario of type 'trace'")
    path = Path(config.path)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = None
    key = (str(path.resolve()), stamp, config.block_tokens, config.time_scale,
           config.start_s, config.end_s, config.max_rows)  # fmt: skip
    cached = _TRACES.get(key)
    if cached is None:
        cached = _TRACES[key] = _read(scenario, config)
    return cached


def _read(scenario: str, config: ScenarioConfig) -> ScenarioTrace:
    try:
        trace = load_trace(config.path, config.block_tokens)
    except KvswarmError as exc:
        raise ConfigError(f"scenarios.{scenario}.path: {exc}") from None
    rows = select_rows(
        trace,
        start_s=config.start_s,
        end_s=config.end_s,
        max_rows=config.max_rows,
        time_scale=config.time_scale,
    )
    if not rows:
        raise ConfigError(
            f"scenarios.{scenario}.start_s: no row of {config.path} in "
            f"[{config.start_s}, {config.end_s}) s at time_scale {config.time_scale}"
        )
    hits = infinite_cache_hits(rows, config.block_tokens)
    return ScenarioTrace(trace, rows, tuple(int(h) for h in hits))


_BLOCKS: dict[tuple[int, int, int], BlockText] = {}


def block_text(sizer: TokenSizer, block_tokens: int, seed: int) -> BlockText:
    """The process-wide `BlockText` of a sizer, block size and seed (created on first use)."""
    key = (id(sizer), block_tokens, seed)
    blocks = _BLOCKS.get(key)
    if blocks is None or blocks.fitter.sizer is not sizer:
        blocks = _BLOCKS[key] = BlockText(sizer, block_tokens, seed=seed)
    return blocks


@register_workload("trace", defaults=ScenarioConfig(type="trace"), builtin=False)
class TraceWorkload(Workload):
    """The requests of a trace's rows (see the module doc)."""

    exact_output = True

    def __init__(self, context: WorkloadContext) -> None:
        super().__init__(context)
        self.trace = scenario_trace(context.scenario, context.config)
        self.blocks = block_text(self.material.sizer, context.config.block_tokens, context.seed)
        # Block text yields as the scenarios' text does (the Locust glue's pause).
        self.blocks.fitter.pause = self.fitter.pause

    @classmethod
    def check(
        cls,
        scenario: str,
        config: ScenarioConfig,
        *,
        tag_tokens: int,
        max_model_len: int,
        max_tokens: int,
    ) -> None:
        """Every row's prompt + `output_length` must fit the context window: the first that
        does not is a `ConfigError` saying how many do not."""
        rows = scenario_trace(scenario, config).rows
        needed = np.fromiter(
            (r.input_length + CHAT_TEMPLATE_ALLOWANCE + max(1, r.output_length) for r in rows),
            dtype=np.int64,
            count=len(rows),
        )
        over = np.flatnonzero(needed > max_model_len)
        if over.size:
            row = rows[int(over[0])]
            raise ConfigError(
                f"scenarios.{scenario}.path: {config.path}: line {row.line}: input_length "
                f"{row.input_length} + {CHAT_TEMPLATE_ALLOWANCE} for the chat template + "
                f"output_length {row.output_length} do not fit max_model_len {max_model_len} "
                f"({over.size} of {len(rows)} rows do not; narrow start_s/end_s/max_rows)"
            )

    @classmethod
    def prompt_bound(cls, config: ScenarioConfig, tag_tokens: int) -> tuple[int, str]:
        rows = scenario_trace("trace", config).rows
        return max(r.input_length for r in rows), "path"

    def replay_offsets_s(self) -> list[float] | None:
        """Row `p` is due `(timestamp_p - timestamp_0) * time_scale` after the replay's
        start; None for a trace without timestamps (its rows go when a user is ready)."""
        rows = self.trace.rows
        if rows[0].timestamp_ms is None:
            return None
        first, scale = rows[0].timestamp_ms, self.context.config.time_scale
        return [(row.timestamp_ms - first) * scale / 1000.0 for row in rows]  # type: ignore[operator]

    def request_at(self, position: int) -> PromptRequest:
        return self.request_for(position)

    def row_index(self, position: int) -> int:
        """The file position of the row at `position` of the selection (its `index`)."""
        return self.trace.rows[position].index

    def request_for(self, position: int) -> PromptRequest:
        """The request of `self.trace.rows[position]` (not counted in `stats`)."""
        row = self.trace.rows[position]
        hit_tokens = self.trace.hit_tokens[position]
        messages, prompt, sized = self._prompt(row)
        return PromptRequest(
            scenario=self.context.scenario,
            request_id=f"row-{row.index}",
            messages=messages,
            prompt=prompt,
            max_tokens=max(1, row.output_length),
            prefix_id=f"block-{row.hash_ids[0]}" if hit_tokens else "",
            prefix_tokens=hit_tokens,
            expected_hit=hit_tokens > 0,
            prompt_tokens_target=row.input_length or sized,
            prompt_tokens_sized=sized,
            conversation_id=row.session_id or "",
        )

    def _prompt(self, row: TraceRow) -> tuple[tuple[dict[str, str], ...], str, int]:
        if row.messages is not None:
            prompt = "\n\n".join(m["content"] for m in row.messages)
            return row.messages, prompt, self.fitter.count(prompt, "trace text")
        if row.text_input is not None:
            text = row.text_input
            return ({"role": "user", "content": text},), text, self.fitter.count(text, "trace text")
        fitted = self.blocks.prompt(row.hash_ids, row.input_length)
        return ({"role": "user", "content": fitted.text},), fitted.text, fitted.tokens

    def _next(self) -> PromptRequest:
        cursor = _CURSORS.get(self.context.scenario, 0)
        _CURSORS[self.context.scenario] = cursor + 1
        return self.request_for(cursor % len(self.trace.rows))


# Per scenario: the next row a plain scenario user of this process sends.
_CURSORS: dict[str, int] = {}
