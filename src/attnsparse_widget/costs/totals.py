"""One layer's and the whole model's costs (:func:`layer_totals`, :func:`model_totals`) and where MLA's two
pipelines cross (:func:`mla_crossover`)."""

from __future__ import annotations

import math
from typing import Any, TypedDict

from .hardware import Accelerator, accelerator
from .ops import OpCost, busiest_rank, tp_heads
from .shape import ModelShape, model_shape
from .workload import Workload, paged_kv, rank_workload


class Totals(TypedDict):
    """Sums over a layer's ops (or all layers'), as one GPU (the busiest data-parallel rank, ``dp_rank``) runs
    them. ``kv_cache_bytes``: the cache that rank holds after the step (with ``page_size``: the blocks it
    allocated, ``kv_blocks`` of them, filled to ``kv_occupancy``). ``seconds``: the sum of the ops' roofline
    lower bounds and all-reduce times on the accelerator (None without one)."""

    flops: float
    bytes_read: float
    bytes_written: float
    comm_bytes: float
    kv_cache_bytes: float
    kv_blocks: int | None
    kv_occupancy: float | None
    seconds: float | None
    dp_rank: int
    layers: int


def kv_bytes_per_token(shape: ModelShape, workload: Workload) -> float:
    """Cache bytes per token and layer on one rank: keys and values of its ``n_kv`` heads; MLA's latent and RoPE
    key, ``kv_lora_rank + qk_rope_head_dim`` values (replicated on every rank); plus DSA's FP8 indexer key."""
    b = workload.bytes_per_value
    if shape.mla:
        return (shape.kv_lora_rank + shape.qk_rope) * b + shape.index_head_dim * 1
    _, kv = tp_heads(shape, workload.tp)
    return kv * (shape.d_qk + shape.d_v) * b


def layer_totals(
    config: Any,
    workload: Workload,
    accelerator_name: str | Accelerator | None = None,
    *,
    mask: Any = None,
    pipeline: str | None = None,
) -> Totals:
    """One attention layer's totals (see :class:`Totals` and :func:`~.ops.op_costs`)."""
    rank, ops = busiest_rank(config, workload, pipeline=pipeline, mask=mask)
    return totals_of(config, workload, rank, ops, accelerator_name)


def totals_of(
    config: Any, workload: Workload, rank: int, ops: list[OpCost], accelerator_name: str | Accelerator | None = None
) -> Totals:
    """The :class:`Totals` of ops already costed (``rank, ops`` from :func:`~.ops.busiest_rank`): what
    :func:`layer_totals` returns, without costing the layer again."""
    shape = model_shape(config)
    mine = rank_workload(workload, rank)
    tokens = sum(context for context, _ in mine.requests)
    paged = paged_kv(mine)
    slots = tokens if paged is None else paged.total_blocks * paged.page_size
    return Totals(
        flops=sum(op.flops for op in ops),
        bytes_read=sum(op.bytes_read for op in ops),
        bytes_written=sum(op.bytes_written for op in ops),
        comm_bytes=sum(op.comm_bytes for op in ops),
        kv_cache_bytes=slots * kv_bytes_per_token(shape, workload),
        kv_blocks=None if paged is None else paged.total_blocks,
        kv_occupancy=None if paged is None else paged.occupancy(tokens),
        seconds=None if accelerator_name is None else seconds_of(ops, accelerator_name),
        dp_rank=rank,
        layers=1,
    )


def seconds_of(ops: list[OpCost], accelerator_name: str | Accelerator) -> float:
    """The ops' lower-bound time on an accelerator: each op's roofline seconds plus its all-reduce."""
    acc = accelerator(accelerator_name)
    return sum(r.seconds + r.comm_seconds for r in (op.roofline(acc) for op in ops))


def model_totals(
    config: Any,
    workload: Workload,
    accelerator_name: str | Accelerator | None = None,
    *,
    mask: Any = None,
    pipeline: str | None = None,
) -> Totals:
    """:func:`layer_totals` times the model's layers (every layer the same attention; the MLP and embeddings are
    not counted). Paged blocks are not multiplied: one block table serves every layer (as in vLLM), block b being
    the same slot of each layer's cache."""
    layers = model_shape(config).layers
    one = layer_totals(config, workload, accelerator_name, mask=mask, pipeline=pipeline)
    return Totals(
        flops=one["flops"] * layers,
        bytes_read=one["bytes_read"] * layers,
        bytes_written=one["bytes_written"] * layers,
        comm_bytes=one["comm_bytes"] * layers,
        kv_cache_bytes=one["kv_cache_bytes"] * layers,
        kv_blocks=one["kv_blocks"],  # one block table for every layer: block b is slot b of each layer's cache
        kv_occupancy=one["kv_occupancy"],
        seconds=None if one["seconds"] is None else one["seconds"] * layers,
        dp_rank=one["dp_rank"],
        layers=layers,
    )


def mla_crossover(config: Any, context: int) -> float:
    """New tokens per request above which MLA's decompressed ("prefill") pipeline takes fewer FLOPs than the
    absorbed ("decode") one, when each new token attends to ``context`` keys (costs.md; the attention FLOPs of
    the two differ only there):

        decompressed − absorbed = C·S − C·S_q − Δ·S_q·S,   C = 2·L·n_h·(P + V),   Δ = 2·n_h·(2L + R) − 2·n_h·(P + R + V)

    so the crossover is ``S_q* = C·S / (C + Δ·S)`` (the decompression costs C per key, the absorption C per
    query; each pair costs Δ more absorbed). DeepSeek-V3: ≈ 167.2 at S = 8192 and C/Δ ≈ 170.7 as S → ∞. With the
    causal pairs of a request ``(S, S_q)`` (its new tokens see fewer keys) :func:`op_costs` crosses a little
    later, 168.9 at S = 8192."""
    shape = model_shape(config)
    if not shape.mla:
        raise ValueError(f"{shape.name} is {shape.variant}, not MLA (no kv_lora_rank): it has one pipeline")
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise ValueError(f"context must be a positive int, got {context!r}")
    n, lat, p, r, v = shape.heads, shape.kv_lora_rank, shape.qk_nope, shape.qk_rope, shape.v_head
    c = 2 * lat * n * (p + v)
    delta = 2 * n * (2 * lat + r) - 2 * n * (p + r + v)
    if delta <= 0:
        return math.inf  # each pair costs no more absorbed: decompressing never pays
    return c * context / (c + delta * context)
