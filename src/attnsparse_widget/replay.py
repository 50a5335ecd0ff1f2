"""Replays for the per-layer perplexity curves: reuse the recorded block outputs instead of recomputing them.

"Mask only at layer l" replays the dense outputs of blocks 0..l-1 and computes from block l; "mask at layers
0..l" replays the sparse pass's blocks 0..l and runs the rest dense. The dense blocks of a replay run through SDPA
(nothing of them is captured), and the next-token losses are recomputed only from the first position where the
mask dropped a pair: the earlier positions of a causal model cannot have changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from transformers import PreTrainedModel

from . import metrics as M
from .capture import Plan, attention_active, outputs_before
from .compat import cache_kwarg, cache_of
from .hooks import LayerOutputs, start_at_layer
from .introspect import layer_indexer, num_layers
from .logits import chunks, logits_at, record_base_output
from .masks import Mask
from .passes import PassResult, full_attention_only

Tensor = torch.Tensor


def replay_nll(
    model: PreTrainedModel,
    dense: PassResult,
    mask: Mask | None,
    sparse_layers: frozenset[int],
    start: int,
    outputs: LayerOutputs,
    seed: int,
    prefix: int = 0,
    budgets: dict[int, int] | None = None,
) -> Tensor:
    """Per-token NLL of a pass whose blocks ``0..start-1`` replay ``outputs`` and whose ``sparse_layers`` use
    ``mask`` (the rest dense), with the per-layer ``budgets`` of the sparse pass (:class:`PassResult`).

    ``prefix``: positions known to come out exactly as in the dense pass (no mask drops a pair in any earlier row:
    a causal model's earlier positions cannot have changed). They are not computed at all: the blocks see only the
    later positions, with the dense pass's keys and values of the prefix as their cache, and the prefix keeps the
    dense pass's losses. Positions before the first row this pass's own masks change are not scored again either.
    """
    ids = dense.ids
    n = ids.shape[1]
    assert dense.nll is not None
    nll = dense.nll.clone()
    if prefix >= n - 1:
        return nll
    outputs = outputs_before(model, ids, start, outputs)
    cache = None
    if (
        prefix > 0
        and dense.kv is not None
        and full_attention_only(model)
        and (sliced := _sliced_outputs(outputs, start, prefix)) is not None
    ):
        cache = cache_of([(k[:, :, :prefix], v[:, :, :prefix]) for k, v in dense.kv])
        outputs = sliced
    else:
        prefix = 0
    sub_ids = ids[:, prefix:]
    plan = Plan(
        layer_of=layer_indexer(model), mask=mask, sparse_layers=sparse_layers, seed=seed, budgets=dict(budgets or {})
    )
    replayable = dense.base_output is not None
    recorded: dict[str, Any] = {}
    with torch.inference_mode(), attention_active(model, plan), start_at_layer(model, start, outputs):
        with record_base_output(model, recorded) if replayable else contextlib.nullcontext():
            out = model(
                input_ids=sub_ids,
                use_cache=cache is not None,
                **cache_kwarg(model, cache),
                **({"logits_to_keep": 1} if replayable else {}),
            )
    first = max(prefix, min(plan.first_changed.values(), default=prefix))
    if prefix == 0 and not plan.first_changed and start == 0:
        return nll  # nothing was dropped and nothing replayed: the dense pass itself
    targets = ids[0]
    with torch.inference_mode():
        for pos in chunks(first, n - 1, ids.device):
            local = pos - prefix
            logits = logits_at(model, sub_ids, recorded["base"], local) if replayable else out.logits[0, local].float()
            lse = torch.logsumexp(logits, dim=-1)
            nll[pos.cpu()] = M.next_token_nll_from_logits(logits, lse, targets[pos + 1]).cpu()
    return nll


def _sliced_outputs(outputs: LayerOutputs, blocks: int, prefix: int) -> LayerOutputs | None:
    """The recorded outputs of blocks ``0..blocks-1`` without their first ``prefix`` positions (None when a block's
    output is not a ``[batch, positions, ...]`` tensor or a tuple that starts with one)."""
    sliced: list[Any] = []
    for out in outputs.outputs[:blocks]:
        if isinstance(out, Tensor):
            sliced.append(out[:, prefix:])
        elif isinstance(out, tuple) and out and isinstance(out[0], Tensor):
            sliced.append((out[0][:, prefix:], *out[1:]))
        else:
            return None
    return LayerOutputs(outputs=sliced)


def iter_per_layer(
    model: PreTrainedModel,
    mask: Mask,
    dense: PassResult,
    sparse: PassResult,
    dense_ppl: float,
    seed: int = 0,
) -> Iterator[tuple[str, int, float]]:
    """Yield ``("isolated", l, ΔPPL)`` with the mask at layer l only, for every l, then ``("cumulative", l, ΔPPL)``
    with the mask at layers 0..l. One replayed pass each, so a caller can show progress or stop early.

    Rows where no mask dropped anything are not computed again (``replay_nll``'s prefix): for the cumulative curve
    the sparse pass says which rows those are; for the isolated one, when the pattern decides by position alone
    which rows lose a pair (static patterns, top-k, DSA), so that the sparse pass's layer l says it too."""
    n_layers = num_layers(model)
    n = dense.ids.shape[1]
    by_position = (not mask.score_dependent or mask.drops_by_position) and mask.row_local
    for layer in range(n_layers):
        first = sparse.first_changed.get(layer, n) if by_position else 0
        nll = replay_nll(
            model,
            dense,
            mask,
            frozenset({layer}),
            layer,
            dense.layer_outputs,
            seed,
            prefix=first,
            budgets=sparse.budgets,
        )
        yield "isolated", layer, M.perplexity(nll) - dense_ppl
    for layer in range(n_layers):
        if layer == n_layers - 1 and sparse.nll is not None:  # the mask on every layer: the sparse pass itself
            yield "cumulative", layer, M.perplexity(sparse.nll) - dense_ppl
            continue
        first = min((row for masked, row in sparse.first_changed.items() if masked <= layer), default=n)
        nll = replay_nll(model, dense, mask, frozenset(), layer + 1, sparse.layer_outputs, seed, prefix=first)
        yield "cumulative", layer, M.perplexity(nll) - dense_ppl
