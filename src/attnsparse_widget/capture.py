"""The one capture path: an attention function registered with transformers' ``AttentionInterface``.

``attention_forward`` is the eager attention of transformers (``q·kᵀ·scaling``, soft-capping, the model's additive
mask, float32 softmax, ``·v``) with two additions: it applies the active sparse mask *after QKᵀ and before the
softmax*, and it hands the post-softmax probabilities (float32) and the keep-mask to a :class:`Recorder`. A dense
pass can also keep every layer's queries and keys (:class:`QueryKeys`); a sparse pass given them hands the recorder,
with its own probabilities, the dense pass's probabilities of the same layer, rebuilt head by head by the same
operations: the attention metrics are measured while a layer's probabilities are in memory, with no replay.

It is registered together with ``eager_mask`` under the same name in ``AttentionMaskInterface``: without a mask
function transformers silently passes no mask at all (stack.md §5.4), and ``eager_mask`` always materialises the
model's own causal / padding / sliding-window mask as an additive float mask (0 or ``finfo.min``).

A model is switched to it only inside :func:`attention_active`, which restores the model's own implementation,
its train/eval mode and every hook on exit, also when the body raises (KeyboardInterrupt included).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.masking_utils import eager_mask

from . import kernels
from .hooks import LayerOutputs, model_lock, start_at_layer, switched_to
from .introspect import check_supported, layer_indexer, unsupported
from .masks import Mask, MaskContext
from .masks.base import SPARSITY_TOLERANCE, by_position_sparsity, calibrate, calibrated_per_layer

Tensor = torch.Tensor
ATTN_NAME = "attnsparse"


# ------------------------------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    """What the attention function does during one forward pass.

    ``mask`` None means dense. ``sparse_layers`` None means every layer; otherwise only those layers are sparse
    (the per-layer perplexity curve). ``recorder`` None means nothing is captured.

    Per-layer budgets of score-dependent masks (:func:`~attnsparse_widget.masks.calibrated_per_layer`): with
    ``target_sparsity`` set, each sparse layer that has no entry in ``budgets`` yet gets the budget whose keep-mask on
    that layer's real scores brings the sparsity of the layers so far nearest to the target (error feedback: a
    layer that lands above the target because of a coarse budget step is balanced by the next ones), and it is
    recorded there. Budgets already in ``budgets`` are used as they are: a later replay, layer recomputation or
    greedy continuation of a calibrated pass passes that pass's ``budgets`` and no target, and applies exactly the
    masks the pass chose.
    """

    layer_of: Callable[[nn.Module], int]
    mask: Mask | None = None
    sparse_layers: frozenset[int] | None = None
    recorder: Recorder | None = None
    seed: int = 0
    calls: int = 0
    # per pass: the allowed set of each mask tensor the model passes, and the keep-mask of a static pattern, made
    # once and handed out as the same object to every layer (keys hold the objects, so ids are never reused)
    memo: dict[Any, tuple[Any, Tensor]] = field(default_factory=dict)
    # per layer, the first query position where the mask dropped a pair: earlier positions of a causal model come
    # out of the pass exactly as in the dense pass, so their next-token losses need not be computed again
    first_changed: dict[int, int] = field(default_factory=dict)
    target_sparsity: float | None = None  # calibrate score-dependent budgets per layer towards this (see above)
    budgets: dict[int, int] = field(default_factory=dict)  # per layer, the budget of a score-dependent mask
    # calibration so far: allowed pairs per head summed over the calibrated layers, and the pairs they dropped
    calibrated_allowed: float = 0.0
    calibrated_dropped: float = 0.0
    keep_qk: QueryKeys | None = None  # fill with every layer's queries and keys (a dense pass)
    dense_qk: QueryKeys | None = None  # a dense pass's: the recorder gets that pass's probabilities too
    # long texts (:func:`row_block`): rows per block are a multiple of ``cell`` (the store's pooling factor), and a
    # probe of one region computes only the query rows ``rows`` of the probed layer
    cell: int = 1
    rows: tuple[int, int] | None = None
    # the kernel of masked layers whose probabilities nobody reads (:func:`_fast_path`): None chooses by measurement
    # (:func:`~attnsparse_widget.kernels.choose_kernel`), "eager" never leaves the eager path
    kernel: str | None = None
    # False: a flex call that would compile (first use of its shapes in this process) takes sdpa instead, so that a
    # pass someone waits for never includes the compilation (the pipeline compiles as a step of its own)
    may_compile: bool = True
    # with a dict: per masked layer that took the fast path, (kept pairs ``[1, H|1]``, allowed pairs ``[1, 1]``), on
    # the CPU: a pass that records no probabilities still knows the sparsity it achieved (a view-first pass)
    counts: dict[int, tuple[Tensor, Tensor]] | None = None
    # :func:`layer_queries`: stop at this layer's attention call, its queries handed over in ``found_query``
    query_of: int | None = None
    found_query: Tensor | None = None

    def mask_for(self, layer: int) -> Mask | None:
        """The mask of ``layer`` (None: dense), with its own budget when the plan has one for it."""
        if self.mask is None or (self.sparse_layers is not None and layer not in self.sparse_layers):
            return None
        budget = self.budgets.get(layer)
        if budget is not None and calibrated_per_layer(self.mask):
            return self.mask.with_budget(budget)
        return self.mask

    def calibrates(self, layer: int) -> bool:
        """Whether this pass still has to choose ``layer``'s budget on its real scores."""
        return self.target_sparsity is not None and calibrated_per_layer(self.mask) and layer not in self.budgets


DenseHead = Callable[[int], Tensor]  # head h -> the dense pass's float32 probabilities of that head, [B, Tq, Tk]


class Recorder:
    """Receives, per attention call, the float32 probabilities, the keep-mask and the model's allowed set, and (a
    pass compared with a dense one, :attr:`Plan.dense_qk`) the dense pass's probabilities of the layer, per head."""

    def record(
        self, layer: int, probs: Tensor, keep: Tensor | None, allowed: Tensor, dense: DenseHead | None = None
    ) -> None:
        raise NotImplementedError

    takes_blocks = True  # False: every layer must come whole (a store that keeps full-resolution maps)

    def record_block(self, layer: int, block: RowBlock, dense: DenseHead | None = None) -> None:
        """One block of query rows of a long text's attention call (:func:`row_block`); ``dense(h)``: the dense
        pass's probabilities of head h on the block's rows and columns. :meth:`finish_layer` follows the last."""
        raise NotImplementedError

    def finish_layer(self, layer: int, allowed: Tensor) -> None:
        """Every block of ``layer`` was recorded; ``allowed``: the model's allowed set ``[1, 1, Tq, Tk]``."""
        raise NotImplementedError


@dataclass
class RowBlock:
    """What the blocked path computed for query rows ``rows = (a, b)`` of one attention call (batch of one):
    float32 probabilities ``[1, H, b - a, C]`` over the key positions ``cols`` (int64 ``[C]``, increasing; every
    pair outside them has probability 0: not allowed, or dropped by the mask), the keep-mask ``[1, H|1, b - a, C]``
    (None: every allowed pair) and the allowed set ``[1, 1, b - a, C]`` on the same columns."""

    rows: tuple[int, int]
    n_keys: int
    cols: Tensor
    probs: Tensor
    keep: Tensor | None
    allowed: Tensor


@dataclass
class QueryKeys:
    """Per layer, the queries ``[B, H, T, D]`` and keys ``[B, H_kv, T, D]`` (after rotary embeddings) that a pass's
    attention calls received: with the model's mask, scaling and soft-capping they give that pass's scores again.

    A long text's dense pass keeps no queries (566 MB at 8192 tokens for the default model): ``recompute(layer)``
    gives a layer's again from the pass's recorded block outputs (:func:`layer_queries`, bit for bit), and
    :meth:`with_queries` hands a replay one layer's, computed before the replay starts (never inside a pass)."""

    queries: list[Tensor | None]
    keys: list[Tensor | None]
    # long texts (:func:`row_block`): per layer, the log-normaliser of every row ``[B, H, T]`` (float32): with
    # it a block of the dense probabilities is rebuilt on any columns, without the rest of the row
    lse: list[Tensor | None] = field(default_factory=list)
    keeps_queries: bool = True  # False: the pass does not keep them (``recompute`` gives them)
    recompute: Callable[[int], Tensor] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def empty(cls, n_layers: int, keeps_queries: bool = True) -> QueryKeys:
        return cls([None] * n_layers, [None] * n_layers, [None] * n_layers, keeps_queries)

    @property
    def complete(self) -> bool:
        """Every layer's keys, and its queries unless the pass does not keep them."""
        queries = all(q is not None for q in self.queries) or not self.keeps_queries
        return queries and all(k is not None for k in self.keys)

    @property
    def has_queries(self) -> bool:
        """Whether every layer's queries are at hand (a pass may read them as it runs)."""
        return all(q is not None for q in self.queries)

    def with_queries(self, layer: int) -> QueryKeys:
        """These queries and keys with ``layer``'s queries at hand (recomputed when not kept): what a replay of that
        one layer reads."""
        if self.queries[layer] is not None:
            return self
        if self.recompute is None:
            raise RuntimeError(f"the queries of layer {layer} were neither kept nor can be recomputed")
        queries: list[Tensor | None] = [None] * len(self.queries)
        queries[layer] = self.recompute(layer)
        return QueryKeys(queries, self.keys, self.lse, keeps_queries=False, recompute=self.recompute)


_ACTIVE: contextvars.ContextVar[Plan | None] = contextvars.ContextVar("attnsparse_plan", default=None)


# ------------------------------------------------------------------------------------------- the attention function
def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """``[B, H_kv, T, D]`` → ``[B, H_kv·n_rep, T, D]``, each key/value head shared by ``n_rep`` query heads (GQA)."""
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def allowed_from(attention_mask: Tensor | None, module: nn.Module, n_q: int, n_k: int, device: torch.device) -> Tensor:
    """Bool ``[B|1, 1, Tq, Tk]``: the pairs the model's own mask allows (causal, padding, its own sliding window)."""
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            return attention_mask
        return attention_mask > torch.finfo(attention_mask.dtype).min / 2
    q = torch.arange(n_k - n_q, n_k, device=device).unsqueeze(-1)
    k = torch.arange(n_k, device=device).unsqueeze(0)
    allowed = (k <= q) if getattr(module, "is_causal", True) else torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    return allowed[None, None]


def attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor | None]:
    """Eager attention plus the active plan's sparse mask and capture. Shapes as transformers passes them:
    query ``[B, H, Tq, D]``, key/value ``[B, H_kv, Tk, D]``; returns ``([B, Tq, H, D], [B, H, Tq, Tk])``."""
    for unsupported_kw in ("s_aux", "sinks"):
        if kwargs.get(unsupported_kw) is not None:
            raise NotImplementedError(
                f"{type(module).__name__} passes learned attention sinks ({unsupported_kw}); attnsparse-widget does "
                f"not model them yet"
            )
    plan = _ACTIVE.get()
    n_rep = query.shape[1] // key.shape[1]
    key_states = repeat_kv(key, n_rep)
    value_states = repeat_kv(value, n_rep)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    layer = -1
    mask = None
    if plan is not None:
        plan.calls += 1
        layer = plan.layer_of(module)
        if plan.query_of == layer:  # layer_queries: this call's queries are all it wants
            plan.found_query = query
            raise _Probed
        mask = plan.mask_for(layer)
        if mask is None and plan.recorder is None and plan.keep_qk is None and softcap is None and not module.training:
            # a dense layer whose probabilities nobody reads (the other layers of a per-layer replay, dense
            # decoding): the same attention through SDPA's fused kernel, without materialising them
            out = nn.functional.scaled_dot_product_attention(
                query, key_states, value_states, attn_mask=attention_mask, scale=scaling
            )
            return out.transpose(1, 2).contiguous(), None
        if mask is not None and _takes_fast_path(plan, module, query, mask, softcap, dropout):
            fast = _fast_path(plan, module, layer, mask, query, key, value, attention_mask, scaling)
            if fast is not None:
                return fast, None
        rows = _rows_per_block(plan, module, query, key_states, mask, dropout)
        if rows is not None:
            args = (query, key, value, attention_mask, scaling, softcap)
            return _blocked(plan, module, layer, mask, rows, *args), None

    scores = eager_scores(query, key_states, attention_mask, scaling, softcap)

    keep = None
    allowed = None
    if plan is not None:
        n_q, n_k = scores.shape[-2], scores.shape[-1]
        allowed = _allowed(plan, module, attention_mask, n_q, n_k, scores.device)
        if mask is not None:
            ctx = _context(plan, module, layer, query, key)
            if plan.calibrates(layer):
                mask, keep = _calibrated(plan, layer, mask, scores, allowed, ctx)
                keep, dropped, first = _applied(mask, scores, allowed, ctx, keep)
            elif mask.score_dependent or mask.varies_by_layer:
                keep, dropped, first = _applied(mask, scores, allowed, ctx)
            else:  # positions only: the same keep-mask object for every layer of this pass
                keep, dropped, first = _memo(
                    plan, ("keep", ctx.causal, ctx.n_heads), allowed, _applied, mask, scores, allowed, ctx
                )
            # Dropped pairs get exactly what the model's own mask gives excluded pairs: finfo.min, additive-style.
            scores = scores.masked_fill_(dropped, torch.finfo(scores.dtype).min)
            if first is not None:
                plan.first_changed[layer] = min(plan.first_changed.get(layer, first), first)
            if plan.counts is not None and keep is not None:
                plan.counts[layer] = ((keep & allowed).sum(dim=(-1, -2)).cpu(), allowed.sum(dim=(-1, -2)).cpu())

    probs32 = softmax_float32(scores)
    del scores
    probs = probs32.to(value.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    out = torch.matmul(probs, value_states).transpose(1, 2).contiguous()
    if plan is not None and plan.keep_qk is not None:
        plan.keep_qk.keys[layer] = key
        if plan.keep_qk.keeps_queries:
            plan.keep_qk.queries[layer] = query
    if plan is not None and plan.recorder is not None:
        assert allowed is not None  # set above whenever there is a plan
        dense = None
        if plan.dense_qk is not None:
            dense = _dense_heads(plan.dense_qk, layer, n_rep, attention_mask, scaling, softcap)
        plan.recorder.record(layer, probs32, keep, allowed, dense)
    return out, probs


def _allowed(
    plan: Plan, module: nn.Module, attention_mask: Tensor | None, n_q: int, n_k: int, device: torch.device
) -> Tensor:
    """:func:`allowed_from` of the model's mask, made once per pass for each mask tensor the model passes."""
    return _memo(plan, ("allowed", n_q, n_k), attention_mask, allowed_from, attention_mask, module, n_q, n_k, device)


def _context(plan: Plan, module: nn.Module, layer: int, query: Tensor, key: Tensor) -> MaskContext:
    """What a mask may know about this attention call (``query [B, H, Tq, D]``, ``key [B, H_kv, Tk, D]``)."""
    return MaskContext(
        causal=bool(getattr(module, "is_causal", True)),
        layer=layer,
        n_heads=query.shape[1],
        kv_groups=query.shape[1] // key.shape[1],
        seed=plan.seed,
    )


# ------------------------------------------------------------------------------------------------ the fast path
def _takes_fast_path(
    plan: Plan, module: nn.Module, query: Tensor, mask: Mask, softcap: float | None, dropout: float
) -> bool:
    """Whether a masked call goes to a kernel that skips dropped work (:mod:`.kernels`): nobody reads its
    probabilities, the mask is known from positions alone, a batch of one, no soft-capping (neither kernel takes
    it here), no training."""
    return (
        plan.kernel != "eager"
        and plan.recorder is None
        and plan.keep_qk is None
        and not mask.score_dependent
        and softcap is None
        and not dropout
        and not module.training
        and query.shape[0] == 1
        and not (torch.is_grad_enabled() and query.requires_grad)
    )


def _static_keep(
    mask: Mask, allowed: Tensor, n_q: int, n_k: int, ctx: MaskContext, device: torch.device
) -> tuple[Tensor, int | None]:
    """A positions-only mask's kept pairs within the model's ``allowed`` (bool ``[H|1, Tq, Tk]``) and the position
    of the first query that lost a pair (None: none did)."""
    keep = mask.keep(n_k, n_queries=n_q, ctx=ctx, device=device) & allowed[0]
    rows = (allowed[0] & ~keep).any(dim=-1).any(dim=0).nonzero()
    return keep, int(rows[0]) + n_k - n_q if rows.numel() else None


def _fast_path(
    plan: Plan,
    module: nn.Module,
    layer: int,
    mask: Mask,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
) -> Tensor | None:
    """The attention output ``[1, Tq, H, D]`` of a masked layer whose probabilities nobody reads, by the kernel the
    plan names or :func:`~attnsparse_widget.kernels.choose_kernel` picks: the same kept pairs and softmax as the
    eager path, without ``[H, Tq, Tk]`` scores. None where SDPA would be chosen for a call long enough to take the
    blocked path (:func:`row_block`): on a CPU, SDPA with a mask that long holds several ``[H, Tq, Tk]`` float
    tensors (7 GB measured at 8192 tokens), while the blocked path computes each block's kept keys only."""
    n_q, n_k = query.shape[-2], key.shape[-2]
    allowed = _allowed(plan, module, attention_mask, n_q, n_k, query.device)
    ctx = _context(plan, module, layer, query, key)
    args = (mask, allowed, n_q, n_k, ctx, query.device)
    if mask.varies_by_layer:
        keep, first = _static_keep(*args)
    else:  # the same kept pairs for every layer of this pass, made once
        keep, first = _memo(plan, ("fast keep", ctx.causal, ctx.n_heads), allowed, _static_keep, *args)
    if first is not None:
        plan.first_changed[layer] = min(plan.first_changed.get(layer, first), first)
    if plan.counts is not None:
        plan.counts[layer] = _memo(plan, ("fast counts",), keep, _counted, keep, allowed)
    kernel = plan.kernel or kernels.choose_kernel(n_q, n_k, query.device)
    if kernel == "flex" and not plan.may_compile and not kernels.flex_compiled(query, key, value, keep):
        kernel = "sdpa"
    if kernel == "sdpa" and plan.kernel is None and row_block(query.shape[1], n_q, n_k, plan.cell) is not None:
        return None
    out = kernels.masked_attention(query, key, value, keep, scaling, kernel)
    return out.transpose(1, 2).contiguous()


def _counted(keep: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """Kept pairs per head ``[1, H|1]`` of a keep-mask within the allowed pairs (``keep [H|1, Tq, Tk]``, already
    within ``allowed [1, 1, Tq, Tk]``), and the allowed pairs ``[1, 1]``, as an :class:`~.store.AttentionStore`
    counts them."""
    return keep.sum(dim=(-1, -2))[None].cpu(), allowed.sum(dim=(-1, -2)).cpu()


# ------------------------------------------------------------------------------------------------ long texts
# The attention of one call is computed one block of query rows at a time when its float32 scores would take more
# than LONG_SCORES_BYTES (9 heads: beyond about 2700 tokens), in blocks of about BLOCK_SCORES_BYTES. Rows are
# independent: every row goes through the same operations as in one piece (scores, the model's mask, the sparse
# mask, a float32 softmax, ·v), only fewer at a time, and over the key positions that row block can use: the keys
# a static mask keeps (a window's band, sinks plus a band) or, for a score-dependent mask, every allowed key. The
# pairs left out have probability exactly 0 in the one-piece computation too (finfo.min before the softmax), so
# the probabilities agree to float rounding (the sums run over fewer zeros), and nothing [H, T, T] is ever held.
LONG_SCORES_BYTES = 256 * 2**20
BLOCK_SCORES_BYTES = 64 * 2**20


def row_block(n_heads: int, n_q: int, n_k: int, cell: int = 1) -> int | None:
    """Query rows per block for an attention call of this shape, a multiple of ``cell``; None: one piece."""
    if 4 * n_heads * n_q * n_k <= LONG_SCORES_BYTES:
        return None
    rows = max(cell, BLOCK_SCORES_BYTES // (4 * n_heads * n_k) // cell * cell)
    return rows if rows < n_q else None


def _rows_per_block(
    plan: Plan, module: nn.Module, query: Tensor, key_states: Tensor, mask: Mask | None, dropout: float
) -> int | None:
    """Rows per block when this call takes the blocked path, else None. It needs a batch of one, no gradients, a
    causal model (masks give the rows of a block as the last queries of its keys) and a row-local mask (the others
    read other rows' scores: they run in one piece, at the memory that takes)."""
    n_q, n_k = query.shape[-2], key_states.shape[-2]
    if (
        query.shape[0] != 1
        or n_q < 2
        or module.training
        or dropout
        or (torch.is_grad_enabled() and query.requires_grad)
        or not getattr(module, "is_causal", True)
        or (mask is not None and not mask.row_local)
        or (plan.recorder is not None and not plan.recorder.takes_blocks)
    ):
        return None
    return row_block(query.shape[1], n_q, n_k, plan.cell)


def _blocked(
    plan: Plan,
    module: nn.Module,
    layer: int,
    mask: Mask | None,
    rows_per_block: int,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    softcap: float | None,
) -> Tensor:
    """:func:`attention_forward` one block of query rows at a time (see :data:`LONG_SCORES_BYTES`): the output
    ``[1, Tq, H, D]``; each block goes to the recorder (:meth:`Recorder.record_block`), a dense pass keeping its
    queries and keys also keeps every row's log-normaliser, and a pass compared with it hands the recorder the
    dense probabilities of the same block."""
    _, n_heads, n_q, _ = query.shape
    n_k = key.shape[-2]
    n_rep = n_heads // key.shape[1]
    offset = n_k - n_q  # the key position of query 0
    allowed = _allowed(plan, module, attention_mask, n_q, n_k, query.device)
    ctx = _context(plan, module, layer, query, key)  # causal: the blocked path runs only on causal models
    calibrating = mask is not None and plan.calibrates(layer)
    if calibrating:
        assert mask is not None
        args = (query, key, attention_mask, allowed, scaling, softcap)
        mask = mask.with_budget(_budget_on_blocks(plan, mask, rows_per_block, *args, ctx))
    keep_qk, dense_qk = plan.keep_qk, plan.dense_qk
    lse = None
    if keep_qk is not None:
        lse = torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)
        keep_qk.keys[layer], keep_qk.lse[layer] = key, lse
        if keep_qk.keeps_queries:
            keep_qk.queries[layer] = query
    compared = dense_qk is not None and len(dense_qk.lse) > layer and dense_qk.lse[layer] is not None
    out = torch.zeros(1, n_q, n_heads, value.shape[-1], dtype=value.dtype, device=value.device)
    first, kept = None, 0.0
    kept_heads: Tensor | None = None  # kept pairs per head [1, H|1], for plan.counts
    lo, hi = plan.rows or (0, n_q)
    # a probe of some rows computes the blocks of the pass's own grid that hold them: the same numbers, bit for bit
    for a in range(lo // rows_per_block * rows_per_block, hi, rows_per_block):
        b = min(n_q, a + rows_per_block)
        block_allowed = allowed[:, :, a:b]
        keep = None
        if mask is None:
            cols = _columns(block_allowed[0, 0].any(0))
        elif not mask.score_dependent:  # positions only: the keys it keeps, known before any score
            keep = mask.keep(offset + b, n_queries=b - a, ctx=ctx, device=query.device)[None]
            keep = keep & block_allowed[..., : offset + b]
            cols = _columns(keep.any(dim=(0, 1, 2)))
        else:  # the mask reads every key up to the block's last query
            cols = torch.arange(offset + b, device=query.device)
        cut = (slice(None), slice(None), slice(a, b))
        cut_mask = None if attention_mask is None else _take(attention_mask[cut], cols)
        scores = eager_scores(query[cut], repeat_kv(_take(key, cols, -2), n_rep), cut_mask, scaling, softcap)
        allowed_cols = _take(block_allowed, cols)
        if mask is not None:
            if mask.score_dependent:
                keep = _block_keep(mask, scores, allowed_cols, offset + b, ctx)
            else:
                assert keep is not None
                keep = _take(keep, cols)
            dropped = allowed_cols & ~keep
            lost = dropped.any(dim=-1).flatten(0, 1).any(0).nonzero()  # the block's rows that lost a pair
            if lost.numel():
                first = offset + a + int(lost[0]) if first is None else first
            scores = scores.masked_fill_(dropped, torch.finfo(scores.dtype).min)
            kept_block = (keep & allowed_cols).sum(dim=(-1, -2))
            kept += float(kept_block.sum()) / keep.shape[1]
            kept_heads = kept_block if kept_heads is None else kept_heads + kept_block
        if lse is not None:
            lse[cut] = torch.logsumexp(scores.float(), dim=-1)
        probs32 = softmax_float32(scores)
        del scores
        out[:, a:b] = torch.matmul(probs32.to(value.dtype), repeat_kv(_take(value, cols, -2), n_rep)).transpose(1, 2)
        if plan.recorder is not None:
            dense = None
            if compared:
                assert dense_qk is not None
                dense = _dense_block(dense_qk, layer, n_rep, (a, b), cols, cut_mask, scaling, softcap)
            plan.recorder.record_block(layer, RowBlock((a, b), n_k, cols, probs32, keep, allowed_cols), dense)
        del probs32
    if first is not None:
        plan.first_changed[layer] = min(plan.first_changed.get(layer, first), first)
    if calibrating:
        assert mask is not None and mask.budget is not None
        _calibrated_layer(plan, layer, mask.budget_value, float(allowed.sum()), kept)
    if plan.counts is not None and kept_heads is not None and plan.rows is None:
        plan.counts[layer] = (kept_heads.cpu(), allowed.sum(dim=(-1, -2)).cpu())
    if plan.recorder is not None:
        plan.recorder.finish_layer(layer, allowed)
    return out


CALIBRATION_BLOCKS = 4  # row blocks, evenly spread, on which a long text's score-dependent budget is sized


def _budget_on_blocks(
    plan: Plan,
    mask: Mask,
    rows_per_block: int,
    query: Tensor,
    key: Tensor,
    attention_mask: Tensor | None,
    allowed: Tensor,
    scaling: float,
    softcap: float | None,
    ctx: MaskContext,
) -> int:
    """The budget of a score-dependent mask for one layer of a long text (the blocked :func:`_calibrated`).

    Masks that drop by position (top-k, DSA: row i keeps min(i + 1, k)) are sized exactly from the allowed counts.
    The others are sized on :data:`CALIBRATION_BLOCKS` row blocks spread evenly over the text (the last one
    included), an estimate that keeps the memory a few blocks' size; the pass counts what the chosen budget really
    keeps (the achieved sparsity, and the error feedback of the next layers)."""
    n_q, n_k = query.shape[-2], key.shape[-2]
    offset = n_k - n_q
    row_allowed = allowed[0, 0].sum(-1)
    n_allowed = float(row_allowed.sum())
    if mask.drops_by_position:
        return _choose_budget(plan, mask, lambda c: by_position_sparsity(c, row_allowed), n_allowed, n_k, True)
    starts = list(range(0, n_q, rows_per_block))
    picked = sorted(
        {starts[round(i * (len(starts) - 1) / max(1, CALIBRATION_BLOCKS - 1))] for i in range(CALIBRATION_BLOCKS)}
    )
    n_rep = query.shape[1] // key.shape[1]
    samples = []
    for a in picked:
        b, end = min(n_q, a + rows_per_block), offset + min(n_q, a + rows_per_block)
        cut_mask = None if attention_mask is None else attention_mask[:, :, a:b, :end]
        scores = eager_scores(query[:, :, a:b], repeat_kv(key[:, :, :end], n_rep), cut_mask, scaling, softcap)
        block_allowed = allowed[:, :, a:b, :end]
        samples.append((scores.float().masked_fill_(~block_allowed, float("-inf")), block_allowed, end))
    sample_allowed = sum(float(al.sum()) for _, al, _ in samples)

    def sampled_sparsity(candidate: Mask) -> float:
        kept = 0.0
        for logits, block_allowed, end in samples:
            keep = candidate.keep(end, n_queries=logits.shape[-2], scores=logits[0], ctx=ctx)[None] & block_allowed
            kept += float(keep.sum()) / keep.shape[1]
        return 1.0 - kept / max(1.0, sample_allowed)

    return _choose_budget(plan, mask, sampled_sparsity, n_allowed, n_k, True)


def _block_keep(mask: Mask, scores: Tensor, allowed: Tensor, n_keys: int, ctx: MaskContext) -> Tensor:
    """A score-dependent mask's keep-mask ``[1, H|1, R, n_keys]`` for a block of rows, the last ``R`` queries of
    keys ``0 .. n_keys - 1`` (row-local masks give the same rows as on the whole text)."""
    logits = _logits(mask, scores, allowed)
    assert logits is not None
    return mask.keep(n_keys, n_queries=scores.shape[-2], scores=logits[0], ctx=ctx)[None] & allowed


def _dense_block(
    qk: QueryKeys,
    layer: int,
    n_rep: int,
    rows: tuple[int, int],
    cols: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    softcap: float | None,
) -> DenseHead:
    """Head by head, the dense pass's probabilities of ``layer`` on a block's rows and columns: its queries and keys
    through the same operations, normalised by the row's log-normaliser the dense pass kept (``exp(s − lse)``:
    the columns a block leaves out need not be computed)."""
    query, key, lse = qk.queries[layer], qk.keys[layer], qk.lse[layer]
    assert query is not None and key is not None and lse is not None
    a, b = rows
    keys = _take(key, cols, -2)

    def head(h: int) -> Tensor:
        k = keys[:, h // n_rep : h // n_rep + 1]
        scores = eager_scores(query[:, h : h + 1, a:b], k, attention_mask, scaling, softcap)
        # floored at e^-69 ≈ 1e-30, the floor metrics.head_row_kl puts under dense probabilities anyway: exp of the
        # masked pairs' finfo.min and of denormal results is ten to thirty times slower than of the rest here
        return scores.sub_(lse[:, h : h + 1, a:b, None]).clamp_(min=_LOG_TINY).exp_()[:, 0]

    return head


_LOG_TINY = -69.0  # log(1e-30): dense probabilities below it are measured as 1e-30 (see _dense_block)


def _columns(used: Tensor) -> Tensor:
    """The key positions a block computes: those ``used`` marks (bool ``[Tk]``), as int64 positions."""
    return used.nonzero().squeeze(-1)


def _take(x: Tensor, cols: Tensor, dim: int = -1) -> Tensor:
    """``x`` at the key positions ``cols`` along ``dim``: a view when they are one contiguous run."""
    n = cols.numel()
    if n and int(cols[-1]) - int(cols[0]) + 1 == n:
        start = int(cols[0])
        return x.narrow(dim, start, n)
    return x.index_select(dim, cols)


def eager_scores(
    query: Tensor, key_states: Tensor, attention_mask: Tensor | None, scaling: float, softcap: float | None
) -> Tensor:
    """Eager attention's scores before the softmax: its own operations, done in place on the one ``[B, H, Tq, Tk]``
    tensor (151 MB at 2048 tokens for 9 heads): the same numbers, a third of the memory."""
    scores = torch.matmul(query, key_states.transpose(2, 3)).mul_(scaling)
    if softcap is not None:
        scores = scores.div_(softcap).tanh_().mul_(softcap)
    if attention_mask is not None:
        scores = scores.add_(attention_mask)
    return scores


def _dense_heads(
    qk: QueryKeys, layer: int, n_rep: int, attention_mask: Tensor | None, scaling: float, softcap: float | None
) -> DenseHead:
    """Head by head, the probabilities of ``layer`` in the dense pass that kept ``qk``: its queries and keys through
    the same operations (the model's mask is the same for both passes of one text), one head's ``[B, Tq, Tk]`` at a
    time."""
    query, key = qk.queries[layer], qk.keys[layer]
    assert query is not None and key is not None

    def head(h: int) -> Tensor:
        k = key[:, h // n_rep : h // n_rep + 1]
        scores = eager_scores(query[:, h : h + 1], k, attention_mask, scaling, softcap)
        return nn.functional.softmax(scores, dim=-1, dtype=torch.float32)[:, 0]

    return head


def softmax_float32(scores: Tensor) -> Tensor:
    """``softmax(scores, dim=-1, dtype=float32)``, bit for bit. Float32 scores that no autograd graph needs are
    overwritten one head at a time (rows are independent): at 2048 tokens that spares a second [B, H, T, T]
    tensor (151 MB for 9 heads) in every attention call."""
    if scores.dtype != torch.float32 or scores.dim() != 4 or (scores.requires_grad and torch.is_grad_enabled()):
        return nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    for h in range(scores.shape[1]):
        scores[:, h] = nn.functional.softmax(scores[:, h], dim=-1)
    return scores


def _memo(plan: Plan, key: tuple[Any, ...], owner: Tensor | None, make: Callable[..., Any], *args: Any) -> Any:
    """``make(*args)`` once per pass for ``owner`` (a tensor the model hands to every layer) and ``key``."""
    slot = (*key, id(owner))
    found = plan.memo.get(slot)
    if found is not None and found[0] is owner:
        return found[1]
    value = make(*args)
    plan.memo[slot] = (owner, value)
    return value


def _applied(
    mask: Mask, scores: Tensor, allowed: Tensor, ctx: MaskContext, keep: Tensor | None = None
) -> tuple[Tensor, Tensor, int | None]:
    """The keep-mask of one attention call (made here unless given), the pairs it drops from the allowed ones, and
    the position of the first query that lost a pair (None: none did)."""
    if keep is None:
        keep = sparse_keep(mask, scores, allowed, ctx)
    dropped = allowed & ~keep
    rows = dropped.flatten(0, 1).any(dim=-1).any(dim=0).nonzero()
    first = int(rows[0]) + scores.shape[-1] - scores.shape[-2] if rows.numel() else None
    return keep, dropped, first


# error feedback starts once the calibrated layers so far are this far from the target: within it every layer aims at
# the target itself, so a budget that meets it to a fraction of a step (top-k's k) stays one value for all layers
_DEAD_BAND = SPARSITY_TOLERANCE / 4


def _calibrated(
    plan: Plan, layer: int, mask: Mask, scores: Tensor, allowed: Tensor, ctx: MaskContext
) -> tuple[Mask, Tensor]:
    """Choose ``layer``'s budget on its real scores (recorded in ``plan.budgets``) and return the mask with it and
    its keep-mask: the one calibration (:func:`~attnsparse_widget.masks.base.calibrate`), aimed by :func:`_aim`."""
    assert plan.target_sparsity is not None and mask.budget is not None
    b, _, n_q, n_k = scores.shape
    allowed = allowed.expand(b, 1, n_q, n_k)
    row_allowed = allowed[:, 0].sum(-1)
    logits = _logits(mask, scores, allowed)
    target, start = _aim(plan, float(row_allowed.sum()))
    chosen, keep = calibrate(
        mask, target, lambda c: sparse_keep(c, scores, allowed, ctx, logits), row_allowed, n_k, ctx.causal, start
    )
    _calibrated_layer(plan, layer, chosen.budget_value, float(row_allowed.sum()), float(keep.sum()) / keep.shape[1])
    return chosen, keep


def _aim(plan: Plan, n_allowed: float) -> tuple[float, int | None]:
    """The sparsity the next calibrated layer (``n_allowed`` allowed pairs per head) aims at, and the budget its
    search starts from (the previous layer's; None: the mask's own, sized on surrogate scores).

    The aim is ``plan.target_sparsity``, or, once the calibrated layers so far (weighted by their allowed pairs, as
    the overall achieved sparsity is) are more than :data:`_DEAD_BAND` from it, the sparsity that brings them and
    this layer to it."""
    assert plan.target_sparsity is not None
    total = plan.calibrated_allowed + n_allowed
    target = plan.target_sparsity
    if abs(plan.calibrated_dropped - target * plan.calibrated_allowed) > _DEAD_BAND * max(1.0, plan.calibrated_allowed):
        # the layers so far are off the target: aim this one so that, with them, the target is met
        target = min(max((target * total - plan.calibrated_dropped) / max(1.0, n_allowed), 0.0), 1.0)
    return target, plan.budgets[max(plan.budgets)] if plan.budgets else None


def _choose_budget(
    plan: Plan, mask: Mask, sparsity_at: Callable[[Mask], float], n_allowed: float, n_k: int, causal: bool
) -> int:
    """The budget of a long text's calibrated layer, measured by ``sparsity_at`` (row blocks sampled over the
    text: :func:`_budget_on_blocks`), by the one search, aimed by :func:`_aim`."""
    target, start = _aim(plan, n_allowed)
    return mask.budget_for(target, sparsity_at, n_k, causal, start)


def _calibrated_layer(plan: Plan, layer: int, budget: int, n_allowed: float, kept_per_head: float) -> None:
    """Record a calibrated layer's budget and what it really kept (the error feedback of the next layers)."""
    plan.budgets[layer] = budget
    plan.calibrated_allowed += n_allowed
    plan.calibrated_dropped += n_allowed - kept_per_head


def _logits(mask: Mask, scores: Tensor, allowed: Tensor) -> Tensor | None:
    """What a score-dependent mask reads: float32 logits with ``-inf`` where the model's mask excludes the pair."""
    return scores.float().masked_fill(~allowed, float("-inf")) if mask.score_dependent else None


def sparse_keep(mask: Mask, scores: Tensor, allowed: Tensor, ctx: MaskContext, logits: Tensor | None = None) -> Tensor:
    """The final keep-mask ``[B, H|1, Tq, Tk]`` of ``mask`` for one attention call, within the model's ``allowed``.

    Masks work in compact positions (no padding): each padded batch row is reduced to its valid keys and queries,
    masked there, and scattered back. Rows the model itself leaves empty (padding queries) stay as the model has
    them. ``logits``: :func:`_logits` of these scores when already made (a calibration evaluates several budgets).
    """
    b, n_heads, n_q, n_k = scores.shape
    allowed = allowed.expand(b, 1, n_q, n_k)
    if logits is None:
        logits = _logits(mask, scores, allowed)
    if b == 1 and bool(allowed[0, 0].any(-1).all()) and bool(allowed[0, 0].any(0).all()):
        # no padding: the common case, no compaction
        scores_0 = None if logits is None else logits[0]
        return mask.keep(n_k, n_queries=n_q, scores=scores_0, ctx=ctx, device=scores.device) & allowed
    out = allowed.expand(b, n_heads, n_q, n_k).clone()  # rows left alone keep what the model allows
    query_key = torch.arange(n_k - n_q, n_k, device=scores.device)  # the key position of each query
    for row in range(b):
        ok = allowed[row, 0]
        valid_key = ok.any(0)
        keys = valid_key.nonzero().squeeze(-1)
        # padding queries (not themselves a valid token) stay as the model has them
        queries = (ok.any(1) & valid_key[query_key]).nonzero().squeeze(-1)
        if queries.numel() == 0:
            continue
        sub = None if logits is None else logits[row][:, queries][:, :, keys]
        keep = mask.keep(int(keys.numel()), n_queries=int(queries.numel()), scores=sub, ctx=ctx, device=scores.device)
        out[row][:, queries[:, None], keys[None, :]] = keep.expand(n_heads, -1, -1)
    return out & allowed


# ------------------------------------------------------------------------------------------------ registration
_registered = False


def register() -> None:
    """Register the attention function and its mask function under ``"attnsparse"`` (idempotent)."""
    global _registered
    if not _registered:
        AttentionInterface.register(ATTN_NAME, attention_forward)
        AttentionMaskInterface.register(ATTN_NAME, eager_mask)
        _registered = True


# -------------------------------------------------------------------------------------------- switching a model
@contextlib.contextmanager
def attention_active(model: PreTrainedModel, plan: Plan) -> Iterator[Plan]:
    """Run ``model`` with :func:`attention_forward` and ``plan`` inside the block; restore everything after.

    Restores the attention implementation of every config, the train/eval mode of every module, and the plan
    context, whatever happens in the block. Holds the model's :func:`model_lock` throughout.
    """
    register()
    check_supported(model)
    with model_lock(model):
        with _switched(model, plan):
            yield plan


@contextlib.contextmanager
def _switched(model: PreTrainedModel, plan: Plan) -> Iterator[None]:
    token = _ACTIVE.set(plan)
    try:
        with switched_to(model, ATTN_NAME):
            yield
    finally:
        _ACTIVE.reset(token)


class _Probed(Exception):
    """Raised once the probed layer is recorded: the rest of the pass is not needed."""


class _OneLayer(Recorder):
    """Hands ``layer``'s attention to ``into`` and stops the pass once it is recorded."""

    def __init__(self, layer: int, into: Recorder) -> None:
        self.layer, self.into, self.done = layer, into, False

    @property
    def takes_blocks(self) -> bool:  # type: ignore[override]
        return self.into.takes_blocks

    def record(
        self, layer: int, probs: Tensor, keep: Tensor | None, allowed: Tensor, dense: DenseHead | None = None
    ) -> None:
        if layer == self.layer:
            self.into.record(layer, probs, keep, allowed, dense)
            self.done = True
            raise _Probed

    def record_block(self, layer: int, block: RowBlock, dense: DenseHead | None = None) -> None:
        if layer == self.layer:
            self.into.record_block(layer, block, dense)

    def finish_layer(self, layer: int, allowed: Tensor) -> None:
        if layer == self.layer:
            self.into.finish_layer(layer, allowed)
            self.done = True
            raise _Probed


class _LayerProbe(Recorder):
    def __init__(self, layer: int, rows: tuple[int, int] | None = None) -> None:
        self.layer = layer
        self.rows = rows
        self.found: tuple[Tensor, Tensor | None, Tensor] | None = None
        self._probs: Tensor | None = None
        self._keep: Tensor | None = None

    def record(
        self, layer: int, probs: Tensor, keep: Tensor | None, allowed: Tensor, dense: DenseHead | None = None
    ) -> None:
        if layer == self.layer:
            lo, hi = self.rows or (0, probs.shape[-2])
            self.found = (
                probs[:, :, lo:hi].detach().to("cpu", torch.float32),
                None if keep is None else keep[:, :, lo:hi].detach().to("cpu"),
                allowed[:, :, lo:hi].detach().to("cpu"),
            )
            raise _Probed

    def record_block(self, layer: int, block: RowBlock, dense: DenseHead | None = None) -> None:
        """Scatter a block's rows and columns into the probed rows at full width (zeros elsewhere)."""
        if layer != self.layer:
            return
        lo, hi = self.rows or (0, block.n_keys)
        a, b = max(lo, block.rows[0]), min(hi, block.rows[1])  # the asked rows within the block
        if a >= b:
            return
        inside = slice(a - block.rows[0], b - block.rows[0])
        heads = block.probs.shape[1]
        if self._probs is None:
            self._probs = torch.zeros(1, heads, hi - lo, block.n_keys)
        probs = block.probs[:, :, inside].detach().to("cpu", torch.float32)
        self._probs[:, :, a - lo : b - lo].index_copy_(-1, block.cols.cpu(), probs)
        if block.keep is not None:
            if self._keep is None:
                self._keep = torch.zeros(1, block.keep.shape[1], hi - lo, block.n_keys, dtype=torch.bool)
            keep = block.keep[:, :, inside].detach().to("cpu")
            self._keep[:, :, a - lo : b - lo].index_copy_(-1, block.cols.cpu(), keep)

    def finish_layer(self, layer: int, allowed: Tensor) -> None:
        if layer != self.layer:
            return
        assert self._probs is not None
        lo, hi = self.rows or (0, allowed.shape[-2])
        self.found = (self._probs, self._keep, allowed[:, :, lo:hi].detach().to("cpu"))
        raise _Probed


def layer_attention(
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask | None,
    layer: int,
    outputs: LayerOutputs,
    seed: int = 0,
    budgets: dict[int, int] | None = None,
    rows: tuple[int, int] | None = None,
    cell: int = 1,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Probabilities, keep-mask and allowed set of one layer of a recorded pass, recomputed at full resolution:
    ``[1, H, R, T]``, ``[1, H|1, R, T]`` (None: the pass kept every allowed pair), ``[1, 1, R, T]`` for the query
    rows ``rows`` (half-open; None: all ``T``).

    Blocks ``0 .. layer-1`` replay the pass's recorded outputs, so block ``layer`` sees exactly the input it saw
    then and computes exactly the same scores, mask and probabilities; of a long text only the blocks of rows
    (:func:`row_block`) that hold the asked rows are computed, and the pass stops right after. ``mask`` is the
    pass's mask (None for the dense pass), ``budgets`` the per-layer budgets the pass chose, ``cell`` its
    :attr:`Plan.cell` (the same blocks of rows as the pass: the same numbers, bit for bit)."""
    probe = _LayerProbe(layer, rows)
    _replayed(model, ids, layer, outputs, probe, mask=mask, seed=seed, budgets=budgets, cell=cell, rows=rows)
    if probe.found is None:
        raise unsupported(model, f"layer {layer} did not call the attention function when replayed")
    return probe.found


def record_layer(
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask | None,
    layer: int,
    outputs: LayerOutputs,
    into: Recorder,
    *,
    seed: int = 0,
    budgets: dict[int, int] | None = None,
    cell: int = 1,
    dense_qk: QueryKeys | None = None,
) -> None:
    """Record one layer of a pass into ``into`` (a store) as the pass would have: blocks ``0 .. layer-1`` replay the
    pass's recorded ``outputs`` (see :func:`layer_attention`: the same input, scores, mask and probabilities), the
    rows in the store's blocks of ``cell``, and with ``dense_qk`` (a dense pass's queries and keys) the layer is
    measured against that pass's as it is recorded. The pass stops right after the layer."""
    one = _OneLayer(layer, into)
    _replayed(model, ids, layer, outputs, one, mask=mask, seed=seed, budgets=budgets, cell=cell, dense_qk=dense_qk)
    if not one.done:
        raise unsupported(model, f"layer {layer} did not call the attention function when replayed")


def layer_queries(model: PreTrainedModel, ids: Tensor, layer: int, outputs: LayerOutputs) -> Tensor:
    """The queries ``[B, H, T, D]`` (after rotary embeddings) that ``layer``'s attention call received in the pass
    whose block outputs are ``outputs``: blocks ``0 .. layer-1`` replay them, so block ``layer`` gets exactly the
    input it had and its projections give exactly the same queries (the same operations on the same shapes); the
    pass stops at that call, before any attention is computed."""
    plan = Plan(layer_of=layer_indexer(model), mask=None, query_of=layer)
    try:
        with torch.inference_mode(), attention_active(model, plan), start_at_layer(model, layer, outputs):
            model(input_ids=ids, use_cache=False)
    except _Probed:
        pass
    if plan.found_query is None:
        raise unsupported(model, f"layer {layer} did not call the attention function when replayed")
    return plan.found_query


def _replayed(
    model: PreTrainedModel,
    ids: Tensor,
    layer: int,
    outputs: LayerOutputs,
    recorder: Recorder,
    *,
    mask: Mask | None,
    seed: int,
    budgets: dict[int, int] | None,
    cell: int,
    rows: tuple[int, int] | None = None,
    dense_qk: QueryKeys | None = None,
) -> None:
    """A pass of ``mask`` (with the pass's ``seed``, ``budgets`` and ``cell``) that starts at ``layer`` (the blocks
    before replay ``outputs``) and ends when ``recorder`` has what it wants (:class:`_Probed`)."""
    plan = Plan(
        layer_of=layer_indexer(model),
        mask=mask,
        recorder=recorder,
        seed=seed,
        budgets=dict(budgets or {}),
        rows=rows,
        cell=cell,
        dense_qk=dense_qk,
    )
    try:
        with torch.inference_mode(), attention_active(model, plan), start_at_layer(model, layer, outputs):
            model(input_ids=ids, use_cache=False)
    except _Probed:
        pass
