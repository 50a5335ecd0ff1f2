"""End to end in a real browser: JupyterLab (and Notebook 7) on a loopback port, Debian Chromium driven by
Playwright, the widget on the embedded default model, controlled through its UI.

Screenshots go to test-artifacts/ (main view, gallery, output shift) for a person to look at.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from .harness import (
    ARTIFACTS,
    WIDGET_IN_A_BROWSER,
    chromium,
    jupyterlab,
    open_notebook,
    run_cell,
    settled,
    write_notebook,
)

TEXT = (
    "The lighthouse keeper wrote in his log every evening. The storm came from the west, and the ships "
    "stayed in the harbour until the wind turned."
)
pytestmark = WIDGET_IN_A_BROWSER

SHOW = f"""import attnsparse_widget as aw
w = aw.show(None, {TEXT!r}, mask="sink_window", sparsity=0.5)
w"""
STATE = """import json
w.wait(300)
print("KERNEL", json.dumps({"achieved": w.metrics["achieved_sparsity"], "sparse_ppl": w.metrics["sparse_ppl"],
      "mask": w.info["mask"], "sparsity": w.sparsity, "request": w.status["request"],
      "per_layer": len(w.metrics["per_layer_delta_ppl"] or [])}))"""


SEVERAL = [
    f"import attnsparse_widget as aw\na = aw.show(None, {TEXT!r}, mask='sink_window', sparsity=0.5)\na",
    "b = aw.show(None, 'A second widget on another text, with its own mask.', mask='topk', sparsity=0.3)\nb",
    "a  # the first widget again: a second view of the same model",
    """import json\na.wait(300); b.wait(300)
print("KERNEL", json.dumps({"a": [a.mask, a.sparsity, a.status["request"]],
                            "b": [b.mask, b.sparsity, b.status["request"]]}))""",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    write_notebook(root / "widget.ipynb", [SHOW, STATE])
    write_notebook(root / "several.ipynb", SEVERAL)
    with jupyterlab(root) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def kernel_state(page) -> dict:
    run_cell(page, 1)
    out = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea-output")
    out.filter(has_text="KERNEL").wait_for(timeout=300_000)
    return json.loads(re.search(r"KERNEL (\{.*\})", out.inner_text()).group(1))


def sparse_checksum(page) -> float:
    return page.evaluate(
        "() => { const z = document.querySelector('.asw-main').data[1].z; let s = 0;"
        " for (const row of z) for (const v of row) if (Number.isFinite(v)) s += v * (1 + s % 7); return s; }"
    )


def achieved_label(page) -> float:
    return float(page.locator(".asw-sparsity-label").get_attribute("data-achieved"))


TIMINGS = """() => {
  const marks = performance.getEntriesByType("mark");
  const last = (pred) => marks.filter(pred).slice(-1)[0];
  const intent = last((m) => m.name === "attnsparse:intent:sparsity");
  const arrived = last((m) => m.name === "attnsparse:view-arrived");
  const painted = last(
    (m) => m.name.startsWith("attnsparse:main:end:") && arrived && m.startTime >= arrived.startTime
  );
  const start = arrived &&
    marks.filter((m) => m.name.startsWith("attnsparse:main:start:") && m.startTime >= arrived.startTime)[0];
  return { intent_to_painted_ms: painted.startTime - intent.startTime,
           arrival_to_painted_ms: painted.startTime - arrived.startTime,
           plotly_react_ms: painted.startTime - start.startTime };
}"""


@pytest.mark.parametrize("app", ["lab", "notebook7"])
def test_widget_in_a_real_browser(server, browser, app):
    ARTIFACTS.mkdir(exist_ok=True)
    url = (
        f"{server}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/widget.ipynb"
        if app == "lab"
        else f"{server}/notebooks/widget.ipynb"
    )
    page, errors = open_notebook(browser, url)
    run_cell(page, 0)
    page.locator(".asw-main.js-plotly-plot").wait_for(timeout=300_000)
    settled(page)
    first = kernel_state(page)
    assert first["mask"] == "sink_window" and first["per_layer"] == 30
    assert achieved_label(page) == pytest.approx(first["achieved"], abs=1e-9)
    before = sparse_checksum(page)
    page.locator(".asw-root").screenshot(path=str(ARTIFACTS / f"{app}-main.png"))

    # move the sparsity slider through the UI: keyboard steps, each one a change event
    request = int(page.locator(".asw-root").get_attribute("data-request"))
    page.locator(".asw-sparsity").focus()
    for _ in range(25):
        page.keyboard.press("ArrowRight")
    settled(page, request)
    moved = kernel_state(page)
    assert moved["sparsity"] == pytest.approx(0.75)
    assert achieved_label(page) == pytest.approx(moved["achieved"], abs=1e-9)
    assert moved["achieved"] > first["achieved"] + 0.1
    assert sparse_checksum(page) != before
    timings = page.evaluate(TIMINGS)  # slider released -> heatmaps repainted, measured in the page
    assert 0 <= timings["arrival_to_painted_ms"] <= timings["intent_to_painted_ms"]
    (ARTIFACTS / f"{app}-timings.json").write_text(json.dumps(timings, indent=1))
    ppl_shown = page.locator("[data-metric='perplexity sparse']")
    page.locator(".asw-tab[data-tab='output']").click()
    page.wait_for_function("() => document.querySelector('.asw-layers')?.dataset.rendered")
    assert float(ppl_shown.inner_text()) == pytest.approx(moved["sparse_ppl"], abs=1e-3)
    page.locator(".asw-root").screenshot(path=str(ARTIFACTS / f"{app}-output.png"))

    # switch the mask type through the dropdown
    page.locator(".asw-tab[data-tab='main']").click()
    request = int(page.locator(".asw-root").get_attribute("data-request"))
    page.locator(".asw-mask").select_option("topk")
    settled(page, request)
    switched = kernel_state(page)
    assert switched["mask"] == "topk"
    assert achieved_label(page) == pytest.approx(switched["achieved"], abs=1e-9)
    assert "topk" in page.locator(".asw-main .gtitle").text_content()

    # bad input: the error shows inside the widget, which stays usable
    text_box = page.locator(".asw-text")
    text_box.fill("   ")
    page.locator(".asw-run").click()
    page.locator(".asw-error").filter(has_text="empty").wait_for(timeout=60_000)
    request = int(page.locator(".asw-root").get_attribute("data-request"))
    text_box.fill(TEXT)
    page.locator(".asw-run").click()
    settled(page, request)
    assert page.locator(".asw-error").is_hidden()

    if app == "lab":  # the Export buttons hand the files to the browser as downloads
        with page.expect_download(timeout=300_000) as gif:
            page.locator(".asw-export-gif").click()
        gif_path = ARTIFACTS / "lab-export.gif"
        gif.value.save_as(gif_path)
        from PIL import Image

        with Image.open(gif_path) as frames:
            assert frames.n_frames == 30 and frames.info["loop"] == 0  # one frame per layer, looping
        with page.expect_download(timeout=60_000) as png:
            page.locator(".asw-export-png").click()
        png.value.save_as(ARTIFACTS / "lab-export.png")
        assert (ARTIFACTS / "lab-export.png").read_bytes()[:4] == b"\x89PNG"

    page.set_viewport_size({"width": 1500, "height": 2400})  # the whole gallery on the screenshot
    page.locator(".asw-tab[data-tab='gallery']").click()
    page.wait_for_function("() => document.querySelector('.asw-gallery')?.dataset.rendered")
    page.locator(".asw-root").screenshot(path=str(ARTIFACTS / f"{app}-gallery.png"))
    assert not errors, errors
    page.close()


def roots_state(page) -> list[dict]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('.asw-root')).map((r) => ({
        busy: r.dataset.busy, request: Number(r.dataset.request), mask: r.querySelector('.asw-mask').value,
        sparsity: r.querySelector('.asw-sparsity').value,
        title: r.querySelector('.asw-main .gtitle')?.textContent ?? '' }))""")


def test_several_widgets_and_a_second_view(server, browser):
    """Two widgets in one notebook stay independent; displaying one again gives a second live view of it."""
    url = f"{server}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/several.ipynb"
    page, errors = open_notebook(browser, url)
    for i in range(3):
        run_cell(page, i)
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('.asw-root'); return r.length === 3 && Array.from(r).every("
        "(x) => x.dataset.busy === '0' && x.querySelector('.asw-main')?.dataset.rendered); }",
        timeout=300_000,
    )
    a1, b, a2 = roots_state(page)
    assert a1["mask"] == a2["mask"] == "sink_window" and b["mask"] == "topk"
    assert a1["title"] == a2["title"] and "topk" in b["title"]

    # change b through its own slider: a's two views do not move
    slider = page.locator(".asw-root").nth(1).locator(".asw-sparsity")
    slider.focus()
    for _ in range(20):
        page.keyboard.press("ArrowRight")
    page.wait_for_function(
        "n => { const r = document.querySelectorAll('.asw-root')[1]; "
        "return r.dataset.busy === '0' && Number(r.dataset.request) > n; }",
        arg=b["request"],
        timeout=300_000,
    )
    # switch a's mask from its second view: both views of a follow, b stays
    page.locator(".asw-root").nth(2).locator(".asw-mask").select_option("sliding_window")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.asw-root')).filter((r, i) => i !== 1).every((r) =>"
        " r.dataset.busy === '0' && r.querySelector('.asw-main .gtitle')?.textContent.includes('sliding_window'))",
        timeout=300_000,
    )
    a1, b2, a2 = roots_state(page)
    assert a1["mask"] == a2["mask"] == "sliding_window" and a1["title"] == a2["title"]
    assert b2["mask"] == "topk" and b2["sparsity"] == "50" and "topk" in b2["title"]
    run_cell(page, 3)
    out = page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-OutputArea-output")
    out.filter(has_text="KERNEL").wait_for(timeout=300_000)
    kernel = json.loads(re.search(r"KERNEL (\{.*\})", out.inner_text()).group(1))
    assert kernel["a"][:2] == ["sliding_window", 0.5] and kernel["b"][:2] == ["topk", 0.5]
    page.locator(".jp-Notebook").screenshot(path=str(ARTIFACTS / "lab-several.png"))
    assert not errors, errors
    page.close()
