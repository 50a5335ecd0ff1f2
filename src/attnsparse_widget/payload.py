"""What travels to the browser: figures whose arrays are binary buffers, only for what is on screen.

Every numpy array inside a figure (see :mod:`attnsparse_widget.figures`) becomes ``{"shape": [r, c], "dtype":
"f2" | "u1", "data": bytes}``: float16 for probabilities (NaN kept), uint8 for codes and thumbnails. anywidget sends
the bytes as binary websocket frames and the frontend decodes them into Float32Array rows for plotly. Never JSON
lists of floats. Gallery thumbnails are uint8, each head's dense and sparse pair scaled to that head's maximum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .figures import heavy_drops, main_figure, map_view, mask_figure, view_title

if TYPE_CHECKING:
    from .compare import Comparison

THUMB = 24  # cells per axis of a gallery thumbnail


def matrix(values: np.ndarray, dtype: str = "f2") -> dict[str, Any]:
    """A 2-D array as a binary payload entry (float16 ``f2`` or uint8 ``u1``)."""
    arr = np.ascontiguousarray(values, dtype=np.float16 if dtype == "f2" else np.uint8)
    return {"shape": list(arr.shape), "dtype": dtype, "data": arr.tobytes()}


def encode(value: Any) -> Any:
    """``value`` with every 2-D numpy array replaced by a binary :func:`matrix` entry (uint8 stays uint8, the rest
    goes as float16) and tuples as lists; everything else as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return matrix(value, "u1" if value.dtype == np.uint8 else "f2")
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def view_payload(res: Comparison, layer: int, head: int, region: list[int] | None = None) -> dict[str, Any]:
    """The main view and the mask preview of ``layer`` and ``head`` (-1: mean over heads), ready to send.

    Besides the two figures: per cell, its state code (figures.NOT_ALLOWED, KEPT, PARTLY_KEPT, DROPPED) and the
    percentage of its pairs kept (the tooltip's data), and the heaviest dropped pairs."""
    view = map_view(res, layer, head, region)
    return encode(
        {
            "layer": layer,
            "head": head,
            "region": view.region,
            "factor": view.factor,
            "figure": main_figure(view, res.tokens, view_title(res, view)),
            "mask_figure": mask_figure(view, mask_label(res)),
            "states": view.states(),
            "kept_pct": np.round(100 * np.nan_to_num(view.kept_fraction())).astype(np.uint8),
            "drops": heavy_drops(view),
        }
    )


def mask_label(res: Comparison) -> str:
    m = res.metrics
    req = "–" if m.requested_sparsity is None else f"{m.requested_sparsity:.1%}"
    return f"{res.mask.label()}: requested {req}, achieved {m.achieved_sparsity:.1%}"


def _thumbnails(dense: np.ndarray, sparse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ``[H, c, c]`` maps x2 → uint8. Each head's dense and sparse thumbnails share one scale (that head's
    peak over both), so they compare by eye."""
    peak = np.maximum(*(p.max(axis=(-1, -2), keepdims=True) for p in (dense, sparse)))
    scale = 255 / np.where(peak > 0, peak, 1)
    return tuple(np.round(p * scale).astype(np.uint8) for p in (dense, sparse))  # type: ignore[return-value]


def gallery_payload(res: Comparison, side: int = THUMB) -> dict[str, Any]:
    """Every layer x head as a small dense and sparse thumbnail, stitched into one grid per regime, plus the
    per-head change scores the gallery sorts by (KL(sparse‖dense) and attention mass lost)."""
    pairs = [_thumbnails(*res.head_maps(layer, side)) for layer in range(res.n_layers)]
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
        "kl": [float(v) for row in res.metrics.kl_per_head or [] for v in row],
        "mass_lost": [1.0 - float(v) for row in res.metrics.mass_recall_per_head or [] for v in row],
    }


__all__ = ["encode", "gallery_payload", "matrix", "view_payload"]
