"""Masked layers nobody reads: the attention by a kernel that skips the dropped work (:mod:`..kernels`)."""

from __future__ import annotations

import torch
from torch import nn

from .. import kernels
from ..masks import Mask, MaskContext
from . import row_blocks
from .eager import allowed_for, context_of
from .plan import Plan, once_per_pass

Tensor = torch.Tensor


def takes_fast_path(
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


def fast_path(
    plan: Plan,
    module: nn.Module,
    layer: int,
    mask: Mask,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    kernel: str | None = None,
) -> Tensor | None:
    """The attention output ``[1, Tq, H, D]`` of a masked layer whose probabilities nobody reads, by the kernel the
    plan names or :func:`~attnsparse_widget.kernels.choose_kernel` picks: the same kept pairs and softmax as the
    eager path, without ``[H, Tq, Tk]`` scores. None where SDPA would be chosen for a call long enough to take the
    blocked path (:func:`row_block`): on a CPU, SDPA with a mask that long holds several ``[H, Tq, Tk]`` float
    tensors (7 GB measured at 8192 tokens), while the blocked path computes each block's kept keys only. ``kernel``
    given (the layer's :data:`~.plan.Route` in a pass that computes skipped blocks again): that kernel, always."""
    n_q, n_k = query.shape[-2], key.shape[-2]
    forced = kernel or plan.kernel
    kernel = forced or kernels.choose_kernel(n_q, n_k, query.device)
    long_call = row_blocks.row_block(query.shape[1], n_q, n_k, plan.cell) is not None
    if forced is None and long_call:
        uncompiled = not plan.may_compile and not kernels.flex_compiled_for_any_mask(query, key, value)
        if kernel == "sdpa" or (kernel == "flex" and uncompiled):
            return None  # declined before any [H|1, Tq, Tk] keep-mask is made (400 MB at 8192 tokens)
    allowed = allowed_for(plan, module, attention_mask, n_q, n_k, query.device)
    ctx = context_of(plan, module, layer, query, key)
    args = (mask, allowed, n_q, n_k, ctx, query.device)
    if mask.varies_by_layer:
        keep, first = _static_keep(*args)
    else:  # the same kept pairs for every layer of this pass, made once
        keep, first = once_per_pass(plan, ("fast keep", ctx.causal, ctx.n_heads), allowed, _static_keep, *args)
    if first is not None:
        plan.first_changed[layer] = min(plan.first_changed.get(layer, first), first)
    if plan.counts is not None:
        plan.counts[layer] = once_per_pass(plan, ("fast counts",), keep, _counted, keep, allowed)
    if (
        kernel == "flex"
        and forced is None
        and not plan.may_compile
        and not kernels.flex_compiled(query, key, value, keep)
    ):
        kernel = "sdpa"
    if kernel == "sdpa" and forced is None and long_call:
        return None
    out = kernels.masked_attention(query, key, value, keep, scaling, kernel)
    plan.taken[layer] = (kernel, 0)
    return out.transpose(1, 2).contiguous()


def _counted(keep: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """Kept pairs per head ``[1, H|1]`` of a keep-mask within the allowed pairs (``keep [H|1, Tq, Tk]``, already
    within ``allowed [1, 1, Tq, Tk]``), and the allowed pairs ``[1, 1]``, as an :class:`~.store.AttentionStore`
    counts them."""
    return keep.sum(dim=(-1, -2))[None].cpu(), allowed.sum(dim=(-1, -2)).cpu()
