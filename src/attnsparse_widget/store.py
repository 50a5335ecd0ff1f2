"""Where one forward pass's captured attention lives: per layer, what the views and the metrics need.

Two regimes, chosen by length (:func:`retains`):

* **retained**: the float32 probabilities and keep-masks of every layer at full resolution, as the attention
  function produced them (no copy on the CPU). Texts that fit the overview (up to 256 tokens): everything is at
  hand.
* **overview**: per layer only block-pooled *sums* (``pooling.MAX_SIDE`` cells a side) of the probabilities, the
  keep-mask and the allowed set. Memory stays bounded at 2048 tokens (30 layers x 9 heads: 4.5 GB of float32 maps
  per pass become 70 MB); a layer's full-resolution maps are recomputed on demand by replaying that one layer
  (:func:`attnsparse_widget.capture.layer_attention`), exactly.

Either way the store counts, per layer and head, the kept and the allowed pairs (the achieved sparsity), and, when
the pass is compared with a dense one as it runs (:attr:`~attnsparse_widget.capture.Plan.dense_qk`), measures the
attention metrics against it: per head, the mass recall of every row and the mean row KL(sparse‖dense). The
attention function hands over the *same* tensor object for a keep-mask or allowed set that is identical in every
layer (static patterns, the model's causal mask), so sharing, counting and pooling happen once per object.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from . import metrics as M
from .capture import DenseHead, Recorder, RowBlock
from .pooling import MAX_SIDE, factor_for, pool_columns, pool_sum, pool_sum_rows

Tensor = torch.Tensor
RETAIN_BUDGET = 384 * 2**20  # bytes of float32 maps per pass kept at full resolution, at most


def retains(n_layers: int, n_heads: int, n_tokens: int, batch: int = 1, max_side: int = MAX_SIDE) -> bool:
    """Whether a pass of this shape keeps its maps at full resolution: when the overview would be full resolution
    anyway (``n_tokens <= max_side``, 70 MB for 30 layers x 9 heads) and that fits ``RETAIN_BUDGET``. Keeping more
    costs more than recomputing: hundreds of MB of fresh memory per pass, paid in page faults at every update."""
    return n_tokens <= max_side and 4 * n_layers * n_heads * n_tokens * n_tokens * batch <= RETAIN_BUDGET


_PER_LAYER = (  # the store's per-layer lists (what a snapshot copies)
    "probs",
    "keep",
    "allowed",
    "pooled_probs",
    "pooled_keep",
    "pooled_allowed",
    "kept",
    "allowed_count",
    "recorded",
    "recall_rows",
    "kl_per_head",
)


class AttentionStore(Recorder):
    """Captured attention of one pass, held on the CPU whatever the model's device. Full-resolution shapes: probs
    ``[B, H, Tq, Tk]``, keep ``[B, H|1, Tq, Tk]``, allowed ``[B, 1, Tq, Tk]``; pooled sums: ``[H|1, n, n]`` with
    ``n = ceil(T / factor)`` (batch of one)."""

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        n_tokens: int,
        batch: int = 1,
        retain: bool | None = None,
        max_side: int = MAX_SIDE,
        slab: bool = True,
    ) -> None:
        """``slab``: every layer's overview in one allocation, made at the first layer (False: one per layer, for a
        store that records a layer or two)."""
        self.n_tokens = n_tokens
        self.n_heads = n_heads
        self.retain = retains(n_layers, n_heads, n_tokens, batch, max_side) if retain is None else retain
        if not self.retain and batch != 1:
            raise ValueError("the pooled overview store holds a batch of one")
        self.factor = factor_for(n_tokens, max_side)
        self.probs: list[Tensor | None] = [None] * n_layers  # retained only
        self.keep: list[Tensor | None] = [None] * n_layers  # retained only (None: the pass kept all allowed)
        self.allowed: list[Tensor | None] = [None] * n_layers  # always (bool, shared between layers)
        self.pooled_probs: list[Tensor | None] = [None] * n_layers  # overview only: sums [H, n, n]
        self.pooled_keep: list[Tensor | None] = [None] * n_layers  # overview only: sums [H|1, n, n] (None: all)
        self.pooled_allowed: list[Tensor | None] = [None] * n_layers  # overview only: sums [1, n, n]
        self.kept: list[Tensor | None] = [None] * n_layers  # kept allowed pairs per [B, H|1]
        self.allowed_count: list[Tensor | None] = [None] * n_layers  # allowed pairs per [B, 1]
        self.recorded = [False] * n_layers
        # compared with a dense pass: per layer, mass recall [H, rows] and mean row KL per head [H], over the rows
        # the model lets attend anywhere
        self.recall_rows: list[Tensor | None] = [None] * n_layers
        self.kl_per_head: list[Tensor | None] = [None] * n_layers
        self._last: dict[str, tuple[Tensor, Tensor]] = {}  # what -> (the last object, its result)
        self._slab: Tensor | None = None  # the pooled overviews of every layer, [L, H, n, n]
        self._one_slab = slab
        # a long text's layer being recorded block by block: pooled keep-mask, kept pairs, recall and KL per row
        self._pending: dict[str, Any] = {}

    def record(
        self, layer: int, probs: Tensor, keep: Tensor | None, allowed: Tensor, dense: DenseHead | None = None
    ) -> None:
        if dense is not None:
            self.recall_rows[layer], self.kl_per_head[layer] = compare_heads(probs, keep, allowed, dense)
        held = self._record_allowed(layer, allowed)
        if keep is None:
            self.kept[layer] = self.allowed_count[layer]
        else:
            self.kept[layer] = self._once("count keep", keep, lambda: (keep & allowed).sum(dim=(-1, -2)).cpu())
        if self.retain:
            self.probs[layer] = probs.detach().to("cpu", torch.float32)
            self.keep[layer] = None if keep is None else self._once("keep", keep, keep.cpu)
        else:
            pooled = pool_sum(probs.detach()[0].to("cpu"), self.factor)
            self.pooled_probs[layer] = self._overview(layer, pooled.shape).copy_(pooled)
            self.pooled_allowed[layer] = self._once("pool allowed", held, lambda: pool_sum(held[0], self.factor))
            if keep is not None:  # full resolution is recomputed on demand (one layer replayed)
                self.pooled_keep[layer] = self._once("pool keep", keep, lambda: pool_sum(keep[0], self.factor).cpu())
        self.recorded[layer] = True

    @property
    def takes_blocks(self) -> bool:  # type: ignore[override]
        return not self.retain

    def record_block(self, layer: int, block: RowBlock, dense: DenseHead | None = None) -> None:
        """Pool one block of a long text's rows into the overview (see :class:`~attnsparse_widget.capture.RowBlock`)
        and, compared with a dense pass, measure its rows' recall and KL."""
        pending = self._pending
        if pending.get("layer") != layer:
            pending.clear()
            pending.update(layer=layer, keep=None, kept=None, compared=RowsCompared())
            n = -(-self.n_tokens // self.factor)
            self.pooled_probs[layer] = self._overview(layer, (block.probs.shape[1], n, n)).zero_()
        a, b = block.rows
        cell = slice(a // self.factor, -(-b // self.factor))
        cells = block.cols.cpu() // self.factor
        pooled = self.pooled_probs[layer]
        assert pooled is not None
        pooled[:, cell] += pool_columns(block.probs.detach()[0].to("cpu"), self.factor, cells, pooled.shape[-1])
        allowed = block.allowed
        if block.keep is not None:
            kept = block.keep & allowed
            if pending["keep"] is None:
                pending["keep"] = torch.zeros((kept.shape[1], *pooled.shape[1:]))
                pending["kept"] = torch.zeros(kept.shape[:2], dtype=torch.int64)
            pending["keep"][:, cell] += pool_columns(kept[0].to("cpu"), self.factor, cells, pooled.shape[-1])
            pending["kept"] += kept.sum(dim=(-1, -2)).cpu()
        if dense is not None:
            pending["compared"].add(block.probs, block.keep, allowed, dense)

    def finish_layer(self, layer: int, allowed: Tensor) -> None:
        """The last block of ``layer`` is in: its counts, pooled allowed set and attention metrics."""
        pending = self._pending
        assert pending.get("layer") == layer, "finish_layer without record_block"
        held = self._record_allowed(layer, allowed)
        self.pooled_allowed[layer] = self._once("pool allowed", held, lambda: pool_sum_rows(held[0], self.factor))
        self.kept[layer] = self.allowed_count[layer] if pending["kept"] is None else pending["kept"]
        self.pooled_keep[layer] = pending["keep"]
        if pending["compared"]:
            self.recall_rows[layer], self.kl_per_head[layer] = pending["compared"].result()
        pending.clear()
        self.recorded[layer] = True

    def _record_allowed(self, layer: int, allowed: Tensor) -> Tensor:
        """The model's allowed set of ``layer`` and its count, on the CPU (once per shared object), held once for
        all the layers it is equal in: layers recorded one replay at a time hand over a new object each (a
        ``[T, T]`` bool is 64 MB at 8192 tokens; a model has one or two distinct ones)."""
        cpu = self._once("allowed", allowed, allowed.cpu)
        held = {id(t): t for t in self.allowed if t is not None}
        if id(cpu) not in held:
            cpu = next((t for t in held.values() if t.shape == cpu.shape and torch.equal(t, cpu)), cpu)
        self.allowed[layer] = cpu
        self.allowed_count[layer] = self._once("count allowed", cpu, lambda: cpu.sum(dim=(-1, -2)))
        return cpu

    def _once(self, what: str, obj: Tensor, compute: Callable[[], Tensor]) -> Tensor:
        """``compute()`` for ``obj``, reused while the next layers hand over the same object (a static mask, the
        model's own mask). Only the last object is remembered: per-layer masks are not kept alive."""
        found = self._last.get(what)
        if found is not None and found[0] is obj:
            return found[1]
        result = compute()
        self._last[what] = (obj, result)
        return result

    def _overview(self, layer: int, shape: tuple[int, ...]) -> Tensor:
        """Where ``layer``'s pooled overview goes (float32 ``shape``, uninitialised): its slice of the one slab of
        every layer (allocated at the first; see capture_layer_outputs), or its own tensor."""
        if not self._one_slab:
            return torch.empty(shape)
        if self._slab is None:
            self._slab = torch.empty((len(self.pooled_probs), *shape))
        return self._slab[layer]

    def set_counts(self, layer: int, kept: Tensor, allowed_count: Tensor) -> None:
        """The kept pairs per head ``[1, H|1]`` and allowed pairs ``[1, 1]`` of ``layer``, counted by a pass that
        recorded no probabilities (``capture.Plan.counts``); its maps come later (:meth:`record`, by replay)."""
        self.kept[layer], self.allowed_count[layer] = kept, allowed_count

    def snapshot(self) -> AttentionStore:
        """A copy whose per-layer lists are its own: layers recorded later into this store do not appear in it. The
        recorded tensors are shared (a recorded layer is never written again)."""
        out = copy.copy(self)
        for name in _PER_LAYER:
            setattr(out, name, list(getattr(self, name)))
        out._last, out._pending = {}, {}
        return out

    @property
    def counted(self) -> bool:
        """Whether every layer's kept and allowed pairs are known (the achieved sparsity)."""
        return all(k is not None for k in self.kept) and all(a is not None for a in self.allowed_count)

    @property
    def complete(self) -> bool:
        return all(self.recorded)

    @property
    def compared(self) -> bool:
        """Whether every layer was measured against a dense pass as it was recorded."""
        return all(r is not None for r in self.recall_rows)

    def nbytes(self) -> int:
        """Bytes held, counting shared tensors once."""
        seen: dict[int, int] = {}
        for group in (self.probs, self.keep, self.allowed, self.pooled_probs, self.pooled_keep, self.pooled_allowed):
            for t in group:
                if t is not None:
                    seen[id(t)] = t.numel() * t.element_size()
        return sum(seen.values())


def compare_heads(
    probs: Tensor, keep: Tensor | None, allowed: Tensor, dense: DenseHead, block: int = 128
) -> tuple[Tensor, Tensor]:
    """Mass recall per row ``[H, rows]`` and mean row KL(sparse‖dense) per head ``[H]`` of one layer (batch of one):
    ``probs [1, H, Tq, Tk]`` and ``keep [1, H|1, Tq, Tk]`` (None: all allowed) of the sparse pass, ``dense(h)`` the
    dense pass's head h. Rows are the queries the model lets attend anywhere. One head's temporaries at a time, and
    per ``block`` of rows only the keys up to the last one those rows may attend (half the work for a causal model:
    both rows carry exactly 0 probability beyond it)."""
    kept = allowed if keep is None else keep
    ok = allowed[0, 0]
    rows = ok.any(-1)
    last = torch.where(ok, torch.arange(ok.shape[-1], device=ok.device), -1).amax(-1)  # last allowed key per row
    spans = [(a, min(a + block, ok.shape[0])) for a in range(0, ok.shape[0], block)]
    ends = [int(last[a:b].max()) + 1 for a, b in spans]
    recall, kl = [], []
    for h in range(probs.shape[1]):
        p = dense(h)[0]
        k = kept[0, h if kept.shape[1] > 1 else 0]
        q = probs[0, h]
        recall_h = torch.cat([M.head_recall(p[a:b, :e], k[a:b, :e]) for (a, b), e in zip(spans, ends, strict=True)])
        kl_h = torch.cat([M.head_row_kl(q[a:b, :e], p[a:b, :e]) for (a, b), e in zip(spans, ends, strict=True)])
        recall.append(recall_h[rows].cpu())
        kl.append(kl_h[rows].mean().cpu())
    return torch.stack(recall), torch.stack(kl)


class RowsCompared:
    """:func:`compare_heads` of one layer gathered over blocks of its rows: the recall of every row and the mean row
    KL per head over all of them (each block's mean weighted by its rows)."""

    def __init__(self) -> None:
        self.recall: list[Tensor] = []
        self.kl_sum: Tensor | None = None
        self.rows = 0

    def __bool__(self) -> bool:
        return bool(self.recall)

    def add(self, probs: Tensor, keep: Tensor | None, allowed: Tensor, dense: DenseHead) -> None:
        """Compare one block of rows (arguments as for :func:`compare_heads`)."""
        recall, kl = compare_heads(probs, keep, allowed, dense)
        weighted = kl.double() * recall.shape[-1]
        self.kl_sum = weighted if self.kl_sum is None else self.kl_sum + weighted
        self.recall.append(recall)
        self.rows += recall.shape[-1]

    def result(self) -> tuple[Tensor, Tensor]:
        """Recall per row ``[H, rows]`` and mean row KL per head ``[H]``."""
        assert self.kl_sum is not None, "no block was compared"
        return torch.cat(self.recall, dim=-1), (self.kl_sum / max(1, self.rows)).float()
