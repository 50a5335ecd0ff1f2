"""The view first, in a real browser at full context: the default model on 8192 tokens in JupyterLab and Chromium.
The main view is painted while the headline metrics still read '…'; they follow as a stage of their own.

Screenshots go to test-artifacts/ (view-first-view.png: the main view; view-first-coming.png: the metrics' tab
while they are coming; view-first-metrics.png: once they came) for a person to look at.
"""

from __future__ import annotations

import re
import time
import uuid

from .harness import ARTIFACTS, WIDGET_IN_A_BROWSER, chromium, jupyterlab, open_notebook, run_cell, write_notebook

pytestmark = WIDGET_IN_A_BROWSER
TOKENS = 8192
SHOW = f"""import attnsparse_widget as aw
model, tok = aw.load_model()
w = aw.show((model, tok), aw.long_text(tok, {TOKENS}), mask="sink_window", sparsity=0.9, per_layer=False)
w"""


def test_the_main_view_arrives_before_the_metrics_at_full_context(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    write_notebook(tmp_path / "long.ipynb", [SHOW])
    with jupyterlab(tmp_path) as url, chromium() as browser:
        page, errors = open_notebook(browser, f"{url}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/long.ipynb")
        run_cell(page, 0)
        page.locator(".asw-main.js-plotly-plot").wait_for(timeout=600_000)
        page.wait_for_function("() => document.querySelector('.asw-main')?.dataset.rendered", timeout=600_000)
        viewed = time.monotonic()
        achieved = page.locator(".asw-sparsity-label").get_attribute("data-achieved")
        page.locator(".asw-root").screenshot(path=str(ARTIFACTS / "view-first-view.png"))
        page.locator(".asw-tab[data-tab='output']").click()  # the headline metrics' tab
        shown = page.locator("[data-metric='perplexity sparse']")
        at_view = shown.inner_text()
        page.locator(".asw-root").screenshot(path=str(ARTIFACTS / "view-first-coming.png"))
        assert at_view == "…", f"the metrics came with the view ({at_view!r})"
        assert achieved and abs(float(achieved) - 0.9) < 0.02  # the achieved sparsity comes with the view
        page.wait_for_function(
            "() => /^[0-9.]+$/.test(document.querySelector(\"[data-metric='perplexity sparse']\")?.textContent ?? '')",
            timeout=600_000,
            polling=200,
        )
        later = time.monotonic() - viewed
        page.locator(".asw-root").screenshot(path=str(ARTIFACTS / "view-first-metrics.png"))
        assert re.fullmatch(r"[0-9.]+", shown.inner_text()) and float(shown.inner_text()) > 1
        (ARTIFACTS / "view-first-timings.txt").write_text(f"metrics {later:.1f} s after the painted view\n")
        assert not errors, errors
        page.close()
