"""What a model is, read from it and its config: its language-model config, heads and head dimensions, layers and
the attention module of each, the device its inputs go to, and whether this library can analyse it (the one
place every other module asks; nothing here changes a model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel


# ------------------------------------------------------------------------------------------------------- config
def text_config(config: Any) -> Any:
    """The language-model part of ``config``: ``config.get_text_config()`` where it exists, else ``config``.

    A model may be passed for its config (``model.config``): the one helper for both.
    """
    if callable(getattr(config, "parameters", None)) and hasattr(config, "config"):  # a model, not a config
        config = config.config
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def is_mla(config: Any) -> bool:
    """Whether the config is multi-head latent attention (DeepSeek's MLA: ``kv_lora_rank`` set)."""
    return bool(getattr(config, "kv_lora_rank", None))


def n_heads(config: Any) -> int:
    """Query heads (``num_attention_heads``)."""
    return int(config.num_attention_heads)


def n_kv_heads(config: Any) -> int:
    """Key/value heads (``num_key_value_heads``; ``num_attention_heads`` when absent)."""
    return int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)


def head_dim(config: Any) -> int:
    """One head's dimension (``head_dim``, else ``hidden_size // num_attention_heads``)."""
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def head_dims(config: Any) -> tuple[int, int]:
    """``(d_qk, d_v)``: the dimension of each query/key head and of each value head.

    Standard attention: ``(d_h, d_h)`` with ``d_h = head_dim`` (or ``hidden_size // num_attention_heads``).
    MLA (``kv_lora_rank`` set): ``(qk_nope_head_dim + qk_rope_head_dim, v_head_dim)``, e.g. (192, 128) for
    DeepSeek-V3. (transformers' DeepSeek configs set ``head_dim`` to the RoPE part only, so it is not used there.)
    """
    config = text_config(config)
    if is_mla(config):
        return int(config.qk_nope_head_dim + config.qk_rope_head_dim), int(config.v_head_dim)
    d = head_dim(config)
    return d, d


# Families whose attention goes through AttentionInterface (transformers 5.x), for error messages.
SUPPORTED_FAMILIES = (
    "Llama/SmolLM2, Qwen2/Qwen3, Mistral, Mixtral, Gemma 1-3, Phi/Phi-3, OLMo, Granite, GPT-2, GPT-NeoX, OPT, "
    "BERT/RoBERTa/DistilBERT/ELECTRA/ModernBERT"
)


class UnsupportedModelError(TypeError):
    """The model's attention does not run through transformers' ``AttentionInterface``."""


def unsupported(model: nn.Module, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{type(model).__name__} cannot be analysed: {why}. attnsparse-widget swaps the attention function through "
        f"transformers' AttentionInterface, which this model class does not use. Families that work: "
        f"{SUPPORTED_FAMILIES}."
    )


# ---------------------------------------------------------------------------------------------- model structure
def layer_stack(model: nn.Module) -> nn.ModuleList | None:
    """The model's list of transformer blocks (``model.model.layers``, ``transformer.h``, ``encoder.layer``...)."""
    n = num_layers(model)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    return None


def num_layers(model: nn.Module) -> int:
    config = text_config(model)
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise unsupported(model, "its config has no num_hidden_layers")


def layer_indexer(model: nn.Module) -> Callable[[nn.Module], int]:
    """A function mapping an attention module (as passed to the attention function) to its layer index."""
    stack = layer_stack(model)
    index: dict[int, int] = {}
    if stack is not None:
        for i, block in enumerate(stack):
            for sub in block.modules():
                index[id(sub)] = i

    def layer_of(module: nn.Module) -> int:
        found = index.get(id(module))
        if found is not None:
            return found
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int):
            return idx
        raise unsupported(model, "an attention module could not be matched to a layer")

    return layer_of


# ------------------------------------------------------------------------------------------------------ support
def check_supported(model: nn.Module) -> None:
    """Raise :class:`UnsupportedModelError` for models that do not route attention through the interface."""
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"model must be a transformers PreTrainedModel (or a hub id / local path / (model, tokenizer) tuple), "
            f"got {type(model).__name__}"
        )
    if not type(model)._can_set_attn_implementation():
        raise unsupported(model, "its attention classes do not call ALL_ATTENTION_FUNCTIONS")
    if getattr(text_config(model), "reorder_and_upcast_attn", False):
        raise unsupported(model, "config.reorder_and_upcast_attn=True takes GPT-2's private attention path")
    if getattr(model.config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{type(model).__name__} is an encoder-decoder model (self-attention in two stacks plus cross-attention); "
            f"attnsparse-widget analyses one stack of self-attention: use a decoder-only model, or the encoder on its "
            f"own (e.g. T5EncoderModel.from_pretrained(...), or BartModel(...).get_encoder() saved and loaded as a "
            f"model)"
        )
    if not _dispatched(model) and any(p.device.type == "meta" for p in model.parameters()):
        raise ValueError(
            f"{type(model).__name__} has weights on the 'meta' device (a model skeleton without its weights, e.g. "
            f"built under torch.device('meta') or init_empty_weights()); load real weights first, e.g. "
            f"from_pretrained(...), or load_checkpoint_and_dispatch(...) from accelerate"
        )


def _dispatched(model: nn.Module) -> bool:
    """Whether accelerate placed the model (a device map, CPU or disk offloading): its hooks bring the weights."""
    return bool(getattr(model, "hf_device_map", None)) or any(hasattr(m, "_hf_hook") for m in model.modules())


def input_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: its parameters' device, or, for a model dispatched by accelerate (device map,
    offloading to CPU or disk, where parameters may sit on 'meta' until used), the device it executes on."""
    execution_device = getattr(getattr(model, "_hf_hook", None), "execution_device", None)
    if execution_device is not None:
        return torch.device(execution_device)
    for place in (getattr(model, "hf_device_map", None) or {}).values():
        if place not in ("disk", "meta"):
            return torch.device(place)
    for param in model.parameters():
        if param.device.type != "meta":
            return param.device
    return torch.device("cpu")
