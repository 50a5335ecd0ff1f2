"""Model configs as plain dicts, for costing without a download: the keys are transformers' config keys (so any
config object or dict with them works the same). Values from each model's published ``config.json``."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "SmolLM2-135M": dict(  # the embedded default model (HuggingFaceTB/SmolLM2-135M-Instruct)
        model_type="llama", hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
        num_hidden_layers=30, intermediate_size=1536, vocab_size=49152, rope_theta=100000.0,
    ),
    "GPT-2 small": dict(  # openai-community/gpt2: learned positions, no RoPE
        model_type="gpt2", hidden_size=768, num_attention_heads=12, num_hidden_layers=12, n_positions=1024,
        intermediate_size=3072, vocab_size=50257,
    ),
    "Llama-3.1-8B": dict(  # meta-llama/Llama-3.1-8B
        model_type="llama", hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        num_hidden_layers=32, intermediate_size=14336, vocab_size=128256, rope_theta=500000.0,
    ),
    "Mistral-7B": dict(  # mistralai/Mistral-7B-v0.1 (its own 4096-token sliding window is not modelled)
        model_type="mistral", hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        num_hidden_layers=32, intermediate_size=14336, vocab_size=32000, rope_theta=10000.0,
    ),
    "Qwen2.5-7B": dict(  # Qwen/Qwen2.5-7B
        model_type="qwen2", hidden_size=3584, num_attention_heads=28, num_key_value_heads=4, head_dim=128,
        num_hidden_layers=28, intermediate_size=18944, vocab_size=152064, rope_theta=1000000.0,
    ),
    "Gemma-2-9B": dict(  # google/gemma-2-9b (head_dim 256 > hidden/heads; alternating local layers not modelled)
        model_type="gemma2", hidden_size=3584, num_attention_heads=16, num_key_value_heads=8, head_dim=256,
        num_hidden_layers=42, intermediate_size=14336, vocab_size=256000, rope_theta=10000.0,
    ),
    "DeepSeek-V3": dict(  # deepseek-ai/DeepSeek-V3: MLA
        model_type="deepseek_v3", hidden_size=7168, num_attention_heads=128, num_key_value_heads=128,
        num_hidden_layers=61, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, intermediate_size=18432, vocab_size=129280, rope_theta=10000.0,
    ),
    "DeepSeek-V3.2": dict(  # deepseek-ai/DeepSeek-V3.2-Exp: MLA + DSA's lightning indexer, top-2048
        model_type="deepseek_v32", hidden_size=7168, num_attention_heads=128, num_key_value_heads=128,
        num_hidden_layers=61, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
        v_head_dim=128, intermediate_size=18432, vocab_size=129280, rope_theta=10000.0, index_n_heads=64,
        index_head_dim=128, index_topk=2048,
    ),
}  # fmt: skip


def preset(name: str) -> dict[str, Any]:
    """A copy of ``PRESETS[name]`` with its name, with a clear error for an unknown one."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return {"name": name, **PRESETS[name]}
