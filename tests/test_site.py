"""The course site (``make docs``, scripts/build_docs.py): built from the notebooks this test session executes
(the ``notebook_runs`` fixture runs each one once, whichever test asks first), then three pages opened from the
file system in Debian's Chromium: no errors, the figures and widget pictures present, and nothing requested off the
machine."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
LOCAL = ("file:", "data:", "blob:", "about:")
# a resource the page itself loads (not a link the reader may follow)
REMOTE_RESOURCE = re.compile(
    r"<(?:script|img|iframe|source)[^>]+src=[\"']?(?:https?:)?//"  # a script, picture or frame
    r"|<link[^>]+href=[\"']?(?:https?:)?//"  # a style sheet, font or icon
)


@pytest.fixture(scope="module")
def executed(notebook_runs: Any) -> list[Path]:
    """Every notebook's executed copy, from this session's runs."""
    return notebook_runs.run_all()


@pytest.fixture(scope="module")
def site(executed: list[Path]) -> Path:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_docs.py")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return SITE


def test_site_has_every_page_and_loads_nothing_remote(site: Path) -> None:
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    course = {f"notebooks/{p.stem}.html" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert {"index.html", "masks.html", "benchmarks.html", "architecture.html", "api.html"} | course <= pages
    for page in pages:
        text = (site / page).read_text(encoding="utf-8")
        assert not REMOTE_RESOURCE.search(text), f"{page} loads {REMOTE_RESOURCE.search(text).group(0)!r}"
        assert "widget-state+json" not in text  # the saved widget state would pull the widget manager from a CDN
    api = (site / "api.html").read_text(encoding="utf-8")
    assert "compare" in api and "AttentionDiffWidget" in api and "sweep" in api


def test_three_pages_in_a_real_browser(site: Path) -> None:
    from e2e.harness import chromium

    checks = {
        "index.html": "() => document.querySelectorAll('img[src*=\"images/\"]').length >= 3"
        " && [...document.images].every((i) => i.complete && i.naturalWidth > 0)",
        "notebooks/05_degradation_curves.html": "() => document.querySelectorAll('.asw-figure .main-svg').length >= 4"
        " && document.querySelectorAll('.asw-widget-picture img').length >= 1"
        " && [...document.images].every((i) => i.complete && i.naturalWidth > 0)",
        "notebooks/02_mask_zoo.html": "() => document.querySelectorAll('.asw-figure .main-svg').length >= 3"
        " && document.querySelectorAll('.jp-OutputArea-output').length >= 10",
    }
    requests: list[str] = []
    errors: list[str] = []
    with chromium() as browser:
        for page_name, ready in checks.items():
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e, n=page_name: errors.append(f"{n}: {e}"))
            page.on("console", lambda m, n=page_name: errors.append(f"{n}: {m.text}") if m.type == "error" else None)
            page.goto((site / page_name).as_uri(), wait_until="load")
            page.wait_for_function(ready, timeout=60_000)
            page.close()
    off_machine = sorted({u for u in requests if not u.startswith(LOCAL)})
    assert not off_machine, f"the site fetched from off the machine: {off_machine}"
    assert not errors, errors


# ------------------------------------------------------------------------------------- every notebook figure
MIN_SHARE = 0.3  # the data must span at least this share of its y axis (a runaway axis squeezes it into a strip)


def notebook_figures(executed: list[Path]) -> list[tuple[str, dict]]:
    """Every plotly figure the executed notebooks show, named ``NOTEBOOK[cell]``."""
    import nbformat

    figures = []
    for path in executed:
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            for out in cell.get("outputs", []):
                if "application/vnd.plotly.v1+json" in out.get("data", {}):
                    figures.append((f"{path.stem}[{i}]", out["data"]["application/vnd.plotly.v1+json"]))
    return figures


def decoded(values: Any) -> Any:
    """A trace's array as numbers: plotly.py stores a numpy array as ``{"dtype": ..., "bdata": base64}``."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).ravel()
    return values


def data_extent(figure: Any, axis: str, log: bool) -> tuple[float, float] | None:
    """The y extent of the scatter and bar traces of ``figure`` (a ``go.Figure``) drawn on y axis ``axis`` ("y",
    "y2", ...), error bars and a bar's base (0) included, in the axis's own units (log10 on a log axis)."""
    values: list[float] = []
    for trace in figure.data:
        if trace.type not in ("scatter", "bar") or (trace.yaxis or "y") != axis or trace.y is None:
            continue
        ys = [float(y) for y in decoded(trace.y) if isinstance(y, (int, float, np.number)) and y == y]
        err = trace.error_y
        plus = decoded(err.array)
        if plus is not None and err.visible is not False and len(plus) == len(ys):
            minus = decoded(err.arrayminus) if err.arrayminus is not None else plus
            ys += [y + float(p) for y, p in zip(ys, plus, strict=True)]
            ys += [y - float(m) for y, m in zip(ys[: len(minus)], minus, strict=True)]
        if trace.type == "bar":
            ys.append(0.0)
        values += ys
    if log:
        values = [math.log10(v) for v in values if v > 0]
    return (min(values), max(values)) if values else None


def test_every_notebook_figure_fills_its_axes(executed: list[Path]) -> None:
    """Every figure of every notebook rendered by kaleido (PNGs in test-artifacts/figures/, to look at): on each
    numeric y axis, the data spans at least MIN_SHARE of the axis range plotly chose."""
    import asyncio

    import kaleido
    import plotly.graph_objects as go

    from attnsparse_widget.export import _plotly_js_path

    figures = notebook_figures(executed)
    assert len(figures) >= 15, [name for name, _ in figures]
    out_dir = ROOT / "test-artifacts" / "figures"
    out_dir.mkdir(parents=True, exist_ok=True)

    async def render() -> list[dict]:
        layouts = []
        async with kaleido.Kaleido(n=1, mathjax=False, plotlyjs=_plotly_js_path()) as k:
            for name, fig in figures:
                figure = go.Figure(fig)
                (out_dir / f"{name}.png").write_bytes(await k.calc_fig(figure, opts={"format": "png"}))
                layouts.append(json.loads(await k.calc_fig(figure, opts={"format": "json"}))["layout"])
        return layouts

    squeezed = []
    for (name, fig), layout in zip(figures, asyncio.run(render()), strict=True):
        figure = go.Figure(fig)
        for key, axis in layout.items():
            if not re.fullmatch(r"yaxis\d*", key) or axis.get("type") not in ("linear", "log"):
                continue
            extent = data_extent(figure, "y" + key[5:], axis["type"] == "log")
            lo, hi = axis["range"]
            if extent is None or extent[1] - extent[0] <= 0:
                continue
            share = (extent[1] - extent[0]) / (hi - lo)
            if share < MIN_SHARE:
                squeezed.append(f"{name} {key}: the data spans {share:.0%} of the axis")
    assert not squeezed, squeezed


def test_every_widget_has_its_picture(site: Path, executed: list[Path]) -> None:
    """No rendered page shows a half-finished widget: each of our widgets in an executed notebook has the picture of
    its main view (taken by the execution's last cell), and the site's page shows it in the widget's place."""
    import nbformat

    pictures = 0
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        states = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
        ours = [
            out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
            for cell in nb.cells
            for out in cell.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {})
            and states.get(out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"], {}).get("model_name")
            == "AnyModel"
        ]
        for model_id in ours:
            status = states[model_id]["state"].get("status")  # an error here says why the widget had no result
            picture = path.with_suffix(".pictures") / model_id
            # the comparison widget's main view (PNG), or the cost explorer's own picture (SVG)
            assert picture.with_suffix(".png").is_file() or picture.with_suffix(".svg").is_file(), (
                path.name,
                model_id,
                status,
            )
        page = (site / "notebooks" / f"{path.stem}.html").read_text(encoding="utf-8")
        assert page.count('class="asw-widget-picture"') == len(ours), path.name
        pictures += len(ours)
    assert pictures >= 5
