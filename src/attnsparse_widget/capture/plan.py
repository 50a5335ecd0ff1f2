"""What one forward pass asks of the attention function (:class:`Plan`), what receives its captures (:class:`Recorder`,
:class:`RowBlock`), a dense pass's queries and keys (:class:`QueryKeys`), and the plan that is active."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..masks import Mask
from ..masks.base import calibrated_per_layer

Tensor = torch.Tensor


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
    # the kernel of masked layers whose probabilities nobody reads (:func:`fast_path`): None chooses by measurement
    # (:func:`~attnsparse_widget.kernels.choose_kernel`), "eager" never leaves the eager path
    kernel: str | None = None
    # False: a flex call that would compile (first use of its shapes in this process) takes sdpa instead, so that a
    # pass someone waits for never includes the compilation (the pipeline compiles as a step of its own)
    may_compile: bool = True
    # with a dict: per masked layer that took the fast path, (kept pairs ``[1, H|1]``, allowed pairs ``[1, 1]``), on
    # the CPU: a pass that records no probabilities still knows the sparsity it achieved (a view-first pass)
    counts: dict[int, tuple[Tensor, Tensor]] | None = None
    # :func:`layer_inputs`: stop at this layer's attention call, its queries, keys and values handed over in ``found``
    query_of: int | None = None
    found: tuple[Tensor, Tensor, Tensor] | None = None
    # per layer, how its attention output was computed (:data:`Route`); with ``routes`` set, each layer takes the
    # route given there instead of choosing (a pass computing skipped blocks again, :func:`~.replays.outputs_before`)
    taken: dict[int, Route] = field(default_factory=dict)
    routes: dict[int, Route] | None = None

    def route_of(self, layer: int) -> Route | None:
        """The route ``layer`` must take (None: the attention function chooses)."""
        return None if self.routes is None else self.routes[layer]

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


# How one attention call computed its output: ("dense-sdpa", 0) a dense layer nobody reads, by SDPA; ("flex", 0) or
# ("sdpa", 0) a masked one on the fast path's kernel; ("blocked", rows) one block of ``rows`` query rows at a time;
# ("eager", 0) in one piece. The same inputs by the same route give the same output bit for bit; by another route
# only to float rounding (other kernels sum in other orders).
Route = tuple[str, int]


@dataclass(frozen=True)
class Recomputation:
    """What computes a pass's skipped blocks again exactly (``passes.OUTPUTS_EVERY``): the pass's mask, seed,
    per-layer budgets and blocks of rows (``cell``), and the route each layer took."""

    mask: Mask | None
    seed: int
    budgets: dict[int, int]
    cell: int
    routes: dict[int, Route]

    @classmethod
    def of(cls, plan: Plan) -> Recomputation:
        return cls(plan.mask, plan.seed, dict(plan.budgets), plan.cell, dict(plan.taken))

    def plan(self, layer_of: Callable[[nn.Module], int]) -> Plan:
        """A plan that computes every layer as the pass did, recording nothing."""
        return Plan(
            layer_of=layer_of,
            mask=self.mask,
            seed=self.seed,
            budgets=dict(self.budgets),
            cell=self.cell,
            routes=self.routes,
        )


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

    A long text's dense pass keeps neither (``kept`` False; 943 MB at 8192 tokens for the default model, its keys
    being its KV cache's): ``recompute(layer)`` gives a layer's again from the pass's recorded block outputs
    (:func:`~.replays.layer_inputs`, bit for bit), and :meth:`at` hands a replay one layer's, computed before
    the replay starts (never inside a pass)."""

    queries: list[Tensor | None]
    keys: list[Tensor | None]
    # long texts (:func:`row_block`): per layer, the log-normaliser of every row ``[B, H, T]`` (float32): with
    # it a block of the dense probabilities is rebuilt on any columns, without the rest of the row
    lse: list[Tensor | None] = field(default_factory=list)
    kept: bool = True  # False: the pass keeps only ``lse`` (``recompute`` gives the queries and keys)
    recompute: Callable[[int], tuple[Tensor, Tensor]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def empty(cls, n_layers: int, kept: bool = True) -> QueryKeys:
        return cls([None] * n_layers, [None] * n_layers, [None] * n_layers, kept)

    @property
    def complete(self) -> bool:
        """Every layer's queries and keys, unless the pass does not keep them."""
        return not self.kept or self.has_all

    @property
    def has_all(self) -> bool:
        """Whether every layer's queries and keys are at hand (a pass may read them as it runs)."""
        return all(q is not None for q in self.queries) and all(k is not None for k in self.keys)

    def at(self, layer: int) -> QueryKeys:
        """These queries and keys with ``layer``'s at hand (recomputed when not kept): what a replay of that one
        layer reads."""
        if self.queries[layer] is not None and self.keys[layer] is not None:
            return self
        if self.recompute is None:
            raise RuntimeError(f"the queries and keys of layer {layer} were neither kept nor can be recomputed")
        queries: list[Tensor | None] = [None] * len(self.queries)
        keys: list[Tensor | None] = [None] * len(self.keys)
        queries[layer], keys[layer] = self.recompute(layer)
        return QueryKeys(queries, keys, self.lse, kept=False, recompute=self.recompute)


# the plan of the pass running in this context (:func:`~.attention.attention_active` sets it)
ACTIVE: contextvars.ContextVar[Plan | None] = contextvars.ContextVar("attnsparse_plan", default=None)


def once_per_pass(plan: Plan, key: tuple[Any, ...], owner: Tensor | None, make: Callable[..., Any], *args: Any) -> Any:
    """``make(*args)`` once per pass for ``owner`` (a tensor the model hands to every layer) and ``key``."""
    slot = (*key, id(owner))
    found = plan.memo.get(slot)
    if found is not None and found[0] is owner:
        return found[1]
    value = make(*args)
    plan.memo[slot] = (owner, value)
    return value


class Probed(Exception):
    """Raised once a replay has what it wants (a probed layer recorded, a layer's queries): the rest of the pass is
    not needed."""
