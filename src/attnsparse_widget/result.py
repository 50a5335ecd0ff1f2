"""The result of a comparison (:class:`Comparison`): both passes, the metrics, and the arrays and maps read
from them. The stages that fill it in run in :mod:`attnsparse_widget.pipeline`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import metrics as M
from .dense_cache import release_free_memory
from .masks import Mask
from .passes import PassResult
from .pooling import MAX_SIDE, block_mean, factor_for, repool_mean
from .tokens import readable_tokens

if TYPE_CHECKING:
    from .adapt import Adaptation

FULL_MAP_BYTES = 2**30  # Comparison.attention / keep_mask return at most this much at once (float32 or bool)
BLOCK_MAP_BYTES = 256 * 2**20  # a long text's rows are recomputed this much (every head, full width) at a time
PASSES = ("dense", "sparse", "adapted")  # the regimes a comparison can hold ("sparse" is the post-hoc mask)


@dataclass
class Comparison:
    """The result of :func:`compare`: dense and sparse attention for every layer and head, and the metrics.

    ``attention(layer)`` and ``keep_mask(layer)`` return ``[heads, T, T]`` arrays; ``tokens`` are readable
    strings; ``metrics`` is a :class:`~attnsparse_widget.metrics.Metrics`. With ``compare(..., adapted=...)`` a
    third pass, ``adapted`` (the adapted model under the same mask), sits next to ``dense`` and ``sparse``.
    """

    model_name: str
    text: str
    token_ids: list[int]
    tokens: list[str]
    mask: Mask
    causal: bool
    metrics: M.Metrics
    continuations: dict[str, str]
    dense: PassResult
    sparse: PassResult
    n_layers: int
    n_heads: int
    n_kv_heads: int  # key/value heads (fewer than n_heads under grouped-query attention)
    is_lm: bool = False
    eos: set[int] = field(default_factory=set)
    _decode: Callable[[list[int]], str] = field(repr=False, default=lambda ids: "")
    # the model itself: long texts recompute full-resolution layers and logits from it (the passes and the dense
    # cache only hold weak references, so a cached pass never keeps a model alive)
    _model: Any = field(repr=False, default=None)
    _tokenizer: Any = field(repr=False, default=None)  # the model's (an "adapting" stage tokenises its texts with it)
    # the stages of :mod:`attnsparse_widget.pipeline` that have finished on this result (its one record of progress)
    done: AbstractSet[str] = field(default_factory=frozenset)
    adaptation: Adaptation | None = None  # what the adapted pass runs (compare(..., adapted=...))
    adapted: PassResult | None = None  # the adapted pass, once its stage has run
    _adapted_model: Any = field(repr=False, default=None)  # held here: the adapted pass keeps a weak reference

    def snapshot(self) -> Comparison:
        """This comparison as it stands, for a reader on another thread: later stages fill in the pipeline's own
        working comparison, never a snapshot (the metrics, continuations, stages done and each pass's own fields are
        copies; the recorded tensors are shared, as nothing writes them once their pass has run). Cheap: no tensor
        is copied."""
        return replace(
            self,
            metrics=copy.deepcopy(self.metrics),
            continuations=dict(self.continuations),
            done=frozenset(self.done),
            dense=self.dense.snapshot(),
            sparse=self.sparse.snapshot(),
            adapted=None if self.adapted is None else self.adapted.snapshot(),
        )

    def passes(self) -> dict[str, PassResult]:
        """The passes this comparison holds, by regime: dense, sparse and (once run) adapted."""
        out = {"dense": self.dense, "sparse": self.sparse}
        if self.adapted is not None:
            out["adapted"] = self.adapted
        return out

    def pass_of(self, which: str) -> PassResult:
        """The pass of regime ``which`` ("dense", "sparse" or "adapted"), with a clear error when it is missing."""
        if which not in PASSES:
            raise ValueError(f"which must be one of {PASSES}, got {which!r}")
        if which == "adapted" and self.adapted is None:
            raise ValueError(
                "this comparison has no adapted pass: pass adapted=aw.adapt(model, mask, sparsity) to compare()"
                if self.adaptation is None
                else "the adapted pass has not run yet (the pipeline stopped before it)"
            )
        return self.passes()[which]

    @property
    def mask_label(self) -> str:
        """The mask as applied, e.g. ``sink_window(sinks=4, window=60)``; a score-dependent budget sized per layer
        by the sparse pass reads as its range, e.g. ``moba(k=2–3 per layer, block=16)`` (``Mask.label``)."""
        return self.mask.label(self.sparse.budgets)

    @property
    def mask_params(self) -> dict[str, Any]:
        """The mask's parameters as applied: without the budget when the sparse pass sized it per layer to
        different values (``sparse.budgets`` has them; ``mask`` holds the estimate they were sized from)."""
        params = self.mask.params()
        if self.mask.budget is not None and len(set(self.sparse.budgets.values())) > 1:
            del params[self.mask.budget]
        elif self.mask.budget is not None and self.sparse.budgets:
            params[self.mask.budget] = next(iter(self.sparse.budgets.values()))
        return params

    def attention(
        self,
        layer: int,
        which: str = "dense",
        *,
        head: int | None = None,
        region: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """Post-softmax attention of ``layer``, float32: ``[heads, T, T]``, or one head's ``[T, T]`` (``head``),
        or the half-open ``region = (q0, q1, k0, k1)`` of queries and keys (``[heads, q1 - q0, k1 - k0]``, or
        ``[q1 - q0, k1 - k0]`` with ``head``). ``which`` is "dense", "sparse" or "adapted".

        Whole layers are returned up to :data:`FULL_MAP_BYTES` (1 GiB: 9 heads up to about 5400 tokens); a longer
        text asks for one head or a region. A long text's rows are recomputed exactly, a block at a time."""
        return self._full_resolution(layer, which, head, region, "attention", lambda found: found[0], 4)

    def keep_mask(
        self,
        layer: int,
        which: str = "sparse",
        *,
        head: int | None = None,
        region: tuple[int, int, int, int] | None = None,
    ) -> np.ndarray:
        """The keep-mask the ``which`` pass ("sparse" or "adapted") applied at ``layer``, bool ``[heads, T, T]``
        (within the model's mask; a score-dependent mask chooses from that pass's own scores); ``head`` and
        ``region`` as for :meth:`attention`."""
        if which == "dense":
            raise ValueError("the dense pass applies no keep-mask: which must be 'sparse' or 'adapted'")

        def keep_of(found: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]) -> torch.Tensor:
            _, keep, allowed = found
            return (allowed if keep is None else keep).expand(-1, self.n_heads, -1, -1)

        return self._full_resolution(layer, which, head, region, "keep_mask", keep_of, 1)

    def _full_resolution(
        self,
        layer: int,
        which: str,
        head: int | None,
        region: tuple[int, int, int, int] | None,
        name: str,
        pick: Callable[[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]], torch.Tensor],
        item_bytes: int,
    ) -> np.ndarray:
        """Rows of a pass's full-resolution layer (see :meth:`attention`), a block of rows at a time when long."""
        self._check_layer(layer)
        result = self.pass_of(which)
        n = len(self.tokens)
        q0, q1, k0, k1 = check_region(region, n)
        if head is not None and (isinstance(head, bool) or not isinstance(head, (int, np.integer))):
            raise TypeError(f"head must be an int (0..{self.n_heads - 1}) or None for every head, got {head!r}")
        if head is not None and not 0 <= head < self.n_heads:
            raise ValueError(f"head must be in 0..{self.n_heads - 1} ({self.n_heads} heads), got {head}")
        heads = self.n_heads if head is None else 1
        size = item_bytes * heads * (q1 - q0) * (k1 - k0)
        if size > FULL_MAP_BYTES:
            raise ValueError(
                f"{name}({layer}) would return {heads} x {q1 - q0} x {k1 - k0} values ({size / 2**30:.1f} GiB), above "
                f"the {FULL_MAP_BYTES / 2**30:.0f} GiB it returns at once: ask for one head, {name}({layer}, head=0) "
                f"([{q1 - q0}, {k1 - k0}]), or a region of queries and keys, {name}({layer}, region=(q0, q1, k0, k1)), "
                f"e.g. region=(0, 512, 0, 512)"
            )
        if result.store.retain or (q0, q1) == (0, n) and 4 * self.n_heads * n * n <= FULL_MAP_BYTES:
            whole = pick(result.layer(layer, rows=(q0, q1)))[0, :, :, k0:k1]
            return (whole if head is None else whole[head]).numpy().copy()
        step = max(1, BLOCK_MAP_BYTES // (4 * self.n_heads * n))  # rows per recomputation: every head, full width
        parts = []
        for a in range(q0, q1, step):
            rows = pick(result.layer(layer, remember=False, rows=(a, min(q1, a + step))))[0, :, :, k0:k1]
            parts.append((rows if head is None else rows[head]).clone())
        return torch.cat(parts, dim=-2).numpy()

    def allowed_mask(self, layer: int) -> np.ndarray:
        """The model's own allowed pairs at ``layer`` (causal, padding, its own sliding window), bool ``[T, T]``."""
        self._check_layer(layer)
        allowed = self.dense.store.allowed[layer]  # the dense pass records every layer at once
        assert allowed is not None
        return allowed[0, 0].numpy().copy()

    def maps(
        self,
        layer: int,
        head: int = -1,
        region: tuple[int, int, int, int] | None = None,
        max_side: int = MAX_SIDE,
        which: str = "sparse",
    ) -> tuple[dict[str, np.ndarray], int]:
        """Means over cells of at most ``max_side`` per axis of the dense and masked probabilities, the keep-mask
        and the allowed set of ``layer`` and ``head`` (-1: the mean over heads) over ``region`` (half-open
        [q0, q1, k0, k1]; None: everything). The masked pass is ``which``: "sparse" (post-hoc) or "adapted"; its
        maps come under the keys "sparse" and "keep" either way. Returns the four maps (float32) and the tokens
        per cell.

        The whole map of a long text comes from the stores' pooled overview; a region, or any map of a retained
        store, from full resolution (recomputed for that layer when needed)."""
        self._check_layer(layer)
        n = len(self.tokens)
        q0, q1, k0, k1 = region or (0, n, 0, n)
        masked = self.masked_pass(which)
        if (q0, q1, k0, k1) == (0, n, 0, n) and not masked.store.retain:
            store = masked.store_for(layer)
            keep = store.pooled_keep[layer]
            sums = {
                "dense": self.dense.store.pooled_probs[layer],
                "sparse": store.pooled_probs[layer],
                "keep": store.pooled_allowed[layer] if keep is None else keep,
                "allowed": store.pooled_allowed[layer],
            }
            outer = factor_for(math.ceil(n / store.factor), max_side)
            out = {}
            for name, value in sums.items():
                assert value is not None
                out[name] = repool_mean(_select_head(value.numpy(), head), n, n, store.factor, outer)
            return out, store.factor * outer
        factor = factor_for(max(q1 - q0, k1 - k0), max_side)
        # the rows of the region, a block at a time (a multiple of the cell height, so the cells' means join up)
        step = max(factor, BLOCK_MAP_BYTES // (4 * self.n_heads * n) // factor * factor)
        parts: dict[str, list[np.ndarray]] = {"dense": [], "sparse": [], "keep": [], "allowed": []}
        once = q1 - q0 <= step  # one block: remembered, for the next head of the same region
        for a in range(q0, q1, step):
            rows = (a, min(q1, a + step))
            for name, result in (("dense", self.dense), ("sparse", masked)):
                probs, keep, allowed = result.layer(layer, remember=once, rows=rows)
                parts[name].append(block_mean(_select_head(probs[0].numpy(), head)[:, k0:k1], factor))
                if name == "sparse":
                    kept = _select_head((allowed if keep is None else keep)[0].numpy(), head)[:, k0:k1]
                    parts["keep"].append(block_mean(kept, factor))
                    parts["allowed"].append(block_mean(allowed[0, 0].numpy()[:, k0:k1].astype(np.float32), factor))
        return {name: np.concatenate(value, axis=0) for name, value in parts.items()}, factor

    def head_maps(self, layer: int, max_side: int, which: str = "sparse") -> tuple[np.ndarray, np.ndarray]:
        """Every head's dense and masked (``which``: "sparse" or "adapted") map of ``layer``: ``[H, n, n]`` cell
        means with ``n <= max_side``."""
        self._check_layer(layer)
        n = len(self.tokens)
        out = []
        for result in (self.dense, self.masked_pass(which)):
            store = result.store_for(layer)
            if store.retain:
                probs = store.probs[layer]
                assert probs is not None
                out.append(block_mean(probs[0].numpy(), factor_for(n, max_side)))
            else:
                sums = store.pooled_probs[layer]
                assert sums is not None
                outer = factor_for(math.ceil(n / store.factor), max_side)
                out.append(repool_mean(sums.numpy(), n, n, store.factor, outer))
        return out[0], out[1]

    def release(self) -> None:
        """Drop the caches that can be made again (a continuation then prefills its own KV cache)."""
        self.sparse.release()
        if self.adapted is not None:
            self.adapted.release()
        release_free_memory()

    def masked_pass(self, which: str) -> PassResult:
        """The masked pass ``which`` ("sparse" or "adapted"); ValueError for anything else or a missing pass."""
        if which not in ("sparse", "adapted"):
            raise ValueError(f"which must be 'sparse' or 'adapted' (the masked pass to show), got {which!r}")
        return self.pass_of(which)

    def _check_layer(self, layer: int) -> None:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be an int in [0, {self.n_layers - 1}], got {layer!r}")

    def next_token_top(self, position: int = -1, k: int = 5) -> dict[str, list[tuple[str, float]]]:
        """Top-``k`` next tokens after ``position`` under each regime, as (token, probability) pairs."""
        if not self.is_lm:
            raise ValueError("next-token distributions exist only for causal language models")
        n = len(self.tokens)
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not -n <= position < n:
            raise ValueError(f"position must be an int in [{-n}, {n - 1}], got {position!r}")
        pos = torch.tensor([int(position) % n], device=self.dense.ids.device)
        out = {}
        for name, result in self.passes().items():
            last = result.last_logits if int(pos) == n - 1 else None  # the pass's own last logits: at hand
            top = torch.softmax(last if last is not None else result.logits(pos)[0], dim=-1).topk(k)
            out[name] = [(self._decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices, strict=True)]
        return out

    def continuation_tokens(self) -> dict[str, list[str]]:
        """Each continuation as decoded tokens (for the widget's highlighting of the first divergence)."""
        if not self.continuations:
            return {}
        passes = self.passes()
        return {name: readable_tokens(self._decode, passes[name].continuation) for name in self.continuations}

    # ------------------------------------------------------------------------------------------------ exports
    def export_gif(
        self,
        path: Any,
        view: str = "side_by_side",
        head: int | None = None,
        layers: Any = None,
        duration_ms: int = 700,
        size: tuple[int, int] | None = None,
        overwrite: bool = False,
        which: str = "sparse",
    ) -> Any:
        """Write an animated GIF stepping through the layers (see :func:`attnsparse_widget.export.export_gif`;
        ``which="adapted"``: the adapted pass); returns a report with the path, the frame count and the seconds it
        took. An existing file is replaced only with ``overwrite=True``."""
        from .export import export_gif

        return export_gif(
            self,
            path,
            view=view,
            head=head,
            layers=layers,
            duration_ms=duration_ms,
            size=size,
            overwrite=overwrite,
            which=which,
        )

    def export_png(
        self,
        path: Any,
        layer: int = 0,
        head: int | None = None,
        view: str = "side_by_side",
        overwrite: bool = False,
        which: str = "sparse",
    ) -> Any:
        """Write a PNG of one layer's view (see :func:`attnsparse_widget.export.export_png`)."""
        from .export import export_png

        return export_png(self, path, layer=layer, head=head, view=view, overwrite=overwrite, which=which)

    def to_html(self, path: Any = None, head: int | None = None, overwrite: bool = False, which: str = "sparse") -> str:
        """A self-contained offline HTML page of this comparison (see :func:`attnsparse_widget.export.to_html`)."""
        from .export import to_html

        return to_html(self, path, head=head, overwrite=overwrite, which=which)

    def summary(self) -> str:
        """A readable table of the headline metrics and the continuations."""
        from .report import summary_table

        return summary_table(self)


def check_region(region: Any, n: int) -> tuple[int, int, int, int]:
    """``region = (q0, q1, k0, k1)``, half-open query and key ranges within ``n`` tokens (None: everything)."""
    if region is None:
        return 0, n, 0, n
    ok = isinstance(region, (tuple, list)) and len(region) == 4
    ok = ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in region)
    if not ok or not (0 <= region[0] < region[1] <= n and 0 <= region[2] < region[3] <= n):
        raise ValueError(
            f"region must be (q0, q1, k0, k1): half-open query and key ranges with 0 <= q0 < q1 <= {n} and "
            f"0 <= k0 < k1 <= {n} (the text has {n} tokens), got {region!r}"
        )
    q0, q1, k0, k1 = (int(v) for v in region)
    return q0, q1, k0, k1


def _select_head(values: np.ndarray, head: int) -> np.ndarray:
    """``[H|1, ...]`` → one head's map, or the mean over heads for ``head = -1`` (float32)."""
    if values.shape[0] == 1:
        return values[0].astype(np.float32, copy=False)
    if head < 0:
        return values.mean(0, dtype=np.float32)
    return values[head].astype(np.float32, copy=False)
