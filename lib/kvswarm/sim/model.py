"""The cost model: how long a simulated engine takes to prefill, decode and move KV.

Pure arithmetic, no clocks. Defaults are shaped like a 7B model on one GPU (the suite's
Qwen2.5-7B): about 10k prefill tokens/s, 10 ms per output token alone, slower as the batch
grows, 56 KiB of KV per token (28 layers x 2 x 4 KV heads x 128 dims x 2 bytes). They are
plausible shapes for exercising a load tester, not measurements of any real server.

- prefill: `prefill_base_ms + uncached_tokens * prefill_ms_per_token`; cached prompt
  tokens cost nothing, so TTFT falls in proportion to the cached share of the prompt.
- decode: one output token every `decode_base_ms + decode_ms_per_seq * (running - 1)`
  milliseconds, plus `prefill_interference_ms` while the same engine is prefilling (prefill
  and decode share the GPU unless the deployment disaggregates them).
- KV transfer (PD mode): `kv_transfer_base_ms + tokens * kv_bytes_per_token / bandwidth`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvswarm.sim.knobs import check_knobs, knob


@dataclass(frozen=True)
class CostModel:
    """Timing and capacity knobs of one simulated engine (prefiller and decoder alike)."""

    prefill_base_ms: float = knob(5.0, "fixed cost of a prefill, in ms", ge=0)
    prefill_ms_per_token: float = knob(0.1, "prefill cost per uncached prompt token, ms", ge=0)
    decode_base_ms: float = knob(10.0, "time per output token with one running request, ms", ge=0)
    decode_ms_per_seq: float = knob(
        0.1, "extra time per output token for each other running request, ms", ge=0
    )
    prefill_interference_ms: float = knob(
        2.0, "extra time per output token while the same engine prefills, ms", ge=0
    )
    max_num_seqs: int = knob(256, "concurrent requests per engine; the rest wait in a queue", ge=1)
    prefill_concurrency: int = knob(1, "prompts an engine prefills at the same time", ge=1)
    block_size: int = knob(16, "tokens per prefix-cache block", ge=1)
    cache_blocks: int = knob(8192, "prefix-cache capacity per engine, in blocks", ge=0)
    max_model_len: int = knob(32768, "context length: prompt + max_tokens must fit", ge=2)
    kv_bytes_per_token: int = knob(57344, "KV-cache bytes per token (for transfer time)", ge=0)
    kv_bandwidth_gb_s: float = knob(10.0, "KV transfer bandwidth, GB/s (PD mode)", gt=0)
    kv_transfer_base_ms: float = knob(1.0, "fixed cost of one KV transfer, ms (PD mode)", ge=0)

    def __post_init__(self) -> None:
        check_knobs(self)

    def prefill_s(self, uncached_tokens: int) -> float:
        """Seconds to prefill `uncached_tokens` prompt tokens."""
        return (self.prefill_base_ms + uncached_tokens * self.prefill_ms_per_token) / 1000.0

    def tpot_s(self, running: int, prefilling: bool = False) -> float:
        """Seconds per output token with `running` requests on the engine."""
        ms = self.decode_base_ms + self.decode_ms_per_seq * max(0, running - 1)
        if prefilling:
            ms += self.prefill_interference_ms
        return ms / 1000.0

    def transfer_s(self, tokens: int) -> float:
        """Seconds to move the KV cache of `tokens` tokens from prefiller to decoder."""
        nbytes = tokens * self.kv_bytes_per_token
        return self.kv_transfer_base_ms / 1000.0 + nbytes / (self.kv_bandwidth_gb_s * 1e9)

    def kv_blocks(self, tokens: int) -> int:
        """Blocks of KV memory `tokens` tokens occupy (a partial block counts whole)."""
        return -(-tokens // self.block_size)
