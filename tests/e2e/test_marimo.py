"""The marimo example (examples/marimo_app.py, the README's marimo recipe) in marimo's app mode, in Debian's
Chromium: the widget renders inside marimo's shadow DOM, the sparsity slider repaints it, and nothing is fetched
off the machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .harness import LOCAL, chromium, free_port, open_app, serving, slider_step, stop

pytestmark = pytest.mark.browser

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "marimo_app.py"


def test_marimo_example_is_the_readme_recipe() -> None:
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "examples/marimo_app.py" in readme
    assert "mo.ui.anywidget(aw.show(" in EXAMPLE.read_text(encoding="utf-8")


def test_marimo_app_in_a_real_browser(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = tmp_path / "marimo.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "marimo", "run", str(EXAMPLE), "--headless", "--host=127.0.0.1", f"--port={port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            serving(url, log_path)
            requests: list[str] = []
            errors: list[str] = []
            with chromium() as browser:
                page = open_app(browser.new_context(viewport={"width": 1400, "height": 1000}), url, requests, errors)
                assert page.locator(".asw-main").get_attribute("data-rendered")
                before = page.locator(".asw-sparsity").input_value()
                assert slider_step(page) != before  # the slider reruns the engine and the heatmaps repaint
                assert page.locator(".asw-main").get_attribute("data-rendered")
                # marimo's CSS reset strips native controls; ours keep a border so the text box reads as one
                border = page.locator(".asw-text").evaluate("e => getComputedStyle(e).borderTopWidth")
                assert border == "1px"
            off_machine = sorted({u for u in requests if not u.startswith(LOCAL)})
            assert not off_machine, f"the marimo app fetched from off the machine: {off_machine}"
            assert not errors, errors
        finally:
            stop(server, 30)
