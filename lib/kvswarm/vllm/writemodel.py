"""Write the tiny Qwen2 model directory; run by the vLLM venv's python, not kvswarm's.

    <vllm-venv>/bin/python writemodel.py SPEC_JSON TOKENIZER_JSON OUT_DIR

This file imports nothing from kvswarm: it runs where transformers and torch are (the
vLLM venv), while the vocabulary is trained by kvswarm beforehand (`tokenizer.json`,
from the llama.cpp harness's trainer). It writes a Hugging Face model directory with
`save_pretrained`: config, random bf16 weights drawn from the spec's seed, the tokenizer
and a ChatML chat template.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["write"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def write(spec: dict, tokenizer_json: Path, out: Path) -> None:
    """Write the model for `spec` (TinyQwenSpec's fields) into `out`."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=spec["context_length"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    vocab = len(tokenizer)
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["ffn_size"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        max_position_embeddings=spec["context_length"],
        max_window_layers=spec["layers"],
        use_sliding_window=False,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        torch_dtype="bfloat16",
    )
    torch.manual_seed(spec["seed"])
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


if __name__ == "__main__":
    spec_json, tokenizer_path, out_dir = sys.argv[1:4]
    write(json.loads(Path(spec_json).read_text()), Path(tokenizer_path), Path(out_dir))
