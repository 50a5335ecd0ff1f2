"""The Adapt control end to end, in JupyterLab under Debian Chromium: steps typed into the control, Adapt clicked,
progress shown, then the third pass (the adapted model under the mask) in the main view, the output shift and the
head gallery; and Cancel stops a long training. Screenshots: test-artifacts/lab-adapt-*.png."""

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
from .test_browser import TEXT

pytestmark = WIDGET_IN_A_BROWSER

SHOW = f"""import attnsparse_widget as aw
w = aw.show(None, {TEXT!r}, mask="sliding_window", sparsity=0.8, per_layer=False)
w"""
STATE = """import json
w.wait(600)
m = w.metrics
print("KERNEL", json.dumps({"state": w.adaptation["state"], "steps": w.adaptation.get("steps"),
      "dense_ppl": m["dense_ppl"], "sparse_ppl": m["sparse_ppl"], "adapted_ppl": m["adapted_ppl"],
      "recovered": m["recovered"], "continuations": sorted(m["continuations"]), "compare_with": w.compare_with}))"""
ADAPT_STEPS = 8  # a few seconds on two cores: this checks the plumbing, not what training achieves


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab-adapt")
    write_notebook(root / "adapt.ipynb", [SHOW, STATE])
    with jupyterlab(root) as url, chromium() as browser:
        page, errors = open_notebook(browser, f"{url}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/adapt.ipynb")
        yield page
        assert not errors, errors
        page.close()


def kernel_state(page) -> dict:
    run_cell(page, 1)
    out = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea-output")
    out.filter(has_text="KERNEL").last.wait_for(timeout=600_000)
    return json.loads(re.findall(r"KERNEL (\{.*\})", out.last.inner_text())[-1])


def adapt_state(page) -> str:
    return page.locator(".asw-adapt-info").get_attribute("data-state")


def test_adapt_cancel_then_adapt_and_show_the_adapted_pass(page):
    ARTIFACTS.mkdir(exist_ok=True)
    run_cell(page, 0)
    page.locator(".asw-main.js-plotly-plot").wait_for(timeout=300_000)
    settled(page)
    assert page.locator(".asw-compare-with").is_disabled()  # nothing adapted yet
    page.wait_for_function("() => /≈/.test(document.querySelector('.asw-adapt-estimate')?.textContent ?? '')")

    # a long training, cancelled from the UI once it is under way
    steps = page.locator(".asw-adapt-steps")
    steps.fill("400")
    steps.press("Enter")
    page.locator(".asw-adapt").click()
    page.wait_for_function(
        "() => /step [1-9]/.test(document.querySelector('.asw-adapt-info')?.textContent ?? '')", timeout=300_000
    )
    page.locator(".asw-adapt-info").screenshot(path=str(ARTIFACTS / "lab-adapt-progress.png"))
    page.locator(".asw-adapt-cancel").click()
    page.wait_for_function(
        "() => document.querySelector('.asw-adapt-info')?.dataset.state === 'cancelled'", timeout=120_000
    )
    assert kernel_state(page)["adapted_ppl"] is None

    # a short one, run to the end: the comparison comes back with its third pass
    request = int(page.locator(".asw-root").get_attribute("data-request"))
    steps.fill(str(ADAPT_STEPS))
    steps.press("Enter")
    page.locator(".asw-adapt").click()
    page.wait_for_function(
        "() => document.querySelector('.asw-adapt-info')?.dataset.state === 'ready'", timeout=600_000
    )
    settled(page, request)
    state = kernel_state(page)
    assert state["state"] == "ready" and state["steps"] == ADAPT_STEPS
    assert state["continuations"] == ["adapted", "dense", "sparse"]
    assert state["adapted_ppl"] > 0 and state["recovered"] is not None
    assert f"{ADAPT_STEPS} steps" in page.locator(".asw-adapt-info").inner_text()

    # the main view: dense | adapted | adapted − dense
    request = int(page.locator(".asw-root").get_attribute("data-request"))
    page.locator(".asw-compare-with").select_option("adapted")
    settled(page, request)
    layout = page.evaluate(
        "() => { const l = document.querySelector('.asw-main').layout;"
        " return [l.title.text, l.annotations.map((a) => a.text)]; }"
    )
    assert "adapted model" in layout[0] and "adapted − dense" in layout[1], layout
    page.locator(".asw-root").screenshot(path=str(ARTIFACTS / "lab-adapt-main.png"))

    # the output shift: three perplexities, the recovered fraction, three continuations
    page.locator(".asw-tab[data-tab='output']").click()
    shown = page.locator("[data-metric='perplexity adapted']")
    shown.wait_for(timeout=60_000)
    assert float(shown.inner_text()) == pytest.approx(state["adapted_ppl"], abs=1e-3)
    assert page.locator("[data-metric='recovered']").inner_text().endswith("%")
    assert page.locator(".asw-cont[data-regime='adapted']").count() == 1
    page.locator(".asw-root").screenshot(path=str(ARTIFACTS / "lab-adapt-output.png"))

    # the head gallery puts dense next to adapted
    page.set_viewport_size({"width": 1500, "height": 2400})
    page.locator(".asw-tab[data-tab='gallery']").click()
    page.wait_for_function("() => document.querySelector('.asw-gallery')?.dataset.rendered")
    assert "adapted" in page.locator(".asw-gallery .g-x2title").text_content()
    page.locator(".asw-root").screenshot(path=str(ARTIFACTS / "lab-adapt-gallery.png"))
