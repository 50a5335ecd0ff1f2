"""The cost explorer's picture as it travels to the browser (:func:`graph_payload`): one attention layer's tensors
and ops from :func:`~attnsparse_widget.costs.op_costs`, laid out in columns left to right, each op with its roofline
on every accelerator, the totals, and what a click shows (the batch's mask, FlashAttention's tiles, the paged
block table, the TP and DP splits, MLA's crossover chart). The arithmetic is all in :mod:`.costs`; this module
only arranges it. The explorer's settings (:class:`~attnsparse_widget.contract.ExplorerSettings`) say what to
cost: :func:`config_of` and :func:`workload_of` read them."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from . import costs, masks
from .contract import (
    ExplorerGraph,
    ExplorerOp,
    ExplorerRoofline,
    ExplorerSettings,
    ExplorerTensor,
    ExplorerTiles,
    ExplorerTotals,
)
from .cost_svg import graph_svg, si
from .costs import Workload
from .payload import matrix

VARIANTS = ("MHA", "GQA", "MQA", "MLA", "DSA")
MASK_SIDE = 256  # the batch's mask picture: at most this many cells a side
ROWS_AT_ONCE = 1024  # rows of a realised mask summed at once for the picture (a running sum of int32 per key)
CROSSOVER_POINTS = 64  # points of MLA's crossover chart
# DeepSeek-V3's MLA and V3.2's indexer: the dims a variant switch to MLA or DSA starts from
MLA_DIMS = {"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope": 128, "qk_rope": 64, "v_head": 128}
DSA_DIMS = {"index_heads": 64, "index_head_dim": 128, "index_topk": 2048}


def settings_of(config: Any, **workload: Any) -> ExplorerSettings:
    """Settings for ``config`` (a preset name, a config object or dict) with the workload's defaults: one prefill of
    1024 tokens in bf16 on one GPU, the H100."""
    name = config if isinstance(config, str) else "custom"
    shape = costs.model_shape(costs.preset(config) if isinstance(config, str) else config)
    settings = ExplorerSettings(
        preset=name,
        variant=shape.variant,
        hidden=shape.hidden,
        heads=shape.heads,
        kv_heads=shape.kv_heads,
        head_dim=shape.d_qk if not shape.mla else shape.qk_nope + shape.qk_rope,
        layers=shape.layers,
        rope=shape.rope,
        q_lora_rank=shape.q_lora_rank or MLA_DIMS["q_lora_rank"],
        kv_lora_rank=shape.kv_lora_rank or MLA_DIMS["kv_lora_rank"],
        qk_nope=shape.qk_nope or MLA_DIMS["qk_nope"],
        qk_rope=shape.qk_rope or MLA_DIMS["qk_rope"],
        v_head=shape.v_head or MLA_DIMS["v_head"],
        index_heads=shape.index_heads or DSA_DIMS["index_heads"],
        index_head_dim=shape.index_head_dim or DSA_DIMS["index_head_dim"],
        index_topk=shape.index_topk or DSA_DIMS["index_topk"],
        requests=[[1024, 1024]],
        dtype="bf16",
        tp=1,
        dp=1,
        flash=False,
        tile=list(costs.workload.FLASH_TILE),
        page_size=0,
        window=0,
        topk=0,
        accelerator="H100",
        pipeline="auto",
        mask="",
        sparsity=0.9,
        selected="",
    )
    return {**settings, **workload}  # type: ignore[typeddict-item]


def config_of(settings: ExplorerSettings) -> dict[str, Any]:
    """The model config (a dict of transformers keys) the settings describe: their variant decides the key/value
    heads (MHA: every query head's own, MQA: one) and whether MLA's ranks and DSA's indexer are in it."""
    variant = settings["variant"]
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    heads = settings["heads"]
    kv = {"MHA": heads, "MQA": 1}.get(variant, settings["kv_heads"])
    config: dict[str, Any] = dict(
        name=settings["preset"],
        hidden_size=settings["hidden"],
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=settings["head_dim"],
        num_hidden_layers=settings["layers"],
    )
    if settings["rope"]:
        config["rope_theta"] = 10000.0
    else:
        config["model_type"] = "gpt2"
    if variant in ("MLA", "DSA"):
        config.update(
            q_lora_rank=settings["q_lora_rank"],
            kv_lora_rank=settings["kv_lora_rank"],
            qk_nope_head_dim=settings["qk_nope"],
            qk_rope_head_dim=settings["qk_rope"],
            v_head_dim=settings["v_head"],
        )
    if variant == "DSA":
        config.update(
            index_n_heads=settings["index_heads"],
            index_head_dim=settings["index_head_dim"],
            index_topk=settings["index_topk"],
        )
    return config


def workload_of(settings: ExplorerSettings) -> Workload:
    """The :class:`~attnsparse_widget.costs.Workload` the settings describe (0 turns paging, a window, top-k off)."""
    return Workload(
        [(int(c), int(n)) for c, n in settings["requests"]],
        tp=settings["tp"],
        dp=settings["dp"],
        dtype=settings["dtype"],
        flash=settings["flash"],
        page_size=settings["page_size"] or None,
        window=settings["window"] or None,
        topk=settings["topk"] or None,
        tile=(int(settings["tile"][0]), int(settings["tile"][1])),
    )


def mask_of(settings: ExplorerSettings, workload: Workload) -> np.ndarray | None:
    """The keep-mask ``[T, T]`` of the settings' library mask at their sparsity over the longest request's keys
    (None: none chosen). A score-dependent pattern needs real scores: it is refused with how to get them."""
    name = settings["mask"]
    if not name:
        return None
    mask = masks.get(name)
    if mask.score_dependent:
        raise ValueError(
            f"{name} chooses its pairs from the model's scores: open the explorer on a comparison that ran it, "
            f"aw.explore(aw.compare(text, mask={name!r})), to count its realised mask"
        )
    return _library_mask(name, max(context for context, _ in workload.requests), settings["sparsity"])


@functools.lru_cache(maxsize=4)
def _library_mask(name: str, n_keys: int, sparsity: float) -> np.ndarray:
    """A library mask's keep-mask, built once for the controls that leave it as it is (read-only: shared)."""
    keep = np.asarray(masks.build(name, n_keys, sparsity=sparsity), dtype=bool)
    keep.flags.writeable = False
    return keep


# ------------------------------------------------------------------------------------------------ the payload
def _rooflines(op: costs.OpCost) -> list[ExplorerRoofline]:
    out = []
    for key, acc in costs.ACCELERATORS.items():
        r = op.roofline(acc)
        out.append(
            ExplorerRoofline(
                accelerator=key,
                dtype=r.dtype,
                seconds=r.seconds,
                compute_seconds=r.compute_seconds,
                memory_seconds=r.memory_seconds,
                comm_seconds=r.comm_seconds,
                bound=r.bound,
                ridge=r.ridge,
                peak=acc.peak(r.dtype),
                bandwidth=acc.bandwidth,
            )
        )
    return out


def _layout(lanes: list[list[costs.OpCost]]) -> tuple[list[ExplorerTensor], list[ExplorerOp]]:
    """Tensors and ops in columns, left to right, lane by lane (MLA: one lane per pipeline; ids unique across the
    picture): a tensor made by an op sits one column right of it, an op one column right of its latest input;
    weights and caches read by an op sit in the column of its other inputs."""
    tensors: list[ExplorerTensor] = []
    out_ops: list[ExplorerOp] = []

    def node(spec: costs.TensorSpec, column: int, lane: int) -> int:
        tensors.append(
            ExplorerTensor(
                id=f"t{len(tensors)}",
                name=spec.name,
                shape=list(spec.shape),
                dims=list(spec.dims),
                bytes=spec.bytes,
                role=spec.role,
                column=column,
                lane=lane,
            )
        )
        return len(tensors) - 1

    for lane, ops in enumerate(lanes):
        latest: dict[str, int] = {}  # tensor name -> index of its newest node in this lane
        for op in ops:
            made = [latest.get(t.name) for t in op.inputs if t.role == "activation"]
            column = 1 + max((tensors[j]["column"] for j in made if j is not None), default=0)
            inputs = []
            for spec in op.inputs:
                j = latest.get(spec.name) if spec.role == "activation" else None
                if j is None:  # a weight, a cache, or the layer's input: a node beside the op's other inputs
                    j = node(spec, column - 1, lane)
                    if spec.role == "activation":
                        latest[spec.name] = j
                inputs.append(tensors[j]["id"])
            out = node(op.output, column + 1, lane)
            latest[op.output.name] = out
            out_ops.append(
                ExplorerOp(
                    id=f"op{len(out_ops)}",
                    name=op.name,
                    kind=op.kind,
                    stage=op.stage,
                    column=column,
                    lane=lane,
                    inputs=inputs,
                    output=tensors[out]["id"],
                    flops=op.flops,
                    bytes_read=op.bytes_read,
                    bytes_written=op.bytes_written,
                    comm_bytes=op.comm_bytes,
                    intensity=op.intensity,
                    dtype=op.dtype,
                    rooflines=_rooflines(op),
                )
            )
    return tensors, out_ops


def _batch_mask(workload: Workload, keep: np.ndarray | None) -> np.ndarray:
    """The batch's mask picture over all requests' queries (rows) and keys (columns), at most :data:`MASK_SIDE`
    cells a side: per cell, the fraction of its pairs that are computed (kept; 0 for the future and for dropped
    pairs), NaN where the cell holds no pair of a request (another request's keys: never computed). A top-k
    without a realised mask shows the fraction of each row it keeps (which keys win depends on the scores).

    Counted per row and column cell, never per pair: a causal or windowed row keeps one interval of keys, and a
    realised mask is summed a row of cells at a time, so an 8192-token prefill costs milliseconds."""
    n_q, n_k = workload.new_tokens, workload.context_tokens
    f_q, f_k = max(1, math.ceil(n_q / MASK_SIDE)), max(1, math.ceil(n_k / MASK_SIDE))
    rows, cols = math.ceil(n_q / f_q), math.ceil(n_k / f_k)
    kept = np.zeros((rows, cols))
    pairs = np.zeros((rows, cols))
    heads = None if keep is None else costs.workload.as_mask(keep)
    cell_lo = np.arange(cols) * f_k  # batch columns where each column cell starts and ends
    cell_hi = np.minimum(cell_lo + f_k, n_k)
    r0 = c0 = 0
    for context, new in workload.requests:
        lo_c, hi_c = np.clip(cell_lo - c0, 0, context), np.clip(cell_hi - c0, 0, context)  # the cells' keys here
        if heads is not None:  # heads keeping each pair, summed over each cell's keys by a running sum per row
            count = heads[:, context - new : context, :context].sum(0, dtype=np.uint16)
            per_row = np.zeros((new, cols))
            valid = np.flatnonzero(hi_c > lo_c)
            for a in range(0, new, ROWS_AT_ONCE):
                running = np.zeros((min(new, a + ROWS_AT_ONCE) - a, context + 1), dtype=np.int32)
                np.cumsum(count[a : a + ROWS_AT_ONCE], axis=1, out=running[:, 1:])
                per_row[a : a + ROWS_AT_ONCE, valid] = running[:, hi_c[valid]] - running[:, lo_c[valid]]
            per_row /= heads.shape[0]
        else:
            q = np.arange(context - new, context)[:, None]  # each new query's position
            first = np.zeros_like(q) if workload.window is None else np.maximum(0, q - workload.window + 1)
            per_row = np.clip(np.minimum(hi_c[None], q + 1) - np.maximum(lo_c[None], first), 0, None).astype(float)
            if workload.topk is not None:
                per_row *= np.minimum(1.0, workload.topk / (q + 1 - first))
        width = (hi_c - lo_c)[None].astype(float)
        row_cells = (r0 + np.arange(new)) // f_q
        np.add.at(kept, row_cells, per_row)
        np.add.at(pairs, row_cells, np.broadcast_to(width, per_row.shape))
        r0, c0 = r0 + new, c0 + context
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, kept / pairs, np.nan)


def graph_payload(
    settings: ExplorerSettings,
    *,
    keep: np.ndarray | None = None,
    measured: dict[str, float | None] | None = None,
) -> ExplorerGraph:
    """What the explorer draws for ``settings`` (see the module docstring); ``keep`` a realised keep-mask
    (``[T, T]`` or ``[H, T, T]``, from a comparison) in place of the settings' own mask; ``measured`` the
    comparison's attention times on this machine."""
    config = config_of(settings)
    workload = workload_of(settings)
    if keep is None:
        keep = mask_of(settings, workload)
    pipeline = None if settings["pipeline"] == "auto" else settings["pipeline"]
    shape = costs.model_shape(config)
    if not shape.mla:
        pipeline = None
    counted = workload.changed(window=None, topk=None) if keep is not None else workload  # the mask says it all
    # the layer is costed once: a realised mask is counted on every cost (0.1 to 0.3 s a count at 8192 tokens)
    rank, ops = costs.ops.busiest_rank(config, counted, pipeline=pipeline, mask=keep)
    used = "" if not shape.mla else ("prefill" if any(o.name == "kv_b_proj" for o in ops) else "decode")
    # MLA: both pipelines drawn, decompressed above absorbed (each costed once: the one not used here now)
    by_pipeline = {p: _pipeline_ops(config, counted, keep, p, used, ops) for p in costs.PIPELINES} if used else {}
    tensors, out_ops = _layout(list(by_pipeline.values()) if used else [ops])
    layer = costs.totals.totals_of(config, counted, rank, ops)
    seconds = {key: costs.totals.seconds_of(ops, key) for key in costs.ACCELERATORS}
    dense = costs.attention_pairs(Workload(workload.requests))
    pairs = costs.attention_pairs(counted, keep)
    heads, kv_heads = costs.ops.tp_heads(shape, workload.tp)
    # FlashAttention's tiles on the rank the totals show: the fused op's own count with flash (never counted
    # twice), else counted here (what flash would skip)
    fused = next((o for o in ops if "tiles" in o.details), None)
    grid = fused.details["tiles"] if fused else costs.tile_grid(costs.workload.rank_workload(counted, rank), keep)
    paged = costs.paged_kv(workload)
    pipeline_flops = {p: float(sum(o.flops for o in p_ops)) for p, p_ops in by_pipeline.items()}
    graph = ExplorerGraph(
        title=f"{settings['preset']} · {shape.variant} · {len(workload.requests)} request(s)",
        variant=shape.variant,
        pipeline=used,
        lanes=[_lane_title(p, used, pipeline_flops) for p in by_pipeline],
        costed_lane=list(by_pipeline).index(used) if used else 0,
        tensors=tensors,
        ops=out_ops,
        totals=ExplorerTotals(
            layer_flops=layer["flops"],
            model_flops=layer["flops"] * shape.layers,
            layer_bytes=layer["bytes_read"] + layer["bytes_written"],
            model_bytes=(layer["bytes_read"] + layer["bytes_written"]) * shape.layers,
            comm_bytes=layer["comm_bytes"] * shape.layers,
            kv_cache_bytes=layer["kv_cache_bytes"] * shape.layers,
            kv_blocks=layer["kv_blocks"],
            kv_occupancy=layer["kv_occupancy"],
            layer_seconds=seconds,
            model_seconds={k: s * shape.layers for k, s in seconds.items()},
            layers=shape.layers,
            dp_rank=rank,
        ),
        pairs=float(pairs),
        dense_pairs=float(dense),
        mask=matrix(_batch_mask(counted, keep), "f2"),
        tiles=ExplorerTiles(
            rows=workload.tile[0],
            cols=workload.tile[1],
            computed=grid.computed,
            total=grid.total,
            grid=matrix(np.round(100 * grid.grids[0]).astype(np.uint8), "u1"),
        ),
        block_table=[list(t) for t in paged.table] if paged is not None else [],
        tp_heads=[list(range(r * heads, (r + 1) * heads)) for r in range(workload.tp)],
        tp_kv_heads=kv_heads,
        dp_requests=[list(r) for r in costs.dp_ranks(workload)],
        crossover=_crossover(config, workload) if shape.mla else [],
        crossover_at=_finite(costs.mla_crossover(config, workload.requests[0][0])) if shape.mla else None,
        pipeline_flops=pipeline_flops,
        measured_dense=None if measured is None else measured.get("dense"),
        measured_sparse=None if measured is None else measured.get("sparse"),
        svg="",
    )
    graph["svg"] = graph_svg(graph)
    return graph


def _pipeline_ops(
    config: dict[str, Any],
    workload: Workload,
    keep: np.ndarray | None,
    pipeline: str,
    used: str,
    ops: list[costs.OpCost],
) -> list[costs.OpCost]:
    """The layer's ops on MLA's ``pipeline``: ``ops`` when that is the one costed (``used``), else costed now."""
    return ops if pipeline == used else costs.ops.busiest_rank(config, workload, pipeline=pipeline, mask=keep)[1]


PIPELINE_NAMES = {"prefill": "decompressed (prefill) pipeline", "decode": "absorbed (decode) pipeline"}


def _lane_title(pipeline: str, used: str, flops: dict[str, float]) -> str:
    """A lane's title: the MLA pipeline it draws, its FLOPs per layer, and whether the totals count it."""
    other = flops["decode" if pipeline == "prefill" else "prefill"]
    ratio = flops[pipeline] / other if other else math.inf
    counted = "costed in the totals" if pipeline == used else "not costed"
    return f"{PIPELINE_NAMES[pipeline]}: {si(flops[pipeline])} FLOP per layer, {ratio:.2f}x the other; {counted}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _crossover(config: dict[str, Any], workload: Workload) -> list[list[float]]:
    """MLA's two pipelines' FLOPs for one request over the first request's keys, against its new tokens:
    ``[new, decompressed, absorbed]`` rows, log-spaced from 1 to the keys."""
    context = workload.requests[0][0]
    points = sorted({max(1, round(context ** (i / (CROSSOVER_POINTS - 1)))) for i in range(CROSSOVER_POINTS)})
    rows = []
    for new in points:
        w = Workload([(context, new)], dtype=workload.dtype)
        flops = [sum(o.flops for o in costs.op_costs(config, w, pipeline=p)) for p in costs.PIPELINES]
        rows.append([float(new), *flops])
    return rows
