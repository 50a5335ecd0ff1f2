"""What one attention step computes: the requests of a batch (:class:`Workload`), the (query, key) pairs each head
scores (:func:`attention_pairs`), the keys it reads, FlashAttention's tiles, paged KV blocks and the data-parallel
split. Exact counts, no model.

A request is ``(context, new)``: ``context`` keys attended after this step (the cache plus the new tokens) and
``new`` query tokens computed in it. The t-th new query (t = 0 … new − 1) sits at position ``context − new + t`` and
sees keys ``0 … context − new + t`` (causal), its ``window`` most recent ones (its own included) with a window, and
``min(topk, keys available)`` of them with DSA's top-k. Requests never see each other's keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .hardware import DTYPE_BYTES

FLASH_TILE = (128, 128)  # FlashAttention's B_r x B_c (queries x keys per tile): FlexAttention's default block size


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Workload:
    """One attention step of a batch: its ``requests`` as ``(context, new)`` pairs (a prefill of S tokens is
    ``(S, S)``, a decode step ``(S, 1)``; mixed batches allowed) and how it runs: ``tp`` / ``dp`` ranks (tensor
    parallelism splits heads, data parallelism requests), ``dtype`` of activations, weights and cache (one of
    fp32, bf16, fp16, fp8), ``flash`` (one fused FlashAttention kernel, tiles of ``tile`` = B_r x B_c),
    ``page_size`` (PagedAttention's KV block, in tokens), ``window`` (keys per query: each sees its ``window``
    most recent) and ``topk`` (keys per query DSA's indexer selects)."""

    requests: tuple[tuple[int, int], ...]
    tp: int = 1
    dp: int = 1
    dtype: str = "bf16"
    flash: bool = False
    page_size: int | None = None
    window: int | None = None
    topk: int | None = None
    tile: tuple[int, int] = FLASH_TILE

    def __init__(
        self,
        requests: Sequence[tuple[int, int]] | Sequence[Sequence[int]],
        *,
        tp: int = 1,
        dp: int = 1,
        dtype: str = "bf16",
        flash: bool = False,
        page_size: int | None = None,
        window: int | None = None,
        topk: int | None = None,
        tile: tuple[int, int] = FLASH_TILE,
    ) -> None:
        if isinstance(requests, (str, bytes)) or not isinstance(requests, Sequence) or not requests:
            raise ValueError(f"requests must be a non-empty list of (context, new) pairs, got {requests!r}")
        checked = []
        for i, request in enumerate(requests):
            if not isinstance(request, Sequence) or len(request) != 2:
                raise ValueError(f"request {i} must be a (context, new) pair, got {request!r}")
            context = _positive_int(f"request {i}'s context", request[0])
            new = _positive_int(f"request {i}'s new tokens", request[1])
            if new > context:
                raise ValueError(
                    f"request {i} computes {new} new tokens but attends to only {context} keys: context counts the "
                    f"keys after this step, new tokens included, so new <= context (a prefill is (S, S))"
                )
            checked.append((context, new))
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
        if not isinstance(tile, Sequence) or len(tile) != 2:
            raise ValueError(f"tile must be (B_r, B_c), got {tile!r}")
        set_ = object.__setattr__
        set_(self, "requests", tuple(checked))
        set_(self, "tp", _positive_int("tp", tp))
        set_(self, "dp", _positive_int("dp", dp))
        set_(self, "dtype", dtype)
        set_(self, "flash", bool(flash))
        set_(self, "page_size", None if page_size is None else _positive_int("page_size", page_size))
        set_(self, "window", None if window is None else _positive_int("window", window))
        set_(self, "topk", None if topk is None else _positive_int("topk", topk))
        set_(self, "tile", (_positive_int("B_r", tile[0]), _positive_int("B_c", tile[1])))

    @property
    def bytes_per_value(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def new_tokens(self) -> int:
        """Query tokens of the batch (ΣS_q)."""
        return sum(new for _, new in self.requests)

    @property
    def context_tokens(self) -> int:
        """Keys of the batch (ΣS)."""
        return sum(context for context, _ in self.requests)

    def changed(self, **changes: Any) -> Workload:
        """This workload with ``changes`` (any of its settings, ``requests`` included), checked again."""
        settings = {f.name: getattr(self, f.name) for f in fields(self)}
        return Workload(**{**settings, **changes})

    def with_requests(self, requests: Sequence[tuple[int, int]]) -> Workload:
        """The same settings over other requests (one data-parallel rank's)."""
        return self.changed(requests=requests)


# --------------------------------------------------------------------------------------------------------- pairs
def _causal_pairs(context: int, new: int, keys_per_query: int | None) -> int:
    """Pairs of one request whose t-th new query sees ``min(keys_per_query, context − new + t + 1)`` keys."""
    first = context - new + 1  # keys available to the first new query
    if keys_per_query is None or keys_per_query >= context:
        return new * first + new * (new - 1) // 2
    k = keys_per_query
    if k <= first:
        return new * k
    below = k - first  # queries t = 0 … below − 1 see first + t < k keys
    return below * first + below * (below - 1) // 2 + (new - below) * k


def keys_per_query(workload: Workload) -> int | None:
    """Keys one query may see at most: the window, top-k, or the smaller of both (None: every earlier key)."""
    limits = [k for k in (workload.window, workload.topk) if k is not None]
    return min(limits) if limits else None


def as_mask(mask: Any) -> np.ndarray:
    """A keep-mask as bool ``[H, T, T]`` (a ``[T, T]`` one as one head), from numpy or torch."""
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    keep = np.asarray(mask)
    if keep.dtype != bool:
        raise ValueError(f"mask must be a boolean keep-mask, got dtype {keep.dtype}")
    if keep.ndim == 2:
        keep = keep[None]
    if keep.ndim == 4 and keep.shape[0] == 1:
        keep = keep[0]
    if keep.ndim != 3 or keep.shape[-1] != keep.shape[-2]:
        raise ValueError(f"mask must be a bool [T, T] or [H, T, T] array, got shape {keep.shape}")
    return keep


def _request_rows(keep: np.ndarray, context: int, new: int) -> np.ndarray:
    """The rows and keys of one request in a keep-mask over a text of T tokens: ``[H, new, context]``."""
    if context > keep.shape[-1]:
        raise ValueError(
            f"the mask covers {keep.shape[-1]} tokens but a request attends to {context} keys: use requests within "
            f"the mask's text, e.g. [({keep.shape[-1]}, {keep.shape[-1]})] for its prefill"
        )
    return keep[:, context - new : context, :context]


def _check_mask_settings(workload: Workload) -> None:
    if workload.window is not None or workload.topk is not None:
        raise ValueError(
            "a realised mask says which pairs each head keeps: leave window and topk unset when you pass mask="
        )


def attention_pairs(workload: Workload, mask: Any = None) -> int | float:
    """The (query, key) pairs one head scores in the whole batch, counted exactly (request-local; causal; a
    window's band; DSA's ``min(k, keys available)``). With ``mask`` (a realised keep-mask, bool ``[T, T]`` or
    ``[H, T, T]``, e.g. ``comparison.keep_mask(layer)``) each request's rows and keys are counted from it as they
    are, the mean over heads (a float)."""
    if mask is None:
        k = keys_per_query(workload)
        return sum(_causal_pairs(context, new, k) for context, new in workload.requests)
    _check_mask_settings(workload)
    keep = as_mask(mask)
    total = sum(int(_request_rows(keep, c, n).sum()) for c, n in workload.requests)
    return total / keep.shape[0]


def pairs_available(workload: Workload) -> int:
    """Causal pairs of the batch with no window or selection: what DSA's indexer scores."""
    return sum(_causal_pairs(context, new, None) for context, new in workload.requests)


def keys_read(workload: Workload, mask: Any = None) -> float:
    """Keys per key/value head the batch reads from the cache: per request the union of the keys its queries see
    (a window's band: ``min(context, new + window − 1)``; top-k: at most ``new · k`` of them, an upper bound, since
    which keys win depends on the scores; a mask: its columns with a kept pair, mean over heads)."""
    if mask is not None:
        _check_mask_settings(workload)
        keep = as_mask(mask)
        return sum(float(_request_rows(keep, c, n).any(axis=-2).sum()) for c, n in workload.requests) / keep.shape[0]
    total = 0
    for context, new in workload.requests:
        keys = context
        if workload.window is not None:
            keys = min(keys, new + workload.window - 1)
        if workload.topk is not None:
            keys = min(keys, new * workload.topk)
        total += keys
    return float(total)


# ------------------------------------------------------------------------------------------------ flash tiles
@dataclass(frozen=True)
class TileGrid:
    """FlashAttention's tiles of B_r queries x B_c keys, per request: ``grids[i]`` ``[ceil(new/B_r),
    ceil(context/B_c)]`` holds the fraction of heads that compute each tile (it holds a kept pair; 0: skipped).
    ``computed`` and ``total`` are per head (mean over heads with a mask)."""

    tile: tuple[int, int]
    grids: tuple[np.ndarray, ...]
    computed: float
    total: int

    @property
    def skipped(self) -> float:
        """The fraction of tiles skipped."""
        return 1.0 - self.computed / self.total if self.total else 0.0


def tile_grid(workload: Workload, mask: Any = None) -> TileGrid:
    """Which of FlashAttention's tiles hold at least one kept pair (see :class:`TileGrid`). Causal and window
    tiles are exact; a top-k selection without a realised mask may hit any tile with an available pair (counted
    as computed: scattered selections touch nearly every tile)."""
    b_r, b_c = workload.tile
    keep = None
    if mask is not None:
        _check_mask_settings(workload)
        keep = as_mask(mask)
    grids = []
    computed = 0.0
    total = 0
    for context, new in workload.requests:
        rows, cols = math.ceil(new / b_r), math.ceil(context / b_c)
        total += rows * cols
        if keep is not None:
            part = _request_rows(keep, context, new)
            if (new % b_r, context % b_c) != (0, 0):  # padded to whole tiles (a copy: only when it must)
                padded = np.zeros((part.shape[0], rows * b_r, cols * b_c), dtype=bool)
                padded[:, :new, :context] = part
                part = padded
            hit = part.reshape(part.shape[0], rows, b_r, cols, b_c).any(axis=(2, 4))
            grid = hit.mean(axis=0)
        else:
            first = context - new  # position of the request's first new query
            r0 = first + np.arange(rows)[:, None] * b_r  # first and last query position of each row of tiles
            r1 = np.minimum(first + (np.arange(rows)[:, None] + 1) * b_r, context) - 1
            c0, c1 = np.arange(cols)[None] * b_c, np.minimum((np.arange(cols)[None] + 1) * b_c, context) - 1
            hit = c0 <= r1  # causal: some query of the rows sees the tile's first key
            if workload.window is not None:
                hit &= c1 >= r0 - workload.window + 1  # and the first query's window reaches its last key
            grid = hit.astype(float)
        computed += float(grid.sum())
        grids.append(grid)
    return TileGrid((b_r, b_c), tuple(grids), computed, total)


# -------------------------------------------------------------------------------------------------- paged KV
@dataclass(frozen=True)
class PagedKV:
    """PagedAttention's cache blocks: ``blocks[i]`` = ``ceil(context_i / page_size)`` for request i, ``table[i]``
    its block ids (allocated in request order), and ``occupancy`` = tokens cached / token slots allocated."""

    page_size: int
    blocks: tuple[int, ...]
    table: tuple[tuple[int, ...], ...]

    @property
    def total_blocks(self) -> int:
        return sum(self.blocks)

    def occupancy(self, tokens: int) -> float:
        return tokens / (self.total_blocks * self.page_size) if self.total_blocks else 1.0


def paged_kv(workload: Workload) -> PagedKV | None:
    """The block table of ``workload``'s cache (None without ``page_size``)."""
    size = workload.page_size
    if size is None:
        return None
    blocks = tuple(math.ceil(context / size) for context, _ in workload.requests)
    starts = np.cumsum((0, *blocks))
    table = tuple(tuple(range(int(starts[i]), int(starts[i + 1]))) for i in range(len(blocks)))
    return PagedKV(size, blocks, table)


# ------------------------------------------------------------------------------------------------ data parallel
def dp_ranks(workload: Workload) -> tuple[tuple[int, ...], ...]:
    """Which requests each data-parallel rank runs: request i on rank ``i mod dp`` (ranks may stay idle)."""
    return tuple(tuple(range(rank, len(workload.requests), workload.dp)) for rank in range(workload.dp))


def rank_workload(workload: Workload, rank: int) -> Workload:
    """The requests data-parallel rank ``rank`` runs (:func:`dp_ranks`), as a workload of their own with the same
    settings: what one GPU of that rank computes."""
    return workload.with_requests([workload.requests[i] for i in dp_ranks(workload)[rank]])
