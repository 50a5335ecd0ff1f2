"""The attention function registered with transformers (:func:`attention_forward`), its registration, and switching a
model to it (:func:`attention_active`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.masking_utils import sdpa_mask

from ..hooks import model_lock, switched_to
from ..introspect import check_supported
from .calibration import calibrated
from .eager import allowed_for, allowed_from, applied, context_of, dense_heads, eager_scores, repeat_kv, softmax_float32
from .fast_path import fast_path, takes_fast_path
from .plan import ACTIVE, Plan, Probed, once_per_pass
from .row_blocks import blocked, rows_per_block

Tensor = torch.Tensor


ATTN_NAME = "attnsparse"


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
    plan = ACTIVE.get()
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
        if plan.query_of == layer:  # layer_inputs: this call's queries, keys and values are all it wants
            plan.found = (query, key, value)
            raise Probed
        mask = plan.mask_for(layer)
        route = plan.route_of(layer)
        unread = plan.recorder is None and plan.keep_qk is None and softcap is None and not module.training
        if route == ("dense-sdpa", 0) or (route is None and mask is None and unread):
            # a dense layer whose probabilities nobody reads (the other layers of a per-layer replay, dense
            # decoding): the same attention through SDPA's fused kernel, without materialising them
            plan.taken[layer] = ("dense-sdpa", 0)
            allowed = allowed_for(plan, module, attention_mask, query.shape[-2], key.shape[-2], query.device)
            out = nn.functional.scaled_dot_product_attention(
                query, key_states, value_states, attn_mask=allowed, scale=scaling
            )
            return out.transpose(1, 2).contiguous(), None
        fast_route = route is not None and route[0] in ("flex", "sdpa")
        if mask is not None and (
            fast_route or (route is None and takes_fast_path(plan, module, query, mask, softcap, dropout))
        ):
            kernel = route[0] if route is not None else None
            fast = fast_path(plan, module, layer, mask, query, key, value, attention_mask, scaling, kernel)
            if fast is not None:
                return fast, None
        rows = route[1] if route is not None and route[0] == "blocked" else None
        if route is None:
            rows = rows_per_block(plan, module, query, key_states, mask, dropout)
        if rows is not None:
            plan.taken[layer] = ("blocked", rows)
            args = (query, key, value, attention_mask, scaling, softcap)
            return blocked(plan, module, layer, mask, rows, *args), None
        plan.taken[layer] = ("eager", 0)

    n_q, n_k = query.shape[-2], key.shape[-2]
    if plan is not None:
        allowed = allowed_for(plan, module, attention_mask, n_q, n_k, query.device)
    else:
        allowed = allowed_from(attention_mask, module, n_q, n_k, query.device)
    scores = eager_scores(query, key_states, allowed, scaling, softcap)

    keep = None
    if plan is not None:
        if mask is not None:
            ctx = context_of(plan, module, layer, query, key)
            if plan.calibrates(layer):
                mask, keep = calibrated(plan, layer, mask, scores, allowed, ctx)
                keep, dropped, first = applied(mask, scores, allowed, ctx, keep)
            elif mask.score_dependent or mask.varies_by_layer:
                keep, dropped, first = applied(mask, scores, allowed, ctx)
            else:  # positions only: the same keep-mask object for every layer of this pass
                keep, dropped, first = once_per_pass(
                    plan, ("keep", ctx.causal, ctx.n_heads), allowed, applied, mask, scores, allowed, ctx
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
        if plan.keep_qk.kept:
            plan.keep_qk.queries[layer], plan.keep_qk.keys[layer] = query, key
    if plan is not None and plan.recorder is not None:
        dense = None
        if plan.dense_qk is not None:
            dense = dense_heads(plan.dense_qk, layer, n_rep, allowed, scaling, softcap)
        plan.recorder.record(layer, probs32, keep, allowed, dense)
    return out, probs


_registered = False


def register() -> None:
    """Register the attention function and its mask function under ``"attnsparse"`` (idempotent)."""
    global _registered
    if not _registered:
        AttentionInterface.register(ATTN_NAME, attention_forward)
        AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)
        _registered = True


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
    token = ACTIVE.set(plan)
    try:
        with switched_to(model, ATTN_NAME):
            yield
    finally:
        ACTIVE.reset(token)
