"""What attention costs, counted exactly from a model's config: pure arithmetic, no model runs here.

* :mod:`.sparsity`: what a mask's sparsity buys on one prefill (FLOPs, KV bytes, skippable tiles, the roofline of
  attention's operations);
* :mod:`.workload`: a batch of requests (:class:`Workload`) and what its heads compute: pairs, keys read,
  FlashAttention's tiles, paged KV blocks, the data-parallel split;
* :mod:`.ops`: every operation of one attention layer costed (:func:`op_costs`, :class:`OpCost`), MHA to DSA;
* :mod:`.totals`: a layer's and the model's totals, MLA's pipeline crossover;
* :mod:`.hardware`: the accelerators (A100, H100, B200) and their cited peaks; :mod:`.shape`: a config's
  dimensions; :mod:`.presets`: model configs as plain dicts.
"""

from ..introspect import head_dims, n_kv_heads, text_config
from .hardware import ACCELERATORS, DTYPE_BYTES, Accelerator
from .ops import PIPELINES, OpCost, Roofline, TensorSpec, op_costs
from .presets import PRESETS, preset
from .shape import ModelShape, model_shape
from .sparsity import (
    ATTENTION_OPS,
    allowed_pairs,
    attention_flops,
    attention_roofline,
    bound_by,
    budget_for_sparsity,
    budget_sparsity,
    kv_cache_bytes,
    kv_values_per_token_per_layer,
    projection_and_mlp_flops,
    ridge_crossings,
    skippable_tiles,
)
from .totals import Totals, layer_totals, mla_crossover, model_totals
from .workload import PagedKV, TileGrid, Workload, attention_pairs, dp_ranks, keys_read, paged_kv, tile_grid

__all__ = [
    "ACCELERATORS",
    "ATTENTION_OPS",
    "DTYPE_BYTES",
    "PIPELINES",
    "PRESETS",
    "Accelerator",
    "ModelShape",
    "OpCost",
    "PagedKV",
    "Roofline",
    "TensorSpec",
    "TileGrid",
    "Totals",
    "Workload",
    "allowed_pairs",
    "attention_flops",
    "attention_pairs",
    "attention_roofline",
    "bound_by",
    "budget_for_sparsity",
    "budget_sparsity",
    "dp_ranks",
    "head_dims",  # the model's shape, from introspect: part of what a cost is computed from
    "keys_read",
    "kv_cache_bytes",
    "kv_values_per_token_per_layer",
    "layer_totals",
    "mla_crossover",
    "model_shape",
    "model_totals",
    "n_kv_heads",
    "op_costs",
    "paged_kv",
    "preset",
    "projection_and_mlp_flops",
    "ridge_crossings",
    "skippable_tiles",
    "text_config",
    "tile_grid",
]
