"""Exports: the GIF of the default model (one frame per layer), a PNG, and a self-contained HTML page opened in a
real (offline) Chromium."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image

import attnsparse_widget as aw
from attnsparse_widget.export import frame_figure

pytestmark = pytest.mark.model

TEXT = "The keeper lit the lamp at dusk, and the ships found the harbour through the fog."
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def res(default_model):
    return aw.compare(default_model, TEXT, mask="sink_window", sparsity=0.5, continuation_tokens=5)


def test_gif_of_every_layer(res, tmp_path):
    report = res.export_gif(tmp_path / "layers.gif", duration_ms=250)
    assert report.frames == res.n_layers == 30 and report.seconds_per_frame > 0
    with Image.open(report.path) as gif:
        assert gif.n_frames == 30 and gif.info["loop"] == 0 and gif.info["duration"] == 250
        assert gif.size == (1200, 480)
        firsts = []
        for k in (0, 29):
            gif.seek(k)
            frame = np.asarray(gif.convert("RGB"))
            assert frame.std() > 10  # a picture, not a blank frame
            firsts.append(frame)
        assert not np.array_equal(*firsts)  # the layers differ


def test_gif_options_and_bad_input(res, tmp_path):
    report = res.export_gif(tmp_path / "h2.gif", view="sparse", head=2, layers=range(0, 30, 10), size=(400, 380))
    with Image.open(report.path) as gif:
        assert gif.n_frames == 3 and gif.size == (400, 380)
    for kwargs, pattern in [
        (dict(view="both"), "view must be one of"),
        (dict(head=9), "head must be"),
        (dict(layers=[30]), "layers must be"),
        (dict(duration_ms=0), "duration_ms"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            res.export_gif(tmp_path / "bad.gif", **kwargs)


def test_frames_are_the_widgets_figure_titled_with_the_layer(res):
    fig = frame_figure(res, 7, -1)
    title = fig["layout"]["title"]["text"]
    assert title.startswith("L7 mean of heads · sink_window(") and "achieved" in title
    assert f"{res.metrics.per_layer_delta_ppl[7]:+.3f}" in title
    assert [d["name"] for d in fig["data"]] == ["dense", "sparse", "sparse − dense"]


def test_png(res, tmp_path):
    path = res.export_png(tmp_path / "l12.png", layer=12, head=4)
    with Image.open(path) as png:
        assert png.size == (2400, 960)  # scale 2


def test_html_is_self_contained_and_renders_offline(res, tmp_path):
    page_html = res.to_html(tmp_path / "page.html")
    assert not re.search(r"<script[^>]+src=", page_html)  # nothing to fetch: plotly.js is inlined
    assert page_html.count('"bdata"') > 30
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.route(
            "**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_()
        )  # offline: any network request fails
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((tmp_path / "page.html").as_uri())
        page.wait_for_function("() => document.querySelector('#main')?.data?.length === 3", timeout=60_000)
        page.evaluate("() => Plotly.animate('main', ['29'], {mode: 'immediate', frame: {duration: 0}})")
        page.wait_for_function("() => document.querySelector('#main').layout.title.text.startsWith('L29')")
        assert page.evaluate("() => document.querySelector('#layers').data[0].y.length") == 30
        browser.close()
    assert not errors, errors


def test_gif_frames_show_hostile_tokens_literally(default_model):
    """What kaleido renders for a frame (the same figure, as SVG): the tokens of a text full of markup appear as
    text in the axis labels, and no element comes from the text."""
    import asyncio
    import xml.etree.ElementTree as ET

    import kaleido
    import plotly.graph_objects as go

    from attnsparse_widget.export import _plotly_js_path

    hostile = "<img src=x onerror=alert(1)> </div> \"q\" 'a' b\\c & <b>bold</b>"
    res = aw.compare(default_model, hostile, mask="sink_window", sparsity=0.5, per_layer=False, continuation_tokens=0)
    fig = go.Figure(frame_figure(res, 3, -1))

    async def render() -> bytes:
        async with kaleido.Kaleido(n=1, mathjax=False, plotlyjs=_plotly_js_path()) as k:
            return await k.calc_fig(fig, opts={"format": "svg", "width": 1200, "height": 480})

    svg = ET.fromstring(asyncio.run(render()))
    ns = "{http://www.w3.org/2000/svg}"
    ticks = [
        "".join(t.itertext())
        for g in svg.iter(f"{ns}g")
        if "ytick" in (g.get("class") or "")
        for t in g.iter(f"{ns}text")
    ]
    assert ticks == [t.replace("\n", "↵") or "∅" for t in res.tokens]
    images = [e for e in svg.iter(f"{ns}image")]  # the heatmaps themselves, drawn as inline rasters
    assert len(images) == 3 and all(
        (e.get("href") or e.get("{http://www.w3.org/1999/xlink}href") or "").startswith("data:image/") for e in images
    )
    assert not [e for e in svg.iter() if not e.tag.startswith(ns) or e.tag == f"{ns}foreignObject"]


def test_exports_draw_with_the_widgets_own_plotly_js():
    """The package ships plotly.js once, inside widget.js: the exports cut that very copy out (a classic script
    that sets window.Plotly), so a GIF or HTML page draws exactly as the widget does."""
    from attnsparse_widget.export import PLOTLY_BEGIN, PLOTLY_END, STATIC, _plotly_js_path, plotly_js

    bundle = (STATIC / "widget.js").read_text(encoding="utf-8")
    script = plotly_js()
    assert script.startswith(PLOTLY_BEGIN) and script.endswith(PLOTLY_END) and script in bundle
    assert "plotly.js (cartesian - minified)" in script and "window.Plotly = Plotly" in script
    assert "\nexport" not in script and "export{" not in script  # no ES module syntax: loaded as a classic script
    assert sorted(p.name for p in STATIC.glob("*.js")) == ["widget.js"]
    assert _plotly_js_path().read_text(encoding="utf-8") == script
