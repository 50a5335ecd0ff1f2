"""Long texts: one attention call one block of query rows at a time, over the keys each block can use."""

from __future__ import annotations

import torch
from torch import nn

from ..masks import Mask, MaskContext
from ..masks.base import by_position_sparsity
from .calibration import calibrated_layer, choose_budget
from .eager import allowed_for, columns, context_of, eager_scores, repeat_kv, score_logits, softmax_float32, take
from .plan import DenseHead, Plan, QueryKeys, RowBlock

Tensor = torch.Tensor


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


def rows_per_block(
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


def blocked(
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
    allowed = allowed_for(plan, module, attention_mask, n_q, n_k, query.device)
    ctx = context_of(plan, module, layer, query, key)  # causal: the blocked path runs only on causal models
    calibrating = mask is not None and plan.calibrates(layer)
    if calibrating:
        assert mask is not None
        args = (query, key, allowed, scaling, softcap)
        mask = mask.with_budget(budget_on_blocks(plan, mask, rows_per_block, *args, ctx))
    keep_qk, dense_qk = plan.keep_qk, plan.dense_qk
    lse = None
    if keep_qk is not None:
        lse = torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)
        keep_qk.lse[layer] = lse
        if keep_qk.kept:
            keep_qk.queries[layer], keep_qk.keys[layer] = query, key
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
            cols = columns(block_allowed[0, 0].any(0))
        elif not mask.score_dependent:  # positions only: the keys it keeps, known before any score
            keep = mask.keep(offset + b, n_queries=b - a, ctx=ctx, device=query.device)[None]
            keep = keep & block_allowed[..., : offset + b]
            cols = columns(keep.any(dim=(0, 1, 2)))
        else:  # the mask reads every key up to the block's last query
            cols = torch.arange(offset + b, device=query.device)
        cut = (slice(None), slice(None), slice(a, b))
        allowed_cols = take(block_allowed, cols)
        scores = eager_scores(query[cut], repeat_kv(take(key, cols, -2), n_rep), allowed_cols, scaling, softcap)
        if mask is not None:
            if mask.score_dependent:
                keep = block_keep(mask, scores, allowed_cols, offset + b, ctx)
            else:
                assert keep is not None
                keep = take(keep, cols)
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
        out[:, a:b] = torch.matmul(probs32.to(value.dtype), repeat_kv(take(value, cols, -2), n_rep)).transpose(1, 2)
        if plan.recorder is not None:
            dense = None
            if compared:
                assert dense_qk is not None
                dense = dense_block(dense_qk, layer, n_rep, (a, b), cols, allowed_cols, scaling, softcap)
            plan.recorder.record_block(layer, RowBlock((a, b), n_k, cols, probs32, keep, allowed_cols), dense)
        del probs32
    if first is not None:
        plan.first_changed[layer] = min(plan.first_changed.get(layer, first), first)
    if calibrating:
        assert mask is not None and mask.budget is not None
        calibrated_layer(plan, layer, mask.budget_value, float(allowed.sum()), kept)
    if plan.counts is not None and kept_heads is not None and plan.rows is None:
        plan.counts[layer] = (kept_heads.cpu(), allowed.sum(dim=(-1, -2)).cpu())
    if plan.recorder is not None:
        plan.recorder.finish_layer(layer, allowed)
    return out


CALIBRATION_BLOCKS = 4  # row blocks, evenly spread, on which a long text's score-dependent budget is sized


def budget_on_blocks(
    plan: Plan,
    mask: Mask,
    rows_per_block: int,
    query: Tensor,
    key: Tensor,
    allowed: Tensor,
    scaling: float,
    softcap: float | None,
    ctx: MaskContext,
) -> int:
    """The budget of a score-dependent mask for one layer of a long text (the blocked :func:`calibrated`).

    Masks that drop by position (top-k, DSA: row i keeps min(i + 1, k)) are sized exactly from the allowed counts.
    The others are sized on :data:`CALIBRATION_BLOCKS` row blocks spread evenly over the text (the last one
    included), an estimate that keeps the memory a few blocks' size; the pass counts what the chosen budget really
    keeps (the achieved sparsity, and the error feedback of the next layers)."""
    n_q, n_k = query.shape[-2], key.shape[-2]
    offset = n_k - n_q
    row_allowed = allowed[0, 0].sum(-1)
    n_allowed = float(row_allowed.sum())
    if mask.drops_by_position:
        return choose_budget(plan, mask, lambda c: by_position_sparsity(c, row_allowed), n_allowed, n_k, True)
    starts = list(range(0, n_q, rows_per_block))
    picked = sorted(
        {starts[round(i * (len(starts) - 1) / max(1, CALIBRATION_BLOCKS - 1))] for i in range(CALIBRATION_BLOCKS)}
    )
    n_rep = query.shape[1] // key.shape[1]
    samples = []
    for a in picked:
        b, end = min(n_q, a + rows_per_block), offset + min(n_q, a + rows_per_block)
        scores = eager_scores(
            query[:, :, a:b], repeat_kv(key[:, :, :end], n_rep), allowed[:, :, a:b, :end], scaling, softcap
        )
        block_allowed = allowed[:, :, a:b, :end]
        samples.append((scores.float().masked_fill_(~block_allowed, float("-inf")), block_allowed, end))
    sample_allowed = sum(float(al.sum()) for _, al, _ in samples)

    def sampled_sparsity(candidate: Mask) -> float:
        kept = 0.0
        for logits, block_allowed, end in samples:
            keep = candidate.keep(end, n_queries=logits.shape[-2], scores=logits[0], ctx=ctx)[None] & block_allowed
            kept += float(keep.sum()) / keep.shape[1]
        return 1.0 - kept / max(1.0, sample_allowed)

    return choose_budget(plan, mask, sampled_sparsity, n_allowed, n_k, True)


def block_keep(mask: Mask, scores: Tensor, allowed: Tensor, n_keys: int, ctx: MaskContext) -> Tensor:
    """A score-dependent mask's keep-mask ``[1, H|1, R, n_keys]`` for a block of rows, the last ``R`` queries of
    keys ``0 .. n_keys - 1`` (row-local masks give the same rows as on the whole text)."""
    logits = score_logits(mask, scores, allowed)
    assert logits is not None
    return mask.keep(n_keys, n_queries=scores.shape[-2], scores=logits[0], ctx=ctx)[None] & allowed


def dense_block(
    qk: QueryKeys,
    layer: int,
    n_rep: int,
    rows: tuple[int, int],
    cols: Tensor,
    allowed: Tensor,
    scaling: float,
    softcap: float | None,
) -> DenseHead:
    """Head by head, the dense pass's probabilities of ``layer`` on a block's rows and columns: its queries and keys
    through the same operations, normalised by the row's log-normaliser the dense pass kept (``exp(s − lse)``:
    the columns a block leaves out need not be computed)."""
    query, key, lse = qk.queries[layer], qk.keys[layer], qk.lse[layer]
    assert query is not None and key is not None and lse is not None
    a, b = rows
    keys = take(key, cols, -2)

    def head(h: int) -> Tensor:
        k = keys[:, h // n_rep : h // n_rep + 1]
        scores = eager_scores(query[:, h : h + 1, a:b], k, allowed, scaling, softcap)
        # floored at e^-69 ≈ 1e-30, the floor metrics.head_row_kl puts under dense probabilities anyway: exp of the
        # masked pairs' finfo.min and of denormal results is ten to thirty times slower than of the rest here
        return scores.sub_(lse[:, h : h + 1, a:b, None]).clamp_(min=LOG_TINY).exp_()[:, 0]

    return head


LOG_TINY = -69.0  # log(1e-30): dense probabilities below it are measured as 1e-30 (see dense_block)
