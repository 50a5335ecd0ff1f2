"""One layer of a recorded pass again: its maps (:func:`layer_attention`, :func:`record_layer`) and its queries
(:func:`layer_inputs`), by replaying the recorded block outputs up to it."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ..hooks import BlockOutput, LayerOutputs, start_at_layer, stop_after
from ..introspect import layer_indexer, unsupported
from ..masks import Mask
from .attention import attention_active
from .plan import DenseHead, Plan, Probed, QueryKeys, Recomputation, Recorder, RowBlock

Tensor = torch.Tensor


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
            raise Probed

    def record_block(self, layer: int, block: RowBlock, dense: DenseHead | None = None) -> None:
        if layer == self.layer:
            self.into.record_block(layer, block, dense)

    def finish_layer(self, layer: int, allowed: Tensor) -> None:
        if layer == self.layer:
            self.into.finish_layer(layer, allowed)
            self.done = True
            raise Probed


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
            raise Probed

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
        raise Probed


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
        raise _not_called(model, layer)
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
        raise _not_called(model, layer)


def layer_inputs(
    model: PreTrainedModel, ids: Tensor, layer: int, outputs: LayerOutputs
) -> tuple[Tensor, Tensor, Tensor]:
    """The queries ``[B, H, T, D]``, keys and values ``[B, H_kv, T, D]`` (keys after rotary embeddings) that
    ``layer``'s attention call received in the pass whose block outputs are ``outputs``: blocks ``0 .. layer-1``
    replay them, so block ``layer`` gets exactly the input it had and its projections give exactly the same tensors
    (the same operations on the same shapes); the pass stops at that call, before any attention is computed."""
    plan = Plan(layer_of=layer_indexer(model), mask=None, query_of=layer)
    _run_from(model, ids, layer, outputs, plan)
    if plan.found is None:
        raise _not_called(model, layer)
    return plan.found


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
    before replay ``outputs``) and ends when ``recorder`` has what it wants (:class:`Probed`)."""
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
    _run_from(model, ids, layer, outputs, plan)


def outputs_before(model: PreTrainedModel, ids: Tensor, layer: int, outputs: LayerOutputs) -> LayerOutputs:
    """``outputs`` with block ``layer − 1``'s output at hand, for a pass that starts at ``layer``
    (:func:`~attnsparse_widget.hooks.start_at_layer`): when that block's output was not kept
    (``passes.OUTPUTS_EVERY``), blocks ``c + 1 … layer − 1`` are computed again from the nearest kept output ``c``.

    Exact, bit for bit: block ``c + 1`` gets exactly the input it had in the recorded pass (``c``'s output), and
    each block computed again takes the route its attention call took then (:data:`~.plan.Route`: the same kernel,
    the same blocks of rows, the same per-layer budget and seed), so it performs the same operations on the same
    tensors and gives the same output, which is the next block's input. Only the probabilities are not recorded,
    and recording never changes the output (the recorder reads what the route computed)."""
    if layer == 0 or outputs.outputs[layer - 1] is not None:
        return outputs
    n_blocks = len(outputs.outputs)
    known, output = outputs.nearest(layer - 1)
    if known == layer - 1:
        return LayerOutputs.only(known, output, n_blocks)
    recomputation = outputs.recompute
    assert isinstance(recomputation, Recomputation), "skipped block outputs need the pass's Recomputation"
    start = LayerOutputs() if known < 0 else LayerOutputs.only(known, output, n_blocks)
    plan = recomputation.plan(layer_indexer(model))
    found = None
    try:
        with torch.inference_mode(), attention_active(model, plan), start_at_layer(model, known + 1, start):
            with stop_after(model, layer - 1):
                model(input_ids=ids, use_cache=False)
    except BlockOutput as reached:
        found = reached.output
    if found is None:
        raise _not_called(model, layer - 1)
    outputs.recent = (layer - 1, found)
    return LayerOutputs.only(layer - 1, found, n_blocks)


def _run_from(model: PreTrainedModel, ids: Tensor, layer: int, outputs: LayerOutputs, plan: Plan) -> None:
    """Run ``plan`` from block ``layer`` on (the blocks before replay ``outputs``) until it has what it wants."""
    outputs = outputs_before(model, ids, layer, outputs)
    try:
        with torch.inference_mode(), attention_active(model, plan), start_at_layer(model, layer, outputs):
            model(input_ids=ids, use_cache=False)
    except Probed:
        pass


def _not_called(model: PreTrainedModel, layer: int) -> Exception:
    """What a replay raises when ``layer`` never reached the attention function (the model is not supported)."""
    return unsupported(model, f"layer {layer} did not call the attention function when replayed")
