"""The plotly figures of a comparison: the one definition that the widget draws and the exports (GIF, PNG, HTML)
render, so a GIF frame is the widget's main view.

Figures are plain plotly dicts whose heatmap ``z`` are float32 numpy arrays (NaN where a cell is blank). The widget
sends them with every array as a binary buffer (:func:`attnsparse_widget.payload.with_binary_arrays`); the
exports hand them to plotly.py and kaleido as they are.

The main view of one layer and head (or the mean of heads) has three panels:
    dense          the model's own attention probabilities;
    sparse         kept pairs: the sparse probability (same scale as dense); dropped pairs: the dense probability
                   they lost, on a grey-to-red scale, so the pairs the model relied on stand out (one heatmap:
                   dropped cells carry minus the probability lost, and one colour scale has both halves);
    sparse − dense a diverging map, blue where attention was taken away, red where it went instead.
Pairs the model itself never allows (future keys, padding) are blank in every panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .contract import Drop
from .messages import requested_achieved
from .pooling import MAX_SIDE

if TYPE_CHECKING:
    from .result import Comparison

TOKEN_LABELS_UP_TO = 64  # axis ticks show the tokens up to this many cells, positions beyond
PANELS = ("dense", "sparse", "diff")
PANEL_TITLES = {"dense": "dense", "sparse": "sparse (red: dropped, by the dense p lost)", "diff": "sparse − dense"}
# the same panels when the masked pass shown is the adapted model's (compare(..., adapted=...))
ADAPTED_TITLES = {"dense": "dense", "sparse": "adapted, under the mask (red: dropped)", "diff": "adapted − dense"}

VIRIDIS = "Viridis"
DROPPED_SCALE: list[list[Any]] = [[0.0, "#e6e6e6"], [0.15, "#f4a582"], [1.0, "#b2182b"]]  # by the fraction of zmax lost
_VIRIDIS_STOPS = [
    "#440154",
    "#482878",
    "#3e4989",
    "#31688e",
    "#26828e",
    "#1f9e89",
    "#35b779",
    "#6ece58",
    "#b5de2b",
    "#fde725",
]
# the sparse panel's scale over [-zmax, zmax]: dropped cells (minus the p lost) below the middle, kept cells above
SPARSE_SCALE = [[0.5 - f / 2, c] for f, c in reversed(DROPPED_SCALE)] + [
    [0.5 + i / (2 * (len(_VIRIDIS_STOPS) - 1)), c] for i, c in enumerate(_VIRIDIS_STOPS)
]
# blue: sparse took probability away; red: sparse gave it; white: no change (plotly's own RdBu is grey there)
DIVERGING = [[0.0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1.0, "#b2182b"]]
MASK_SCALE = [[0.0, "#f4a582"], [1.0, "#1f3b73"]]

# cell states (uint8 codes)
NOT_ALLOWED, KEPT, PARTLY_KEPT, DROPPED = 0, 1, 2, 3


# --------------------------------------------------------------------------------------------------- the view
@dataclass
class MapView:
    """Dense, sparse and keep maps of one layer and head over a region, pooled to at most ``MAX_SIDE`` cells.

    ``keep`` and ``allowed`` are the fractions of each cell's pairs the mask keeps and the model allows (0 or 1 at
    full resolution). ``region`` = [q0, q1, k0, k1] (half-open token ranges); cell (i, j) covers queries
    ``q0 + i·factor ..`` and keys ``k0 + j·factor ..``.
    """

    layer: int
    head: int  # -1: the mean over heads
    dense: np.ndarray
    sparse: np.ndarray
    keep: np.ndarray
    allowed: np.ndarray
    region: tuple[int, int, int, int]
    factor: int
    masked: str = "sparse"  # the masked pass in ``sparse`` and ``keep``: "sparse" (post-hoc) or "adapted"

    def states(self) -> np.ndarray:
        """uint8 code per cell: NOT_ALLOWED, KEPT, PARTLY_KEPT or DROPPED."""
        with np.errstate(invalid="ignore", divide="ignore"):
            kept = np.where(self.allowed > 0, self.keep / np.where(self.allowed > 0, self.allowed, 1), 0)
        out = np.full(self.dense.shape, PARTLY_KEPT, dtype=np.uint8)
        out[kept >= 0.999] = KEPT
        out[kept <= 0.001] = DROPPED
        out[~(self.allowed > 0)] = NOT_ALLOWED
        return out

    def kept_fraction(self) -> np.ndarray:
        """Fraction of each cell's allowed pairs that the mask keeps (NaN where nothing is allowed)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.allowed > 0, self.keep / np.where(self.allowed > 0, self.allowed, 1), np.nan)


def clip_region(region: list[int] | tuple[int, ...] | None, n: int) -> tuple[int, int, int, int]:
    """[q0, q1, k0, k1] clipped to ``n`` tokens, never empty; None or [] is the whole map."""
    if not region or len(region) != 4:
        return 0, n, 0, n
    q0, q1, k0, k1 = (int(v) for v in region)
    q0, k0 = max(0, min(q0, n - 1)), max(0, min(k0, n - 1))
    return q0, max(q0 + 1, min(q1, n)), k0, max(k0 + 1, min(k1, n))


def map_view(
    res: Comparison,
    layer: int,
    head: int = -1,
    region: list[int] | None = None,
    max_side: int = MAX_SIDE,
    which: str = "sparse",
) -> MapView:
    """The maps of ``layer`` and ``head`` (-1: mean over heads) over ``region``, pooled to ``max_side`` cells; the
    masked pass is ``which`` ("sparse", post-hoc, or "adapted")."""
    q0, q1, k0, k1 = clip_region(region, len(res.tokens))
    maps, factor = res.maps(layer, head, (q0, q1, k0, k1), max_side, which=which)
    return MapView(
        layer=layer,
        head=head,
        dense=maps["dense"],
        sparse=maps["sparse"],
        keep=maps["keep"],
        allowed=maps["allowed"],
        region=(q0, q1, k0, k1),
        factor=factor,
        masked=which,
    )


def heavy_drops(view: MapView, limit: int = 5) -> list[Drop]:
    """The dropped (or partly dropped) cells with the most dense weight, heaviest first: the pairs that mattered."""
    states = view.states()
    weight = np.where((states == DROPPED) | (states == PARTLY_KEPT), np.nan_to_num(view.dense), 0.0)
    flat = np.argsort(-weight, axis=None, kind="stable")[:limit]
    q0, _, k0, _ = view.region
    out: list[Drop] = []
    for idx in flat:
        i, j = np.unravel_index(idx, weight.shape)
        if weight[i, j] <= 0:
            break
        out.append({"q": int(q0 + i * view.factor), "k": int(k0 + j * view.factor), "w": float(weight[i, j])})
    return out


# ------------------------------------------------------------------------------------------------- text bits
def visible_token(token: str) -> str:
    """A token with invisible characters made visible: newline ↵, tab ⇥, an empty token ∅."""
    if token == "":
        return "∅"
    return token.replace("\r\n", "↵").replace("\n", "↵").replace("\t", "⇥")


def plotly_safe(text: str) -> str:
    """Text for plotly labels: plotly renders a subset of HTML, so tokens are escaped to show literally."""
    return visible_token(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _axis(tokens: list[str], start: int, cells: int, factor: int) -> dict[str, Any]:
    base: dict[str, Any] = {"showgrid": False, "zeroline": False}
    if factor == 1 and cells <= TOKEN_LABELS_UP_TO:
        return {
            **base,
            "tickmode": "array",
            "tickvals": list(range(start, start + cells)),
            "ticktext": [plotly_safe(tokens[p]) if p < len(tokens) else "" for p in range(start, start + cells)],
            "tickfont": {"size": 8 if cells > 32 else 10},
        }
    return {**base, "title": {"text": "position"}}


def _coords(start: int, cells: int, factor: int) -> list[int]:
    return [start + i * factor for i in range(cells)]


# ---------------------------------------------------------------------------------------------- main figure
def main_figure(view: MapView, tokens: list[str], title: str, panels: tuple[str, ...] = PANELS) -> dict[str, Any]:
    """The main view: ``panels`` (any of "dense", "sparse", "diff", in that order) side by side, one shared y axis.

    Heatmaps carry no per-cell hover text (the widget draws its own tooltip from the payload)."""
    unknown = [p for p in panels if p not in PANELS]
    if unknown or not panels:
        raise ValueError(f"panels must be a non-empty subset of {PANELS}, got {panels!r}")
    panels = tuple(p for p in PANELS if p in panels)
    states = view.states()
    blank = states == NOT_ALLOWED
    shown = (states == KEPT) | (states == PARTLY_KEPT)
    dense = np.where(blank, np.nan, view.dense).astype(np.float32)
    lost = -np.maximum(np.nan_to_num(view.dense), 1e-6)  # below zero even where nothing was lost (float16 too)
    layers = {
        "dense": dense,
        "sparse": np.where(shown, view.sparse, np.where(states == DROPPED, lost, np.nan)).astype(np.float32),
        "diff": np.where(blank, np.nan, view.sparse - view.dense).astype(np.float32),
    }
    zmax = float(max(np.nanmax(view.dense, initial=0.0), np.nanmax(view.sparse, initial=0.0), 1e-6))
    dmax = float(max(np.nanmax(np.abs(layers["diff"]), initial=0.0), 1e-9))

    # horizontal layout: each panel, then its colorbars
    bars = {"dense": [] if "sparse" in panels else ["p"], "sparse": ["p"], "diff": ["Δp"]}
    bar_w, gap = 0.055, 0.04  # a colorbar and its tick labels take about 0.05 of the width
    n_bars = sum(len(bars[p]) for p in panels)
    width = (1.0 - n_bars * bar_w - gap * (len(panels) - 1)) / len(panels)
    q0, _, k0, _ = view.region
    rows, cols = view.dense.shape
    x = _coords(k0, cols, view.factor)
    y = _coords(q0, rows, view.factor)
    xa = _axis(tokens, k0, cols, view.factor)
    common = {"type": "heatmap", "x": x, "y": y, "zsmooth": False, "hoverinfo": "none", "yaxis": "y"}

    def colorbar(at: float, label: str, **ticks: Any) -> dict[str, Any]:
        return {
            "x": at,
            "xanchor": "left",
            "len": 0.9,
            "thickness": 10,
            "tickfont": {"size": 9},
            "title": {"text": label, "side": "top", "font": {"size": 10}},
            **ticks,
        }

    sparse_ticks = [-zmax, -zmax / 2, 0.0, zmax / 2, zmax]
    sparse_bar = {
        "tickmode": "array",
        "tickvals": sparse_ticks,
        "ticktext": [f"{abs(v):.2g}" for v in sparse_ticks[:2]] + ["0"] + [f"{v:.2g}" for v in sparse_ticks[3:]],
    }

    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {
        "title": {"text": plotly_safe(title), "font": {"size": 13}},
        "yaxis": {**_axis(tokens, q0, rows, view.factor), "autorange": "reversed"},
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "annotations": [],
        "margin": {"l": 70, "r": 10, "t": 60, "b": 60},
        "showlegend": False,
        "hovermode": "closest",
        "uirevision": "main",
    }
    left = 0.0
    for i, panel in enumerate(panels):
        axis = "x" if i == 0 else f"x{i + 1}"
        layout[f"xaxis{'' if i == 0 else i + 1}"] = {
            **xa,
            "domain": [left, left + width],
            **({"matches": "x"} if i else {}),
        }
        layout["annotations"].append(
            {
                "text": (ADAPTED_TITLES if view.masked == "adapted" else PANEL_TITLES)[panel],
                "x": left + width / 2,
                "y": 1.0,
                "yanchor": "bottom",
                "xref": "paper",
                "yref": "paper",
                "showarrow": False,
            }
        )
        at = left + width + 0.005
        if panel == "dense":
            bar = {"colorbar": colorbar(at, "p")} if bars["dense"] else {"showscale": False}
            data.append(
                {
                    **common,
                    "name": "dense",
                    "xaxis": axis,
                    "z": layers["dense"],
                    "zmin": 0,
                    "zmax": zmax,
                    "colorscale": VIRIDIS,
                    **bar,
                }
            )
        elif panel == "sparse":
            data.append(
                {
                    **common,
                    "name": "sparse",
                    "xaxis": axis,
                    "z": layers["sparse"],
                    "zmin": -zmax,
                    "zmax": zmax,
                    "colorscale": SPARSE_SCALE,
                    "colorbar": colorbar(at, "kept p ↑<br>lost p ↓", **sparse_bar),
                }
            )
        else:
            data.append(
                {
                    **common,
                    "name": "sparse − dense",
                    "xaxis": axis,
                    "z": layers["diff"],
                    "zmid": 0,
                    "zmin": -dmax,
                    "zmax": dmax,
                    "colorscale": DIVERGING,
                    "colorbar": colorbar(at, "Δp"),
                }
            )
        left += width + len(bars[panel]) * bar_w + gap
    return {"data": data, "layout": layout}


def mask_figure(view: MapView, label: str) -> dict[str, Any]:
    """The keep-pattern itself: the fraction of each cell's allowed pairs kept (dark) or dropped (light)."""
    q0, _, k0, _ = view.region
    rows, cols = view.keep.shape
    return {
        "data": [
            {
                "type": "heatmap",
                "name": "keep",
                "z": view.kept_fraction().astype(np.float32),
                "x": _coords(k0, cols, view.factor),
                "y": _coords(q0, rows, view.factor),
                "zmin": 0,
                "zmax": 1,
                "colorscale": MASK_SCALE,
                "showscale": False,
                "zsmooth": False,
                "hovertemplate": "query %{y}<br>key %{x}<br>kept %{z:.2f}<extra></extra>",
            }
        ],
        "layout": {
            "title": {"text": plotly_safe(label), "font": {"size": 12}},
            "xaxis": {"title": {"text": "key position"}, "showgrid": False, "zeroline": False, "constrain": "domain"},
            "yaxis": {
                "title": {"text": "query position"},
                "autorange": "reversed",
                "scaleanchor": "x",
                "showgrid": False,
                "zeroline": False,
                "constrain": "domain",
            },
            "plot_bgcolor": "#ffffff",
            "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
            "uirevision": "mask",
        },
    }


def layer_figure(
    per_layer: Sequence[float | None] | None,
    cumulative: Sequence[float | None] | None,
    recall: Sequence[float | None] | None,
    n_layers: int,
    selected: int = -1,
) -> dict[str, Any]:
    """Per-layer perplexity delta (bars: the mask at that layer only; the selected layer outlined), the cumulative
    curve (mask at layers 0..l) and the attention mass recall per layer (right axis). Missing values are None: the
    chart fills in as the curve is computed."""
    iso = list(per_layer or [])
    cum = list(cumulative or [])
    layers = list(range(n_layers))
    return {
        "data": [
            {
                "type": "bar",
                "name": "ΔPPL, mask at layer l only",
                "x": layers[: len(iso)],
                "y": iso,
                "marker": {
                    "color": "#1f77b4",
                    "line": {"color": "#111", "width": [2.5 if i == selected else 0 for i in layers[: len(iso)]]},
                },
                "hovertemplate": "layer %{x}: ΔPPL %{y:.3f} with the mask at this layer only<extra></extra>",
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "ΔPPL, mask at layers 0..l",
                "x": layers[: len(cum)],
                "y": cum,
                "line": {"color": "#ff7f0e"},
                "hovertemplate": "layers 0..%{x}: ΔPPL %{y:.3f}<extra></extra>",
            },
            {
                "type": "scatter",
                "mode": "lines",
                "name": "attention mass recall",
                "x": layers,
                "y": list(recall or []),
                "yaxis": "y2",
                "line": {"color": "#2ca02c", "dash": "dot"},
                "hovertemplate": "layer %{x}: mass recall %{y:.3f}<extra></extra>",
            },
        ],
        "layout": {
            "xaxis": {
                "title": {"text": "layer (click a bar to open it)"},
                "dtick": 5 if n_layers > 40 else 1,
                "range": [-0.6, n_layers - 0.4],
            },
            "yaxis": {"title": {"text": "perplexity delta (sparse − dense)"}, "zeroline": True},
            "yaxis2": {
                "title": {"text": "mass recall"},
                "overlaying": "y",
                "side": "right",
                "range": [0, 1.02],
                "tickformat": ".1f",
                "dtick": 0.2,
                "showgrid": False,
            },
            "legend": {"orientation": "h", "y": 1.18},
            "margin": {"l": 60, "r": 60, "t": 30, "b": 50},
            "uirevision": "layers",
        },
    }


def view_title(res: Comparison, view: MapView, per_layer: bool = False) -> str:
    """``L3 H2 · sink_window(sinks=4, window=60)``, with the pooling, and, for export frames, the requested and
    achieved sparsity and the layer's perplexity delta."""
    head = "mean of heads" if view.head < 0 else f"H{view.head}"
    parts = [f"L{view.layer} {head}", res.mask_label + (" · adapted model" if view.masked == "adapted" else "")]
    if per_layer:
        m = res.metrics
        parts.append(f"sparsity {requested_achieved(m.requested_sparsity, m.achieved_sparsity)}")
        if m.per_layer_delta_ppl is not None and view.layer < len(m.per_layer_delta_ppl):  # the curve may be part way
            parts.append(f"ΔPPL (mask at this layer only) {m.per_layer_delta_ppl[view.layer]:+.3f}")
    if view.factor > 1:
        parts.append(f"{view.factor}×{view.factor} tokens per cell")
    return " · ".join(parts)
