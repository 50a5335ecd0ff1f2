"""The eager attention's operations, as transformers does them (scores, the model's allowed pairs, the float32 softmax),
and the keep-mask of a sparse mask for one attention call."""

from __future__ import annotations

import torch
from torch import nn

from ..masks import Mask, MaskContext
from .plan import DenseHead, Plan, QueryKeys, once_per_pass

Tensor = torch.Tensor


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


def allowed_for(
    plan: Plan, module: nn.Module, attention_mask: Tensor | None, n_q: int, n_k: int, device: torch.device
) -> Tensor:
    """:func:`allowed_from` of the model's mask, made once per pass for each mask tensor the model passes."""
    return once_per_pass(
        plan, ("allowed", n_q, n_k), attention_mask, allowed_from, attention_mask, module, n_q, n_k, device
    )


def context_of(plan: Plan, module: nn.Module, layer: int, query: Tensor, key: Tensor) -> MaskContext:
    """What a mask may know about this attention call (``query [B, H, Tq, D]``, ``key [B, H_kv, Tk, D]``)."""
    return MaskContext(
        causal=bool(getattr(module, "is_causal", True)),
        layer=layer,
        n_heads=query.shape[1],
        kv_groups=query.shape[1] // key.shape[1],
        seed=plan.seed,
    )


def columns(used: Tensor) -> Tensor:
    """The key positions a block computes: those ``used`` marks (bool ``[Tk]``), as int64 positions."""
    return used.nonzero().squeeze(-1)


def take(x: Tensor, cols: Tensor, dim: int = -1) -> Tensor:
    """``x`` at the key positions ``cols`` along ``dim``: a view when they are one contiguous run."""
    n = cols.numel()
    if n and int(cols[-1]) - int(cols[0]) + 1 == n:
        start = int(cols[0])
        return x.narrow(dim, start, n)
    return x.index_select(dim, cols)


def eager_scores(
    query: Tensor, key_states: Tensor, allowed: Tensor | None, scaling: float, softcap: float | None
) -> Tensor:
    """Eager attention's scores before the softmax: its own operations, done in place on the one ``[B, H, Tq, Tk]``
    tensor (151 MB at 2048 tokens for 9 heads): the same numbers, a third of the memory. The pairs the model does
    not allow (``allowed`` bool ``[B|1, 1, Tq, Tk]``; None: all) get ``finfo.min``, as eager's additive mask gives
    them: ``s + finfo.min`` rounds to ``finfo.min`` for any score below 1e31, so the numbers are eager's, bit for
    bit, without its ``[T, T]`` float mask (268 MB at 8192 tokens)."""
    scores = torch.matmul(query, key_states.transpose(2, 3)).mul_(scaling)
    if softcap is not None:
        scores = scores.div_(softcap).tanh_().mul_(softcap)
    if allowed is not None:
        scores = scores.masked_fill_(~allowed, torch.finfo(scores.dtype).min)
    return scores


def dense_heads(
    qk: QueryKeys, layer: int, n_rep: int, allowed: Tensor | None, scaling: float, softcap: float | None
) -> DenseHead:
    """Head by head, the probabilities of ``layer`` in the dense pass that kept ``qk``: its queries and keys through
    the same operations (the model's mask is the same for both passes of one text), one head's ``[B, Tq, Tk]`` at a
    time."""
    query, key = qk.queries[layer], qk.keys[layer]
    assert query is not None and key is not None

    def head(h: int) -> Tensor:
        k = key[:, h // n_rep : h // n_rep + 1]
        scores = eager_scores(query[:, h : h + 1], k, allowed, scaling, softcap)
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


def applied(
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


def score_logits(mask: Mask, scores: Tensor, allowed: Tensor) -> Tensor | None:
    """What a score-dependent mask reads: float32 logits with ``-inf`` where the model's mask excludes the pair."""
    return scores.float().masked_fill(~allowed, float("-inf")) if mask.score_dependent else None


def sparse_keep(mask: Mask, scores: Tensor, allowed: Tensor, ctx: MaskContext, logits: Tensor | None = None) -> Tensor:
    """The final keep-mask ``[B, H|1, Tq, Tk]`` of ``mask`` for one attention call, within the model's ``allowed``.

    Masks work in compact positions (no padding): each padded batch row is reduced to its valid keys and queries,
    masked there, and scattered back. Rows the model itself leaves empty (padding queries) stay as the model has
    them. ``logits``: :func:`score_logits` of these scores when already made (a calibration evaluates several budgets).
    """
    b, n_heads, n_q, n_k = scores.shape
    allowed = allowed.expand(b, 1, n_q, n_k)
    if logits is None:
        logits = score_logits(mask, scores, allowed)
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
