"""Exports of a comparison: an animated GIF stepping through the layers, a PNG of one view, and a self-contained
HTML page. Frames are the widget's own figures (:mod:`attnsparse_widget.figures`), rendered by kaleido in one
headless Chromium session (Debian's ``chromium`` works; kaleido finds ``/usr/bin/chromium`` by itself, or set
``BROWSER_PATH``), MathJax off so nothing is fetched, and assembled by imageio.

    >>> res = aw.compare(None, text, "sink_window", 0.5)
    >>> res.export_gif("layers.gif")                      # every layer, mean of heads, dense | sparse | diff
    >>> res.export_gif("h3.gif", view="sparse", head=3, layers=range(0, 30, 2), duration_ms=400)
    >>> res.export_png("l12.png", layer=12)
    >>> res.to_html("comparison.html")                    # opens anywhere, offline
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .bundle import STATIC
from .figures import PANELS, layer_figure, main_figure, map_view, mask_figure, view_title, visible_token
from .files import writable, write_atomically
from .messages import CAVEAT, requested_achieved

if TYPE_CHECKING:
    from .result import Comparison

VIEWS = {"side_by_side": PANELS, "dense": ("dense",), "sparse": ("sparse",), "diff": ("diff",)}
SIZES = {"side_by_side": (1200, 480), "dense": (560, 520), "sparse": (600, 520), "diff": (560, 520)}
HTML_MAX_SIDE = 128  # cells per axis in the HTML page's per-layer maps (keeps the page a few MB)
T = TypeVar("T")


class ExportError(RuntimeError):
    """A static export could not be rendered (typically: no Chrome/Chromium for kaleido)."""


@dataclass
class GifReport:
    """What :func:`export_gif` wrote and how long it took."""

    path: Path
    frames: int
    seconds: float
    size: tuple[int, int]

    @property
    def seconds_per_frame(self) -> float:
        return self.seconds / max(1, self.frames)

    def __fspath__(self) -> str:
        return str(self.path)


# ------------------------------------------------------------------------------------------------ rendering
def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also from inside a running event loop (a Jupyter kernel): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def render_pngs(
    figures: Iterable[dict[str, Any]],
    size: tuple[int, int],
    scale: float = 1.0,
    progress: Callable[[int], None] | None = None,
) -> list[bytes]:
    """PNG bytes of every figure, rendered in one kaleido (Chromium) session."""
    import kaleido
    import plotly.graph_objects as go

    opts = {"format": "png", "width": size[0], "height": size[1], "scale": scale}

    async def render() -> list[bytes]:
        out = []
        async with kaleido.Kaleido(n=1, mathjax=False, plotlyjs=_plotly_js_path()) as k:
            for fig in figures:
                out.append(await k.calc_fig(go.Figure(fig), opts=opts))
                if progress is not None:
                    progress(len(out))
        return out

    try:
        return _run(render())
    except Exception as err:  # noqa: BLE001 - choreographer raises several types for a missing or broken browser
        if "browser" in type(err).__name__.lower() or "chrom" in str(err).lower():
            raise ExportError(
                f"kaleido could not start Chrome/Chromium to render the figures ({type(err).__name__}: {err}). "
                f"Install it (Debian/Ubuntu: apt-get install chromium) or point BROWSER_PATH at a Chrome binary."
            ) from err
        raise


def svg_to_png(svg: str, width: int, height: int, scale: float = 2.0) -> bytes:
    """PNG bytes of an SVG document of ``width`` x ``height`` px, rendered by kaleido's Chromium: the SVG is the one
    image of an empty plotly figure (the same browser session as every other export; no second renderer)."""
    import base64

    source = "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
    figure = {
        "data": [],
        "layout": {
            "width": width,
            "height": height,
            "margin": {"l": 0, "r": 0, "t": 0, "b": 0},
            "xaxis": {"visible": False, "range": [0, 1]},
            "yaxis": {"visible": False, "range": [0, 1]},
            "plot_bgcolor": "white",
            "images": [
                {
                    "source": source,
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0,
                    "y": 1,
                    "sizex": 1,
                    "sizey": 1,
                    "xanchor": "left",
                    "yanchor": "top",
                    "layer": "above",
                }
            ],  # fmt: skip
        },
    }
    return render_pngs([figure], (width, height), scale)[0]


def _rgb(png: bytes) -> np.ndarray:
    import imageio.v3 as iio

    frame = iio.imread(png, extension=".png")
    return frame[..., :3] if frame.ndim == 3 else np.stack([frame] * 3, axis=-1)  # drop alpha: no GIF transparency


def _check_view(view: str) -> tuple[str, ...]:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    return VIEWS[view]


def _check_head(res: Comparison, head: int | None) -> int:
    if head is None:
        return -1
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not -1 <= head < res.n_heads:
        raise ValueError(f"head must be None (mean of heads) or an int in [0, {res.n_heads - 1}], got {head!r}")
    return int(head)


def _check_layers(res: Comparison, layers: Iterable[int] | None) -> list[int]:
    chosen = list(range(res.n_layers)) if layers is None else [int(v) for v in layers]
    bad = [v for v in chosen if not 0 <= v < res.n_layers]
    if not chosen or bad:
        raise ValueError(f"layers must be a non-empty selection of 0..{res.n_layers - 1}, got {chosen!r}")
    return chosen


def frame_figure(
    res: Comparison, layer: int, head: int, view: str = "side_by_side", which: str = "sparse"
) -> dict[str, Any]:
    """The figure of one GIF frame: the widget's main view of ``layer`` (the masked pass ``which``: "sparse",
    post-hoc, or "adapted"), titled with the layer, head, mask, requested and achieved sparsity and that layer's
    perplexity delta."""
    panels = _check_view(view)
    mv = map_view(res, layer, head, which=which)
    fig = main_figure(mv, res.tokens, view_title(res, mv, per_layer=True), panels)
    fig["layout"]["title"]["font"] = {"size": 12}
    return fig


def export_gif(
    res: Comparison,
    path: str | Path,
    view: str = "side_by_side",
    head: int | None = None,
    layers: Iterable[int] | None = None,
    duration_ms: int = 700,
    size: tuple[int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    which: str = "sparse",
) -> GifReport:
    """Write an animated GIF stepping through ``layers`` (default: all), one frame per layer, looping forever.

    Args:
        view: "side_by_side" (dense | sparse | sparse − dense), "dense", "sparse" or "diff".
        head: a head index, or None for the mean of heads.
        duration_ms: how long each frame shows.
        size: (width, height) of a frame in pixels (default depends on ``view``).
        progress: called as ``progress(done, total)`` after each rendered frame.
        overwrite: replace ``path`` if it exists (otherwise FileExistsError, before anything is rendered).
        which: the masked pass shown: "sparse" (the mask forced on the model) or "adapted" (a comparison made with
            ``adapted=``: the adapted model under the mask; its panels read "adapted" and "adapted − dense").
    """
    path = writable(path, overwrite)
    chosen = _check_layers(res, layers)
    res.masked_pass(which)  # a missing adapted pass fails here, before anything is rendered
    head = _check_head(res, head)
    _check_view(view)
    size = size or SIZES[view]
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, (int, float)) or duration_ms <= 0:
        raise ValueError(f"duration_ms must be a positive number of milliseconds, got {duration_ms!r}")
    start = time.perf_counter()
    figures = (frame_figure(res, layer, head, view, which) for layer in chosen)
    pngs = render_pngs(figures, size, progress=None if progress is None else (lambda k: progress(k, len(chosen))))
    import imageio.v3 as iio

    frames = np.stack([_rgb(p) for p in pngs])
    write_atomically(path, iio.imwrite("<bytes>", frames, extension=".gif", duration=int(duration_ms), loop=0))
    return GifReport(path=path, frames=len(chosen), seconds=time.perf_counter() - start, size=(size[0], size[1]))


def gif_bytes(res: Comparison, **kwargs: Any) -> bytes:
    """The GIF of :func:`export_gif` as bytes (for a browser download)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "frames.gif"
        export_gif(res, out, **kwargs, overwrite=True)
        return out.read_bytes()


def export_png(
    res: Comparison,
    path: str | Path,
    layer: int = 0,
    head: int | None = None,
    view: str = "side_by_side",
    size: tuple[int, int] | None = None,
    scale: float = 2.0,
    overwrite: bool = False,
    which: str = "sparse",
) -> Path:
    """Write a PNG of one layer's view (``scale`` 2: sharp on high-density screens and slides; ``which``: the
    masked pass, "sparse" or "adapted"); an existing file is replaced only with ``overwrite``."""
    path = writable(path, overwrite)
    layer = _check_layers(res, [layer])[0]
    res.masked_pass(which)
    fig = frame_figure(res, layer, _check_head(res, head), view, which)
    write_atomically(path, render_pngs([fig], size or SIZES[view], scale=scale)[0])
    return path


# ---------------------------------------------------------------------------------------------------- HTML
# the span of widget.js that holds plotly.js, as js/build.mjs writes it (a classic script setting window.Plotly)
PLOTLY_BEGIN = "/* attnsparse-widget: plotly.js begins */"
PLOTLY_END = "/* attnsparse-widget: plotly.js ends */"


def plotly_js() -> str:
    """plotly.js for the exports, exactly the copy the widget draws with: the package ships it once, inside the
    widget's bundle (see js/build.mjs), and this cuts it out. Without a built bundle (a checkout that never ran
    ``npm run build``): plotly.py's own copy."""
    bundle = STATIC / "widget.js"
    if bundle.is_file():
        text = bundle.read_text(encoding="utf-8")
        begin, end = text.find(PLOTLY_BEGIN), text.find(PLOTLY_END)
        if 0 <= begin < end:
            return text[begin : end + len(PLOTLY_END)]
    import plotly

    return (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


def _plotly_js_path() -> Path:
    """:func:`plotly_js` as a local file for kaleido, which wants a path (and would fall back to a CDN without
    one): written once per content into the temporary directory."""
    text = plotly_js()
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"attnsparse-widget-plotly-{digest}.js"
    if not path.is_file():
        write_atomically(path, text.encode("utf-8"))
    return path


def _figure_json(fig: dict[str, Any]) -> str:
    import plotly.graph_objects as go
    import plotly.io as pio

    text = pio.to_json(go.Figure(fig))  # validated: numpy arrays travel as base64 typed arrays (bdata)
    return text.replace("</", "<\\/")  # nothing in the data can close the <script>


def layer_slider_figure(
    res: Comparison, head: int = -1, max_side: int = HTML_MAX_SIDE, which: str = "sparse"
) -> dict[str, Any]:
    """The main view with a slider over the layers (plotly frames): one figure for a static page."""
    frames = []
    for layer in range(res.n_layers):
        mv = map_view(res, layer, head, max_side=max_side, which=which)
        fig = main_figure(mv, res.tokens, view_title(res, mv, per_layer=True))
        frames.append({"name": str(layer), "data": fig["data"], "layout": {"title": fig["layout"]["title"]}})
    first = main_figure(map_view(res, 0, head, max_side=max_side, which=which), res.tokens, "")
    first["data"] = frames[0]["data"]
    first["layout"]["title"] = frames[0]["layout"]["title"]
    first["layout"]["margin"]["b"] = 110
    first["layout"]["sliders"] = [
        {
            "active": 0,
            "y": -0.08,
            "len": 0.9,
            "x": 0.05,
            "currentvalue": {"prefix": "layer "},
            "steps": [
                {
                    "label": f["name"],
                    "method": "animate",
                    "args": [
                        [f["name"]],
                        {"mode": "immediate", "frame": {"duration": 0, "redraw": True}, "transition": {"duration": 0}},
                    ],
                }
                for f in frames
            ],
        }
    ]
    first["frames"] = frames
    return first


def to_html(
    res: Comparison,
    path: str | Path | None = None,
    head: int | None = None,
    overwrite: bool = False,
    which: str = "sparse",
) -> str:
    """A self-contained, offline HTML page of the comparison: headline metrics, the caveat, the main view with a
    slider over the layers (the masked pass ``which``: "sparse" or "adapted"), the per-layer chart, the
    keep-pattern and the continuations. Returns the HTML and writes it to ``path`` if given (an existing file only
    with ``overwrite``)."""
    out = None if path is None else writable(path, overwrite)
    head = _check_head(res, head)
    res.masked_pass(which)
    m = res.metrics
    figures = {"main": layer_slider_figure(res, head, which=which)}
    if m.per_layer_delta_ppl is not None:
        figures["layers"] = layer_figure(m.per_layer_delta_ppl, m.cumulative_delta_ppl, m.mass_recall, res.n_layers)
    mv = map_view(res, 0, head)
    figures["mask"] = mask_figure(mv, f"{res.mask_label}: keep-pattern at layer 0")
    sizes = {"main": (1150, 560), "layers": (1150, 360), "mask": (560, 560)}

    def fmt(v: float | None, d: int = 3) -> str:
        return "n/a" if v is None else f"{v:.{d}f}"

    assert m.mass_recall is not None, "to_html needs the attention metrics (a comparison run to the end: compare())"
    rows = [
        ("model", res.model_name),
        ("tokens", str(len(res.tokens))),
        ("mask", res.mask_label),
        ("paper", res.mask.paper),
        (
            "sparsity",
            requested_achieved(m.requested_sparsity, m.achieved_sparsity),
        ),
        ("perplexity dense → sparse", f"{fmt(m.dense_ppl)} → {fmt(m.sparse_ppl)} (Δ {fmt(m.delta_ppl)})"),
        ("next-token KL(dense‖sparse)", fmt(m.next_token_kl, 4)),
        ("top-1 agreement", fmt(m.top1_agreement)),
        ("attention mass recall (mean over layers)", fmt(float(np.mean(m.mass_recall)))),
    ]
    if m.adapted_ppl is not None:
        recovered = "n/a" if m.recovered is None else f"{m.recovered:.0%}"
        rows.append(("perplexity adapted (trained under the mask)", f"{fmt(m.adapted_ppl)} (recovered {recovered})"))
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    conts = ""
    if res.continuations:
        conts = "<h2>Greedy continuations</h2>" + "".join(
            f"<p><b>{name}</b> <code>{html.escape(visible_token(text))}</code></p>"
            for name, text in res.continuations.items()
        )
    plots = []
    for key, fig in figures.items():
        width, height = sizes[key]
        fig["layout"].update(width=width, height=height)
        plots.append(
            f'<div id="{key}"></div><script>(function(){{const f={_figure_json(fig)};'
            f'Plotly.newPlot("{key}",f.data,f.layout,{{displaylogo:false}}).then(function(){{'
            f'if(f.frames){{Plotly.addFrames("{key}",f.frames);}}}});}})();</script>'
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>attnsparse: {html.escape(res.mask_label)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:20px auto;color:#222}}
.caveat{{background:#fff8e1;border-left:4px solid #f0ad4e;padding:6px 10px}}
th{{text-align:left;padding-right:16px;font-weight:600}} code{{white-space:pre-wrap}}</style>
<script>{plotly_js()}</script></head><body>
<h1>Dense vs sparse attention</h1>
<p class="caveat">{html.escape(CAVEAT)}</p>
<p>Text: <code>{html.escape(res.text)}</code></p>
<table>{table}</table>
<h2>Attention, layer by layer ({"mean of heads" if head < 0 else f"head {head}"})</h2>
{plots[0]}
{"".join(plots[1:])}
{conts}
<p><small>Made with attnsparse-widget. Probabilities float32 in the engine; the per-layer maps here are
block-mean pooled to at most {HTML_MAX_SIDE} cells a side.</small></p>
</body></html>
"""
    if out is not None:
        write_atomically(out, page.encode("utf-8"))
    return page


__all__ = [
    "ExportError",
    "GifReport",
    "export_gif",
    "export_png",
    "frame_figure",
    "gif_bytes",
    "render_pngs",
    "to_html",
]
