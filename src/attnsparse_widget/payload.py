"""What travels to the browser: figures whose arrays are binary buffers, only for what is on screen.

Every numpy array inside a figure (see :mod:`attnsparse_widget.figures`) becomes ``{"shape": [r, c], "dtype":
"f2" | "u1", "data": bytes}``: float16 for probabilities (NaN kept), uint8 for codes and thumbnails. anywidget sends
the bytes as binary websocket frames and the frontend decodes them into Float32Array rows for plotly. Never JSON
lists of floats. Gallery thumbnails are uint8, each head's dense and sparse pair scaled to that head's maximum.

The builders of the widget's output traits live here, one per trait (``layer_chart`` is
``with_binary_arrays(layer_figure(...))``); what each returns is declared in :mod:`attnsparse_widget.contract`,
mirrored by ``js/contract.ts``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from .contract import (
    AdaptState,
    Continuations,
    ContinuationTokens,
    DenseMap,
    Empty,
    Figure,
    Gallery,
    Info,
    MatrixPayload,
    MetricsPayload,
    NextTokens,
    NextTokenView,
    Status,
    View,
)
from .figures import heavy_drops, layer_figure, main_figure, map_view, mask_figure, view_title

if TYPE_CHECKING:
    from .adapt import Adaptation, AdaptProgress
    from .result import Comparison

THUMB = 24  # cells per axis of a gallery thumbnail


def matrix(values: np.ndarray, dtype: Literal["f2", "u1"] = "f2") -> MatrixPayload:
    """A 2-D array as a binary payload entry (float16 ``f2`` or uint8 ``u1``)."""
    arr = np.ascontiguousarray(values, dtype=np.float16 if dtype == "f2" else np.uint8)
    return {"shape": list(arr.shape), "dtype": dtype, "data": arr.tobytes()}


def with_binary_arrays(value: Any) -> Any:
    """``value`` with every 2-D numpy array replaced by a binary :func:`matrix` entry (uint8 stays uint8, the rest
    goes as float16) and tuples as lists; everything else as it is."""
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return matrix(value, "u1" if value.dtype == np.uint8 else "f2")
    if isinstance(value, dict):
        return {k: with_binary_arrays(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [with_binary_arrays(v) for v in value]
    return value


def view_payload(
    res: Comparison, layer: int, head: int, region: list[int] | None = None, which: str = "sparse"
) -> tuple[View, DenseMap]:
    """The main view and the mask preview of ``layer`` and ``head`` (-1: mean over heads), ready to send; the masked
    pass beside the dense one is ``which`` ("sparse": post-hoc, or "adapted"). The dense panel's values go apart,
    as the :class:`~attnsparse_widget.contract.DenseMap`: they stay the same while only the mask changes.

    Besides the two figures: per cell, its state code (figures.NOT_ALLOWED, KEPT, PARTLY_KEPT, DROPPED) and the
    percentage of its pairs kept (the tooltip's data), and the heaviest dropped pairs. (The next tokens after a
    position go apart: :func:`next_tokens_payload`.)"""
    view = map_view(res, layer, head, region, which=which)
    figure = with_binary_arrays(main_figure(view, res.tokens, view_title(res, view)))
    dense = next(trace for trace in figure["data"] if trace["name"] == "dense")
    dense_map: DenseMap = {"layer": layer, "head": head, "region": list(view.region), "z": dense.pop("z")}
    payload: View = {
        "masked": which,
        "layer": layer,
        "head": head,
        "region": list(view.region),
        "factor": view.factor,
        "figure": figure,
        "mask_figure": with_binary_arrays(mask_figure(view, mask_label(res))),
        "states": matrix(view.states(), "u1"),
        "kept_pct": matrix(np.round(100 * np.nan_to_num(view.kept_fraction())).astype(np.uint8), "u1"),
        "drops": heavy_drops(view),
    }
    return payload, dense_map


def mask_label(res: Comparison) -> str:
    m = res.metrics
    req = "–" if m.requested_sparsity is None else f"{m.requested_sparsity:.1%}"
    return f"{res.mask_label}: requested {req}, achieved {m.achieved_sparsity:.1%}"


def _thumbnails(dense: np.ndarray, sparse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ``[H, c, c]`` maps x2 → uint8. Each head's dense and sparse thumbnails share one scale (that head's
    peak over both), so they compare by eye."""
    peak = np.maximum(*(p.max(axis=(-1, -2), keepdims=True) for p in (dense, sparse)))
    scale = 255 / np.where(peak > 0, peak, 1)
    return tuple(np.round(p * scale).astype(np.uint8) for p in (dense, sparse))  # type: ignore[return-value]


def gallery_payload(res: Comparison, side: int = THUMB, which: str = "sparse") -> Gallery:
    """Every layer x head as a small dense and masked thumbnail (``which``: "sparse", post-hoc, or "adapted"),
    stitched into one grid per regime, plus the per-head change scores the gallery sorts by (KL(masked‖dense) and
    attention mass lost)."""
    pairs = [_thumbnails(*res.head_maps(layer, side, which=which)) for layer in range(res.n_layers)]
    dense = np.stack([d for d, _ in pairs])
    sparse = np.stack([s for _, s in pairs])
    m = res.metrics
    adapted = which == "adapted"
    kl = m.adapted_kl_per_head if adapted else m.kl_per_head
    recall = m.adapted_mass_recall_per_head if adapted else m.mass_recall_per_head
    cell = dense.shape[-1]

    def stitch(thumbs: np.ndarray) -> MatrixPayload:
        # [L, H, c, c] -> one [L*c, H*c] image, so the browser draws one heatmap, not L*H subplots
        return matrix(thumbs.transpose(0, 2, 1, 3).reshape(res.n_layers * cell, res.n_heads * cell), "u1")

    return {
        "n_layers": res.n_layers,
        "n_heads": res.n_heads,
        "cell": cell,
        "dense": stitch(dense),
        "sparse": stitch(sparse),
        "masked": which,
        "kl": [_finite(float(v)) for row in kl or [] for v in row],
        "mass_lost": [_finite(1.0 - float(v)) for row in recall or [] for v in row],
    }


def info_payload(res: Comparison) -> Info:
    """What the result is of: the model, its shape, the tokens and the mask (the ``info`` trait)."""
    return {
        "model": res.model_name,
        "n_layers": res.n_layers,
        "n_heads": res.n_heads,
        "n_kv_heads": res.n_kv_heads,
        "n_tokens": len(res.tokens),
        "causal": res.causal,
        "mask": res.mask.id,
        "mask_label": res.mask_label,
        "mask_params": res.mask_params,
        "budget": res.mask.budget,
        "reachable": list(res.mask.reachable_range(len(res.tokens), res.causal)),
        "note": " ".join(res.metrics.notes),
    }


def metrics_payload(res: Comparison) -> MetricsPayload:
    """Every metric as far as it is computed (non-finite floats as None) and the continuations (the ``metrics``
    trait). Field for field :class:`~attnsparse_widget.metrics.Metrics`: a new field goes here and into the
    contract (``tests/test_contract.py`` says so)."""
    m = res.metrics
    return {
        "requested_sparsity": _finite(m.requested_sparsity),
        "achieved_sparsity": _finite(m.achieved_sparsity),
        "achieved_sparsity_per_head": _finite(m.achieved_sparsity_per_head),
        "mass_recall": _finite(m.mass_recall),
        "mass_recall_per_head": _finite(m.mass_recall_per_head),
        "mass_recall_min": _finite(m.mass_recall_min),
        "mass_recall_p5": _finite(m.mass_recall_p5),
        "kl": _finite(m.kl),
        "kl_per_head": _finite(m.kl_per_head),
        "output_relative_error": _finite(m.output_relative_error),
        "dense_ppl": _finite(m.dense_ppl),
        "sparse_ppl": _finite(m.sparse_ppl),
        "delta_ppl": _finite(m.delta_ppl),
        "delta_nll": _finite(m.delta_nll),
        "delta_nll_se": _finite(m.delta_nll_se),
        "next_token_kl": _finite(m.next_token_kl),
        "top1_agreement": _finite(m.top1_agreement),
        "per_layer_delta_ppl": _finite(m.per_layer_delta_ppl),
        "cumulative_delta_ppl": _finite(m.cumulative_delta_ppl),
        "adapted_ppl": _finite(m.adapted_ppl),
        "recovered": _finite(m.recovered),
        "adapted_next_token_kl": _finite(m.adapted_next_token_kl),
        "adapted_top1_agreement": _finite(m.adapted_top1_agreement),
        "adapted_achieved_sparsity": _finite(m.adapted_achieved_sparsity),
        "adapted_mass_recall": _finite(m.adapted_mass_recall),
        "adapted_mass_recall_per_head": _finite(m.adapted_mass_recall_per_head),
        "adapted_kl": _finite(m.adapted_kl),
        "adapted_kl_per_head": _finite(m.adapted_kl_per_head),
        "attention_time_dense": _finite(m.attention_time_dense),
        "attention_time_sparse": _finite(m.attention_time_sparse),
        "attention_kernel": m.attention_kernel,
        "attention_tiles_skipped": _finite(m.attention_tiles_skipped),
        "notes": list(m.notes),
        "continuations": cast(Continuations, dict(res.continuations)),
        "continuation_tokens": cast(ContinuationTokens, res.continuation_tokens()),
    }


def status_payload(
    *,
    busy: bool,
    stage: str = "",
    started: float = 0.0,
    request: int = 0,
    error: str | None = None,
    progress: float | None = None,
    detail: str | None = None,
) -> Status:
    """The ``status`` trait; every status the widget publishes is built here. ``progress`` and ``detail`` are left
    out when None (see :class:`~attnsparse_widget.contract.Status` for what each key means)."""
    status: Status = {"busy": busy, "error": error, "stage": stage, "started": started, "request": request}
    if progress is not None:
        status["progress"] = progress
    if detail is not None:
        status["detail"] = detail
    return status


def adapt_payload(
    state: Literal["none", "training", "ready", "cancelled", "failed"],
    seconds_per_step: float | None,
    *,
    progress: AdaptProgress | None = None,
    adaptation: Adaptation | None = None,
    error: str | None = None,
) -> AdaptState:
    """The ``adaptation`` trait: the Adapt control's state, with the training's progress or the finished
    adaptation's record when given."""
    out: AdaptState = {"state": state, "seconds_per_step": _finite(seconds_per_step)}
    if progress is not None:
        out["phase"], out["done"], out["steps"] = progress.phase, progress.done, progress.total
        out["loss"], out["elapsed"] = _finite(progress.loss), progress.elapsed
    if adaptation is not None:
        out["mask"], out["sparsity"], out["from_cache"] = adaptation.mask_id, adaptation.sparsity, adaptation.from_cache
        out["steps"] = out["done"] = adaptation.steps
        out["loss"] = _finite(adaptation.losses[-1]) if adaptation.losses else None
        out["elapsed"] = adaptation.seconds
    if error is not None:
        out["error"] = error
    return out


def failed_status(status: Status, error: str, *, request: int | None = None) -> Status:
    """``status`` ended by ``error``: not busy, the error shown; the stage, start and progress kept, and the request
    number unless ``request`` is given."""
    return status_payload(
        busy=False,
        stage=status["stage"],
        started=status["started"],
        request=status["request"] if request is None else request,
        error=error,
        progress=status.get("progress"),
    )


def layer_chart_payload(res: Comparison, selected: int) -> Figure | Empty:
    """The per-layer chart (the ``layer_chart`` trait) from the result's metrics as far as they are computed, the
    ``selected`` layer outlined; empty without a perplexity (an encoder)."""
    m = res.metrics
    if m.dense_ppl is None:
        return {}
    chart = layer_figure(
        _finite(m.per_layer_delta_ppl), _finite(m.cumulative_delta_ppl), _finite(m.mass_recall), res.n_layers, selected
    )
    return cast(Figure, with_binary_arrays(chart))


def next_tokens_payload(res: Comparison, position: int) -> NextTokenView | Empty:
    """The ``next_tokens`` trait: the top-5 next tokens after ``position`` (-1 or out of range: the last) under
    each regime; empty for an encoder or before the next-token metrics."""
    if not res.is_lm or res.metrics.dense_ppl is None:
        return {}
    n = len(res.tokens)
    position = position % n if -n <= position < n else n - 1
    return {"position": position, "top": cast(NextTokens, res.next_token_top(position, k=5))}


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: None instead (the frontend shows 'n/a'), in lists at any depth too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


__all__ = [
    "adapt_payload",
    "layer_chart_payload",
    "with_binary_arrays",
    "failed_status",
    "gallery_payload",
    "info_payload",
    "matrix",
    "metrics_payload",
    "next_tokens_payload",
    "status_payload",
    "view_payload",
]
