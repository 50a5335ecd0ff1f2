"""Every operation of one attention layer, costed (:func:`op_costs`): FLOPs, bytes in and out of HBM,
communication, arithmetic intensity, and a roofline lower bound on an accelerator (:meth:`OpCost.roofline`).

Conventions (attn-viz's, ../shared/reference/costs.md, made exact):

* a matrix product of ``M x K`` by ``K x N`` costs ``2·M·K·N`` FLOPs; RoPE 3 FLOPs per rotated value;
  mask + softmax 5 per scored pair; DSA's indexer ``2·d_i + 3`` per pair and head (its dot product, ReLU,
  weighting, sum) and its top-k 1 per scored pair;
* every tensor moves at the workload's dtype (DSA's indexer: its queries and keys in FP8, its logits in FP32,
  the selected indices as int32); an unfused op reads its inputs from HBM and writes its output there; scores and
  probabilities take the pairs actually computed (a kernel that skips dropped pairs);
* ``flash=True`` fuses QKᵀ, mask + softmax and PV into one op, ``attention``: it reads Q, K and V and writes O,
  and the scores never leave the chip;
* keys and values are read as stored, ``n_kv`` heads of them (GQA/MQA never read the broadcast copies), only the
  keys some query sees (:func:`~.workload.keys_read`); MLA's absorbed pipeline reads its latent cache;
* all counts are one GPU's: tensor parallelism gives each rank ``n_h / tp`` query heads and ``n_kv / tp`` key/value
  heads (when ``n_kv < tp`` the key/value heads are replicated, one per rank, as vLLM does); MLA's down
  projections (``q_a_proj``, ``kv_a_proj_with_mqa``) and latent cache, and DSA's indexer, are replicated on every
  rank; the output projection's ring all-reduce sends ``2·(tp − 1)/tp`` times its output bytes per rank. Data
  parallelism runs request i on rank ``i mod dp``; the ops are those of the busiest rank (most FLOPs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .hardware import Accelerator, accelerator
from .shape import ModelShape, model_shape
from .workload import (
    Workload,
    attention_pairs,
    dp_ranks,
    keys_read,
    paged_kv,
    pairs_available,
    rank_workload,
    tile_grid,
)

PIPELINES = ("prefill", "decode")  # MLA: decompressed ("naive") and weight-absorbed


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the layer: ``name``, ``shape`` with a name for each dim (``dims``), the ``bytes`` it moves
    (stored values only: a score tensor of a sparse step holds its kept pairs), and its ``role``: "activation",
    "weight", "cache" or "chip" (never leaves the chip: FlashAttention's scores)."""

    name: str
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    bytes: float
    role: str = "activation"


@dataclass(frozen=True)
class Roofline:
    """An op's lower-bound time on one accelerator: ``seconds = max(flops / peak, bytes / bandwidth)`` at the
    peak of the dtype it computes in (``dtype``), plus ``comm_seconds`` for its all-reduce over NVLink."""

    accelerator: str
    dtype: str
    compute_seconds: float
    memory_seconds: float
    comm_seconds: float
    intensity: float
    ridge: float

    @property
    def seconds(self) -> float:
        return max(self.compute_seconds, self.memory_seconds)

    @property
    def bound(self) -> str:
        """ "compute" or "memory": which of the two limits sets the time."""
        return "compute" if self.compute_seconds >= self.memory_seconds else "memory"


@dataclass(frozen=True)
class OpCost:
    """One operation of the layer, in execution order (see the module's conventions)."""

    name: str
    kind: str  # matmul, rope, softmax, attention, cache, indexer, topk
    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    flops: float
    bytes_read: float
    bytes_written: float
    comm_bytes: float = 0.0
    dtype: str = "bf16"  # the dtype its arithmetic runs in
    stage: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (0 for an op that only moves data)."""
        moved = self.bytes_read + self.bytes_written
        return self.flops / moved if moved else 0.0

    def roofline(self, accelerator_name: str | Accelerator) -> Roofline:
        acc = accelerator(accelerator_name)
        dtype = acc.effective_dtype(self.dtype)
        comm = self.comm_bytes / (acc.nvlink / 2) if self.comm_bytes and acc.nvlink else 0.0  # one direction
        return Roofline(
            acc.name,
            dtype,
            self.flops / acc.peak(dtype),
            (self.bytes_read + self.bytes_written) / acc.bandwidth,
            comm,
            self.intensity,
            acc.peak(dtype) / acc.bandwidth,
        )


class _Layer:
    """Builds one rank's ops: tensors by name, each op's bytes from its inputs' and output's."""

    def __init__(self, workload: Workload) -> None:
        self.b = workload.bytes_per_value
        self.dtype = workload.dtype
        self.ops: list[OpCost] = []

    def tensor(self, name: str, shape: tuple[int, ...], dims: tuple[str, ...], role: str = "activation",
               values: float | None = None, bytes_per_value: float | None = None) -> TensorSpec:  # fmt: skip
        n = values if values is not None else _product(shape)
        return TensorSpec(name, shape, dims, n * (self.b if bytes_per_value is None else bytes_per_value), role)

    def op(self, name: str, kind: str, inputs: tuple[TensorSpec, ...], output: TensorSpec, flops: float,
           stage: str, *, comm: float = 0.0, dtype: str | None = None, **details: Any) -> TensorSpec:  # fmt: skip
        read = sum(t.bytes for t in inputs if t.role != "chip")
        written = 0.0 if output.role == "chip" else output.bytes
        self.ops.append(OpCost(name, kind, inputs, output, float(flops), float(read), float(written), float(comm),
                               dtype or self.dtype, stage, details))  # fmt: skip
        return output

    def matmul(self, name: str, x: TensorSpec, w: TensorSpec, out: TensorSpec, stage: str, **kw: Any) -> TensorSpec:
        m = _product(x.shape[:-1])
        return self.op(name, "matmul", (x, w), out, 2 * m * x.shape[-1] * w.shape[-1], stage, **kw)


def _product(shape: tuple[int, ...]) -> int:
    out = 1
    for n in shape:
        out *= n
    return out


def tp_heads(shape: ModelShape, tp: int) -> tuple[int, int]:
    """Query and key/value heads per tensor-parallel rank (see the module's conventions)."""
    if shape.heads % tp:
        raise ValueError(f"tp={tp} must divide the {shape.heads} query heads of {shape.name}")
    if shape.mla:
        return shape.heads // tp, 1  # one latent, replicated
    if shape.kv_heads >= tp:
        if shape.kv_heads % tp:
            raise ValueError(f"tp={tp} must divide the {shape.kv_heads} key/value heads of {shape.name} (or be a "
                             f"multiple of them: then each rank holds a replicated copy of one)")  # fmt: skip
        return shape.heads // tp, shape.kv_heads // tp
    if tp % shape.kv_heads:
        raise ValueError(f"tp={tp} must be a multiple of the {shape.kv_heads} key/value heads of {shape.name}")
    return shape.heads // tp, 1  # fewer KV heads than ranks: each rank keeps a replicated copy of its one


def _o_proj(layer: _Layer, o: TensorSpec, shape: ModelShape, heads: int, d_v: int, n_q: int, tp: int) -> None:
    o_flat = TensorSpec(o.name, (n_q, heads * d_v), ("ΣS_q", "n_h·d_v"), o.bytes, o.role)
    w = layer.tensor("W_o", (heads * d_v, shape.hidden), ("n_h·d_v", "d"), "weight")
    y = layer.tensor("Y", (n_q, shape.hidden), ("ΣS_q", "d"))
    comm = 2 * (tp - 1) / tp * y.bytes if tp > 1 else 0.0
    layer.matmul("o_proj", o_flat, w, y, "output", comm=comm, all_reduce=tp > 1)


def _core(layer: _Layer, q: TensorSpec, k: TensorSpec, v: TensorSpec, heads: int, pairs: float, n_q: int,
          n_k: int, out_name: str, workload: Workload, mask: Any, fused_reads: tuple[TensorSpec, ...]
          ) -> TensorSpec:  # fmt: skip
    """QKᵀ, mask + softmax and PV over ``pairs`` per head, or FlashAttention's one fused op, which reads
    ``fused_reads`` once (MLA's absorbed latent holds the keys and the values)."""
    d_out = v.shape[-1]
    out = layer.tensor(out_name, (heads, n_q, d_out), ("n_h", "ΣS_q", v.dims[-1]))
    if workload.flash:
        flops = heads * pairs * (2 * k.shape[-1] + 5 + 2 * d_out)
        grid = tile_grid(workload, mask)
        return layer.op("attention", "attention", fused_reads, out, flops, "attention", tiles=grid)
    scores = layer.tensor("S", (heads, n_q, n_k), ("n_h", "ΣS_q", "ΣS"), values=heads * pairs)
    layer.op("QK^T", "matmul", (q, k), scores, 2 * heads * pairs * k.shape[-1], "attention")
    probs = TensorSpec("P", scores.shape, scores.dims, scores.bytes)
    layer.op("softmax", "softmax", (scores,), probs, 5 * heads * pairs, "attention")
    return layer.op("PV", "matmul", (probs, v), out, 2 * heads * pairs * d_out, "attention")


def _standard(shape: ModelShape, workload: Workload, mask: Any) -> list[OpCost]:
    layer = _Layer(workload)
    heads, kv = tp_heads(shape, workload.tp)
    n_q, n_k = workload.new_tokens, workload.context_tokens
    d, dq, dv = shape.hidden, shape.d_qk, shape.d_v
    pairs, read = attention_pairs(workload, mask), keys_read(workload, mask)
    x = layer.tensor("X", (n_q, d), ("ΣS_q", "d"))
    q = layer.matmul("q_proj", x, layer.tensor("W_q", (d, heads * dq), ("d", "n_h·d_h"), "weight"),
                     layer.tensor("Q", (heads, n_q, dq), ("n_h", "ΣS_q", "d_h")), "projections")  # fmt: skip
    k_new = layer.matmul("k_proj", x, layer.tensor("W_k", (d, kv * dq), ("d", "n_kv·d_h"), "weight"),
                         layer.tensor("K_new", (kv, n_q, dq), ("n_kv", "ΣS_q", "d_h")), "projections")  # fmt: skip
    v_new = layer.matmul("v_proj", x, layer.tensor("W_v", (d, kv * dv), ("d", "n_kv·d_h"), "weight"),
                         layer.tensor("V_new", (kv, n_q, dv), ("n_kv", "ΣS_q", "d_h")), "projections")  # fmt: skip
    if shape.rope:
        q = layer.op("RoPE q", "rope", (q,), TensorSpec("Q", q.shape, q.dims, q.bytes), 3 * _product(q.shape),
                     "rotary")  # fmt: skip
        k_new = layer.op("RoPE k", "rope", (k_new,), TensorSpec("K_new", k_new.shape, k_new.dims, k_new.bytes),
                         3 * _product(k_new.shape), "rotary")  # fmt: skip
    cache = layer.tensor("KV cache", (kv, n_k, dq + dv), ("n_kv", "ΣS", "d_k+d_v"), "cache",
                         values=kv * n_q * (dq + dv))  # fmt: skip
    layer.op("cache write", "cache", (k_new, v_new), cache, 0, "cache", paged=paged_kv(workload))
    k = layer.tensor("K", (kv, n_k, dq), ("n_kv", "ΣS", "d_h"), "cache", values=kv * read * dq)
    v = layer.tensor("V", (kv, n_k, dv), ("n_kv", "ΣS", "d_h"), "cache", values=kv * read * dv)
    o = _core(layer, q, k, v, heads, pairs, n_q, n_k, "O", workload, mask, (q, k, v))
    _o_proj(layer, o, shape, heads, dv, n_q, workload.tp)
    return layer.ops


def _mla(shape: ModelShape, workload: Workload, mask: Any, pipeline: str) -> list[OpCost]:
    layer = _Layer(workload)
    heads, _ = tp_heads(shape, workload.tp)
    n_q, n_k = workload.new_tokens, workload.context_tokens
    d, lat, nope, rope, dv = shape.hidden, shape.kv_lora_rank, shape.qk_nope, shape.qk_rope, shape.v_head
    x = layer.tensor("X", (n_q, d), ("ΣS_q", "d"))
    stage = "projections"
    q_src = x
    if shape.q_lora_rank:
        r = shape.q_lora_rank
        q_src = layer.matmul("q_a_proj", x, layer.tensor("W_DQ", (d, r), ("d", "d_c'"), "weight"),
                             layer.tensor("c_Q", (n_q, r), ("ΣS_q", "d_c'")), stage)  # fmt: skip
    w_q = layer.tensor("W_UQ", (q_src.shape[-1], heads * (nope + rope)), (q_src.dims[-1], "n_h·(P+R)"), "weight")
    q = layer.matmul("q_b_proj" if shape.q_lora_rank else "q_proj", q_src, w_q,
                     layer.tensor("Q", (heads, n_q, nope + rope), ("n_h", "ΣS_q", "P+R")), stage)  # fmt: skip
    c_new = layer.matmul("kv_a_proj_with_mqa", x, layer.tensor("W_DKV", (d, lat + rope), ("d", "L+R"), "weight"),
                         layer.tensor("c_KV_new", (n_q, lat + rope), ("ΣS_q", "L+R")), stage)  # fmt: skip
    layer.op("RoPE q", "rope", (q,), TensorSpec("Q", q.shape, q.dims, q.bytes), 3 * heads * n_q * rope, "rotary")
    layer.op("RoPE k", "rope", (c_new,), TensorSpec("k_R_new", (n_q, rope), ("ΣS_q", "R"), n_q * rope * layer.b),
             3 * n_q * rope, "rotary")  # fmt: skip
    latent = layer.tensor("latent cache", (n_k, lat + rope), ("ΣS", "L+R"), "cache", values=n_q * (lat + rope))
    layer.op("cache write", "cache", (c_new,), latent, 0, "cache", paged=paged_kv(workload))
    if shape.dsa:
        _indexer(layer, shape, workload, q_src, x)
        workload = _with_topk(workload, shape)
    pairs, read = attention_pairs(workload, mask), keys_read(workload, mask)
    if pipeline == "prefill":  # decompressed: per-head keys and values from the latent, then MHA
        c = layer.tensor("c_KV", (n_k, lat), ("ΣS", "L"), "cache", values=read * lat)
        kv = layer.matmul("kv_b_proj", c, layer.tensor("W_UKV", (lat, heads * (nope + dv)), ("L", "n_h·(P+V)"),
                          "weight"), layer.tensor("K_nope,V", (heads, n_k, nope + dv), ("n_h", "ΣS", "P+V"),
                          values=heads * read * (nope + dv)), "decompress")  # fmt: skip
        k = layer.tensor("K", (heads, n_k, nope + rope), ("n_h", "ΣS", "P+R"), values=heads * read * nope + read * rope)
        v = layer.tensor("V", (heads, n_k, dv), ("n_h", "ΣS", "V"), values=heads * read * dv)
        del kv
        o = _core(layer, q, k, v, heads, pairs, n_q, n_k, "O", workload, mask, (q, k, v))
    else:  # absorbed: W_UK folded into the query, W_UV into the output; MQA over the latent cache
        q_nope = TensorSpec("Q_nope", (heads, n_q, nope), ("n_h", "ΣS_q", "P"), heads * n_q * nope * layer.b)
        q_lat = layer.op("kv_b_proj (W_UK absorbed)", "matmul",
                         (q_nope, layer.tensor("W_UK", (heads, nope, lat), ("n_h", "P", "L"), "weight")),
                         layer.tensor("Q_lat", (heads, n_q, lat + rope), ("n_h", "ΣS_q", "L+R")),
                         2 * heads * n_q * nope * lat, "absorb")  # fmt: skip
        k = layer.tensor("latent cache", (1, n_k, lat + rope), ("1", "ΣS", "L+R"), "cache", values=read * (lat + rope))
        c = layer.tensor("c_KV", (1, n_k, lat), ("1", "ΣS", "L"), "cache", values=read * lat)  # the values
        o_lat = _core(layer, q_lat, k, c, heads, pairs, n_q, n_k, "O_lat", workload, mask, (q_lat, k))
        o = layer.op("kv_b_proj (W_UV absorbed)", "matmul",
                     (o_lat, layer.tensor("W_UV", (heads, lat, dv), ("n_h", "L", "V"), "weight")),
                     layer.tensor("O", (heads, n_q, dv), ("n_h", "ΣS_q", "V")), 2 * heads * n_q * lat * dv,
                     "absorb")  # fmt: skip
    _o_proj(layer, o, shape, heads, dv, n_q, workload.tp)
    return layer.ops


def _with_topk(workload: Workload, shape: ModelShape) -> Workload:
    """DSA's core attention: each query keeps ``topk`` (the workload's, else the model's ``index_topk``)."""
    if workload.topk is not None:
        return workload
    return workload.changed(topk=shape.index_topk)


def _indexer(layer: _Layer, shape: ModelShape, workload: Workload, c_q: TensorSpec, x: TensorSpec) -> None:
    """DSA's lightning indexer (DeepSeek-V3.2): FP8 queries and keys score every available pair, then top-k."""
    n_i, d_i = shape.index_heads, shape.index_head_dim
    n_q, n_k = workload.new_tokens, workload.context_tokens
    k = _with_topk(workload, shape).topk or 0
    avail = pairs_available(workload)
    stage = "indexer"
    q_i = layer.matmul("indexer.wq_b", c_q, layer.tensor("W_IQ", (c_q.shape[-1], n_i * d_i), (c_q.dims[-1], "n_i·d_i"),
                       "weight"), layer.tensor("q_I", (n_i, n_q, d_i), ("n_i", "ΣS_q", "d_i"), bytes_per_value=1),
                       stage)  # fmt: skip
    k_new = layer.matmul("indexer.wk", x, layer.tensor("W_IK", (shape.hidden, d_i), ("d", "d_i"), "weight"),
                         layer.tensor("k_I_new", (n_q, d_i), ("ΣS_q", "d_i"), bytes_per_value=1), stage)  # fmt: skip
    w = layer.matmul("indexer.weights_proj", x, layer.tensor("W_w", (shape.hidden, n_i), ("d", "n_i"), "weight"),
                     layer.tensor("w_I", (n_q, n_i), ("ΣS_q", "n_i")), stage)  # fmt: skip
    cache = layer.tensor("indexer cache", (n_k, d_i), ("ΣS", "d_i"), "cache", values=n_q * d_i, bytes_per_value=1)
    layer.op("indexer cache write", "cache", (k_new,), cache, 0, stage)
    keys = layer.tensor("indexer cache", (n_k, d_i), ("ΣS", "d_i"), "cache", bytes_per_value=1)
    logits = layer.tensor("I", (n_q, n_k), ("ΣS_q", "ΣS"), values=avail, bytes_per_value=4)
    layer.op("indexer scores", "indexer", (q_i, keys, w), logits, avail * n_i * (2 * d_i + 3), stage, dtype="fp8")
    idx = layer.tensor("top-k indices", (n_q, k), ("ΣS_q", "k"), values=n_q * min(k, n_k), bytes_per_value=4)
    layer.op("top-k", "topk", (logits,), idx, avail, stage)


def _rank_ops(shape: ModelShape, workload: Workload, pipeline: str | None, mask: Any) -> list[OpCost]:
    if not shape.mla:
        if pipeline is not None:
            raise ValueError(f"pipeline applies to MLA models only; {shape.name} is {shape.variant}: leave it None")
        return _standard(shape, workload, mask)
    if pipeline is None:
        both = [_mla(shape, workload, mask, p) for p in PIPELINES]
        return min(both, key=lambda ops: sum(op.flops for op in ops))
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be 'prefill' (decompressed), 'decode' (absorbed) or None, got {pipeline!r}")
    return _mla(shape, workload, mask, pipeline)


def busiest_rank(config: Any, workload: Workload, *, pipeline: str | None = None, mask: Any = None
                 ) -> tuple[int, list[OpCost]]:  # fmt: skip
    """The data-parallel rank with the most FLOPs (the lowest on a tie) and its ops."""
    shape = model_shape(config)
    best: tuple[int, list[OpCost]] | None = None
    for rank, members in enumerate(dp_ranks(workload)):
        if not members:
            continue
        # a mask is read at each request's own rows
        ops = _rank_ops(shape, rank_workload(workload, rank), pipeline, mask)
        if best is None or sum(o.flops for o in ops) > sum(o.flops for o in best[1]):
            best = (rank, ops)
    assert best is not None
    return best


def op_costs(config: Any, workload: Workload, *, pipeline: str | None = None, mask: Any = None) -> list[OpCost]:
    """Every operation of one attention layer of ``config`` on ``workload``, in execution order, as one GPU runs
    it (the busiest data-parallel rank; see the module's conventions). ``pipeline`` (MLA only): "prefill"
    (decompressed) or "decode" (absorbed); None takes the one with fewer FLOPs. ``mask``: a realised keep-mask
    (bool ``[T, T]`` or ``[H, T, T]``) that sets the pairs, keys read and tiles instead of the causal rule."""
    return busiest_rank(config, workload, pipeline=pipeline, mask=mask)[1]
