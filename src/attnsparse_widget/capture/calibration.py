"""Sizing a score-dependent mask's budget per layer on that layer's real scores, towards the pass's target sparsity
(:attr:`Plan.target_sparsity`), with error feedback across layers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..masks import Mask, MaskContext
from ..masks.base import SPARSITY_TOLERANCE, calibrate
from .eager import score_logits, sparse_keep
from .plan import Plan

Tensor = torch.Tensor


# error feedback starts once the calibrated layers so far are this far from the target: within it every layer aims at
# the target itself, so a budget that meets it to a fraction of a step (top-k's k) stays one value for all layers
DEAD_BAND = SPARSITY_TOLERANCE / 4


def calibrated(
    plan: Plan, layer: int, mask: Mask, scores: Tensor, allowed: Tensor, ctx: MaskContext
) -> tuple[Mask, Tensor]:
    """Choose ``layer``'s budget on its real scores (recorded in ``plan.budgets``) and return the mask with it and
    its keep-mask: the one calibration (:func:`~attnsparse_widget.masks.base.calibrate`), aimed by :func:`aim`."""
    assert plan.target_sparsity is not None and mask.budget is not None
    b, _, n_q, n_k = scores.shape
    allowed = allowed.expand(b, 1, n_q, n_k)
    row_allowed = allowed[:, 0].sum(-1)
    logits = score_logits(mask, scores, allowed)
    target, start = aim(plan, float(row_allowed.sum()))
    chosen, keep = calibrate(
        mask, target, lambda c: sparse_keep(c, scores, allowed, ctx, logits), row_allowed, n_k, ctx.causal, start
    )
    calibrated_layer(plan, layer, chosen.budget_value, float(row_allowed.sum()), float(keep.sum()) / keep.shape[1])
    return chosen, keep


def aim(plan: Plan, n_allowed: float) -> tuple[float, int | None]:
    """The sparsity the next calibrated layer (``n_allowed`` allowed pairs per head) aims at, and the budget its
    search starts from (the previous layer's; None: the mask's own, sized on surrogate scores).

    The aim is ``plan.target_sparsity``, or, once the calibrated layers so far (weighted by their allowed pairs, as
    the overall achieved sparsity is) are more than :data:`DEAD_BAND` from it, the sparsity that brings them and
    this layer to it."""
    assert plan.target_sparsity is not None
    total = plan.calibrated_allowed + n_allowed
    target = plan.target_sparsity
    if abs(plan.calibrated_dropped - target * plan.calibrated_allowed) > DEAD_BAND * max(1.0, plan.calibrated_allowed):
        # the layers so far are off the target: aim this one so that, with them, the target is met
        target = min(max((target * total - plan.calibrated_dropped) / max(1.0, n_allowed), 0.0), 1.0)
    return target, plan.budgets[max(plan.budgets)] if plan.budgets else None


def choose_budget(
    plan: Plan, mask: Mask, sparsity_at: Callable[[Mask], float], n_allowed: float, n_k: int, causal: bool
) -> int:
    """The budget of a long text's calibrated layer, measured by ``sparsity_at`` (row blocks sampled over the
    text: :func:`budget_on_blocks`), by the one search, aimed by :func:`aim`."""
    target, start = aim(plan, n_allowed)
    return mask.budget_for(target, sparsity_at, n_k, causal, start)


def calibrated_layer(plan: Plan, layer: int, budget: int, n_allowed: float, kept_per_head: float) -> None:
    """Record a calibrated layer's budget and what it really kept (the error feedback of the next layers)."""
    plan.budgets[layer] = budget
    plan.calibrated_allowed += n_allowed
    plan.calibrated_dropped += n_allowed - kept_per_head
