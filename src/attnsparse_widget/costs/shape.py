"""The dimensions of one attention layer that its costs depend on (:class:`ModelShape`), read from a transformers
config object or a plain dict (a preset, :mod:`.presets`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# config keys, with the older names some families use (GPT-2's n_head, n_embd, n_layer)
_ALIASES = {
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer"),
}


def _text_config(config: Any) -> Any:
    if callable(getattr(config, "parameters", None)) and hasattr(config, "config"):  # a model, not a config
        config = config.config
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _get(config: Any, key: str, default: Any = None) -> Any:
    for name in _ALIASES.get(key, (key,)):
        value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if value is not None:
            return value
    return default


@dataclass(frozen=True)
class ModelShape:
    """One attention layer's dimensions: ``hidden`` (d), ``heads`` (n_h), ``kv_heads`` (n_kv), ``d_qk`` and
    ``d_v`` per head, ``layers``, whether it rotates queries and keys (``rope``), and for MLA the ranks
    ``q_lora_rank`` (0: no query compression), ``kv_lora_rank`` (L), ``qk_nope`` (P), ``qk_rope`` (R) and
    ``v_head`` (V); for DSA its indexer's heads, head size and top-k."""

    name: str
    hidden: int
    heads: int
    kv_heads: int
    d_qk: int
    d_v: int
    layers: int
    rope: bool = True
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope: int = 0
    qk_rope: int = 0
    v_head: int = 0
    index_heads: int = 0
    index_head_dim: int = 0
    index_topk: int = 0

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def dsa(self) -> bool:
        return self.index_topk > 0

    @property
    def variant(self) -> str:
        """MHA, GQA, MQA, MLA or DSA (MLA with DeepSeek's sparse attention indexer)."""
        if self.dsa:
            return "DSA"
        if self.mla:
            return "MLA"
        if self.kv_heads == self.heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else "GQA"


def model_shape(config: Any) -> ModelShape:
    """The :class:`ModelShape` of a transformers config (or model), a dict with the same keys, or a shape."""
    if isinstance(config, ModelShape):
        return config
    config = _text_config(config)
    heads, hidden = _get(config, "num_attention_heads"), _get(config, "hidden_size")
    layers = _get(config, "num_hidden_layers")
    missing = [
        k for k, v in (("num_attention_heads", heads), ("hidden_size", hidden), ("num_hidden_layers", layers)) if not v
    ]
    if missing:
        raise ValueError(f"the config has no {', '.join(missing)}: pass a transformers config or a dict with them")
    heads, hidden, layers = int(heads), int(hidden), int(layers)
    kv_heads = int(_get(config, "num_key_value_heads", heads))
    name = str(_get(config, "name", None) or _get(config, "_name_or_path", None) or _get(config, "model_type", "model"))
    kv_lora = int(_get(config, "kv_lora_rank", 0) or 0)
    rope = _get(config, "model_type") != "gpt2" and not _get(config, "n_positions")
    if kv_lora:
        nope, rope_dim, v = (int(_get(config, k)) for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"))
        return ModelShape(
            name, hidden, heads, heads, nope + rope_dim, v, layers, True,
            q_lora_rank=int(_get(config, "q_lora_rank", 0) or 0), kv_lora_rank=kv_lora, qk_nope=nope,
            qk_rope=rope_dim, v_head=v, index_heads=int(_get(config, "index_n_heads", 0) or 0),
            index_head_dim=int(_get(config, "index_head_dim", 0) or 0),
            index_topk=int(_get(config, "index_topk", 0) or 0),
        )  # fmt: skip
    d = int(_get(config, "head_dim", None) or hidden // heads)
    return ModelShape(name, hidden, heads, kv_heads, d, d, layers, rope)
