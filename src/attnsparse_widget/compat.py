"""Shims over transformers versions: the name of the KV-cache argument and output (``past_key_values`` in
transformers 5.0, ``cache`` in later 5.x), read without tripping deprecation warnings."""

from __future__ import annotations

import functools
import inspect
from typing import Any

from transformers import DynamicCache, PreTrainedModel
from transformers.utils import ModelOutput

CACHE_NAMES = ("cache", "past_key_values")  # later transformers 5.x name the KV cache `cache`


def cache_kwarg(model: PreTrainedModel, cache: Any) -> dict[str, Any]:
    """``{"cache": cache}`` or ``{"past_key_values": cache}``, whichever the model's forward takes."""
    cls: type = type(model)  # plain `type`: mypy wrongly finds type[PreTrainedModel] unhashable (lru_cache key)
    return {_cache_name(cls): cache}


@functools.cache
def _cache_name(cls: type[PreTrainedModel]) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward pass returned (under either name). Read through the output's own keys: in later
    transformers 5.x, reading the old name ``past_key_values`` in any way logs a deprecation warning."""
    for name in out.keys():
        if name in CACHE_NAMES:
            return out[name]
    return None


def without_cache(out: ModelOutput) -> ModelOutput:
    """A copy of a model output without its KV cache (a ``ModelOutput`` keeps a field set to None in its dict)."""
    return type(out)(**{name: value for name, value in out.items() if name not in CACHE_NAMES})


def cache_of(keys_values: list[tuple[Any, Any]]) -> DynamicCache:
    """A KV cache holding, per layer, these keys and values ``[B, H_kv, T, D]`` (full-attention layers)."""
    return DynamicCache(ddp_cache_data=keys_values)
