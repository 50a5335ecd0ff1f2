"""Tiny randomly initialised models of several families, built from configs (real code paths, no download)."""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

VOCAB = 96
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=512,
)


def configs() -> dict[str, object]:
    return {
        "gpt2": GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=128, bos_token_id=1, eos_token_id=2
        ),
        "llama": LlamaConfig(**COMMON, num_key_value_heads=2),
        "qwen2": Qwen2Config(
            **COMMON,
            num_key_value_heads=2,
            use_sliding_window=True,
            sliding_window=5,
            max_window_layers=1,
            layer_types=["full_attention", "sliding_attention", "sliding_attention"],
        ),
        "mistral": MistralConfig(**COMMON, num_key_value_heads=1, sliding_window=5),
        "gemma": GemmaConfig(**COMMON, num_key_value_heads=2, head_dim=8),
        "gemma2": Gemma2Config(
            **COMMON,
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=5,
            attn_logit_softcapping=5.0,
            query_pre_attn_scalar=8,
        ),
    }


def build(name: str, attn_implementation: str = "sdpa", n_layers: int | None = None) -> torch.nn.Module:
    config = configs()[name]
    if n_layers is not None:
        config.num_hidden_layers = n_layers
        if types := getattr(config, "layer_types", None):  # cut, or repeated over the added layers
            config.layer_types = [types[i % len(types)] for i in range(n_layers)]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    return model.eval()


class ToyTokenizer:
    """Maps characters to ids; enough for compare() on tiny models."""

    eos_token_id = None

    def __call__(self, text: str, return_tensors: str = "pt"):
        ids = torch.tensor([[3 + (ord(c) % (VOCAB - 3)) for c in text]])
        return type("Enc", (), {"input_ids": ids})()

    def decode(self, ids, **_kw) -> str:
        return "".join(chr(96 + (i % 26)) for i in ids)
