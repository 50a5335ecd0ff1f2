"""What travels to the browser: attention maps as binary buffers, only for what is on screen.

Matrices go as float16 bytes with their shape (``{"shape": [r, c], "dtype": "f2", "data": bytes}``); the frontend
decodes them into Float32Array rows for plotly. Never JSON lists of floats. A map wider than ``MAX_SIDE`` is shown
as a block-mean overview (``factor`` tokens per cell); a zoom region narrower than ``MAX_SIDE`` comes at full
resolution. Gallery thumbnails are uint8, each head's dense and sparse pair scaled to that head's maximum.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from einops import reduce

if TYPE_CHECKING:
    from .compare import Comparison

MAX_SIDE = 256  # cells per axis sent for the main view
THUMB = 24  # cells per axis of a gallery thumbnail


def matrix(values: np.ndarray, dtype: str = "f2") -> dict[str, Any]:
    """A 2-D array as a binary payload entry (float16 ``f2`` or uint8 ``u1``)."""
    arr = np.ascontiguousarray(values, dtype=np.float16 if dtype == "f2" else np.uint8)
    return {"shape": list(arr.shape), "dtype": dtype, "data": arr.tobytes()}


def block_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` blocks of the last two axes (edges padded with NaN and ignored)."""
    if factor <= 1:
        return values
    rows, cols = values.shape[-2:]
    pad_r, pad_c = -rows % factor, -cols % factor
    padded = np.pad(values.astype(np.float32), [(0, 0)] * (values.ndim - 2) + [(0, pad_r), (0, pad_c)],
                    constant_values=np.nan)
    return reduce(padded, "... (r a) (c b) -> ... r c", np.nanmean, a=factor, b=factor)


def _head_view(res: Comparison, layer: int, head: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dense = res.attention(layer, "dense")
    sparse = res.attention(layer, "sparse")
    keep = res.keep_mask(layer).astype(np.float32)
    if head < 0:  # the mean over heads
        return dense.mean(0), sparse.mean(0), keep.mean(0)
    return dense[head], sparse[head], keep[head]


def view_payload(res: Comparison, layer: int, head: int, region: list[int] | None = None) -> dict[str, Any]:
    """Dense, sparse and keep maps of one layer and head (``head=-1``: mean over heads) for the main view.

    ``region`` = [q0, q1, k0, k1] (half-open) zooms in; the shown block is pooled to at most ``MAX_SIDE`` cells.
    """
    n = len(res.tokens)
    q0, q1, k0, k1 = clip_region(region, n)
    dense, sparse, keep = (m[q0:q1, k0:k1] for m in _head_view(res, layer, head))
    allowed = res.allowed_mask(layer)[q0:q1, k0:k1].astype(np.float32)
    factor = max(1, math.ceil(max(q1 - q0, k1 - k0) / MAX_SIDE))
    return {
        "layer": layer,
        "head": head,
        "region": [q0, q1, k0, k1],
        "factor": factor,
        "dense": matrix(block_mean(dense, factor)),
        "sparse": matrix(block_mean(sparse, factor)),
        "keep": matrix(block_mean(keep, factor)),
        "allowed": matrix(block_mean(allowed, factor)),
    }


def clip_region(region: list[int] | None, n: int) -> tuple[int, int, int, int]:
    if not region or len(region) != 4:
        return 0, n, 0, n
    q0, q1, k0, k1 = (int(v) for v in region)
    q0, k0 = max(0, min(q0, n - 1)), max(0, min(k0, n - 1))
    return q0, max(q0 + 1, min(q1, n)), k0, max(k0 + 1, min(k1, n))


def _thumbnails(dense: np.ndarray, sparse: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``[H, T, T]`` x2 → uint8 ``[H, c, c]`` x2, block-mean pooled to at most ``side`` cells a side. Each head's
    dense and sparse thumbnails share one scale (that head's peak over both), so they compare by eye."""
    factor = max(1, math.ceil(dense.shape[-1] / side))
    pooled = [np.nan_to_num(block_mean(m, factor)) for m in (dense, sparse)]
    peak = np.maximum(*(p.max(axis=(-1, -2), keepdims=True) for p in pooled))
    scale = 255 / np.where(peak > 0, peak, 1)
    return tuple(np.round(p * scale).astype(np.uint8) for p in pooled)  # type: ignore[return-value]


def gallery_payload(res: Comparison, side: int = THUMB) -> dict[str, Any]:
    """Every layer x head as a small dense and sparse thumbnail, stitched into one grid per regime, plus the
    per-head change scores the gallery sorts by (KL(sparse‖dense) and attention mass lost)."""
    pairs = [_thumbnails(res.attention(layer, "dense"), res.attention(layer, "sparse"), side)
             for layer in range(res.n_layers)]
    dense = np.stack([d for d, _ in pairs])
    sparse = np.stack([s for _, s in pairs])
    cell = dense.shape[-1]

    def stitch(thumbs: np.ndarray) -> dict[str, Any]:
        # [L, H, c, c] -> one [L*c, H*c] image, so the browser draws one heatmap, not L*H subplots
        return matrix(thumbs.transpose(0, 2, 1, 3).reshape(res.n_layers * cell, res.n_heads * cell), "u1")

    return {
        "n_layers": res.n_layers,
        "n_heads": res.n_heads,
        "cell": cell,
        "dense": stitch(dense),
        "sparse": stitch(sparse),
        "kl": [float(v) for row in res.metrics.kl_per_head for v in row],
        "mass_lost": [1.0 - float(v) for row in res.metrics.mass_recall_per_head for v in row],
    }
