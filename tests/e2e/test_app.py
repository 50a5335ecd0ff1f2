"""``attnsparse app`` in Debian's Chromium: the standalone web app (Voila) renders the widget, repaints on a slider
move, gives each browser session its own kernel, survives a reload, opens the cost explorer in its Cost tab, fetches
nothing off the machine, and leaves no process behind when stopped; ``attnsparse app --explore`` serves the cost
explorer."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from attnsparse_widget.app import app_notebook, exposure_warning, is_loopback, voila_command
from attnsparse_widget.cli import main

from .harness import (
    ARTIFACTS,
    LOCAL,
    VOILA_STATIC,
    chromium,
    explorer_repaint_ms,
    free_port,
    keep_evidence,
    open_app,
    painted,
    serving,
    slider_step,
    watched_page,
)

pytestmark = pytest.mark.browser

TEXT = "The lighthouse keeper wrote in his log every evening. The storm came from the west."


@contextlib.contextmanager
def app_running(tmp_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``attnsparse app ARGS`` on a free port, answering: yields its URL and process; stopped (SIGTERM) after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 - closed below
    app = subprocess.Popen(
        [sys.executable, "-m", "attnsparse_widget.cli", "app", f"--port={port}", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        serving(url + VOILA_STATIC, tmp_path / "app.log")
        yield url, app
    finally:
        app.send_signal(signal.SIGTERM)
        try:
            app.wait(30)
        finally:
            log.close()


def test_app_in_a_real_browser(tmp_path: Path) -> None:
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    started: set[int] = set()
    # the per-layer curve off: every slider move here would replay the model once per layer before it settles
    with app_running(tmp_path, f"--text={text_file}", "--no-per-layer") as (url, app):
        requests: list[str] = []
        errors: list[str] = []
        with chromium() as browser:
            first = browser.new_context(viewport={"width": 1400, "height": 1000})
            a = open_app(first, url, requests, errors)
            assert a.locator(".asw-text").input_value() == TEXT  # --text FILE
            value_a = slider_step(a)  # the slider repaints the heatmaps
            assert a.locator(".asw-main").get_attribute("data-rendered")

            second = browser.new_context(
                viewport={"width": 1400, "height": 1000}
            )  # another browser session: a kernel and a widget of its own
            b = open_app(second, url, requests, errors)
            kernels = [
                p for p in psutil.Process(app.pid).children(recursive=True) if "ipykernel" in " ".join(p.cmdline())
            ]
            assert len(kernels) >= 2, "each page has its own kernel"
            slider_step(b)
            slider_step(b)
            assert a.locator(".asw-sparsity").input_value() == value_a  # a's widget did not follow b's
            started = {p.pid for p in psutil.Process(app.pid).children(recursive=True)}

            a.reload(wait_until="domcontentloaded")  # a reload: a fresh page and widget, working again
            painted(a, "app-reload-not-painted", errors)
            slider_step(a)
            # the Cost tab: the cost explorer on this comparison, inside the app's widget (anywidget's composition)
            a.locator(".asw-tab[data-tab='cost']").click()
            a.locator(".asw-explore:not([disabled])").click()
            a.locator(".asw-cost .asx-root[data-rendered] .asx-tensor").first.wait_for(timeout=120_000)
            started |= {p.pid for p in psutil.Process(app.pid).children(recursive=True)}
        off_machine = sorted({u for u in requests if not u.startswith(LOCAL)})
        assert not off_machine, f"the app fetched from off the machine: {off_machine}"
        assert not errors, errors
    assert app.returncode is not None
    deadline = time.time() + 30  # Voila's shutdown ends its kernels; each kernel also exits when its parent goes
    while time.time() < deadline and any(_alive(pid) for pid in started):
        time.sleep(0.5)
    left = [pid for pid in started if _alive(pid)]
    assert not left, f"processes left behind: {[psutil.Process(pid).cmdline() for pid in left]}"


def test_app_explore_serves_the_cost_explorer(tmp_path: Path) -> None:
    """``attnsparse app --explore --model DeepSeek-V3``: the explorer's picture in the app's page, MLA's two
    pipelines drawn, a control that repaints it, a click on an op that shows its details, nothing off the machine."""
    requests: list[str] = []
    errors: list[str] = []
    with app_running(tmp_path, "--explore", "--model=DeepSeek-V3") as (url, _), chromium() as browser:
        page = watched_page(browser.new_context(viewport={"width": 1400, "height": 1000}), requests, errors)
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        try:
            page.locator(".asx-root[data-rendered] .asx-tensor").first.wait_for(timeout=180_000)
        except Exception:
            keep_evidence(page, "app-explore-not-painted", errors)
            raise
        assert page.locator(".asx-preset select").input_value() == "DeepSeek-V3"
        explorer_repaint_ms(page, "4096:4096")  # a control repaints the picture (the time is not a test)
        page.locator(".asx-op", has_text="kv_b_proj").first.click()
        page.locator(".asx-details h4", has_text="kv_b_proj").wait_for(timeout=30_000)
        assert page.locator(".asx-lane").count() == 2  # MLA's two pipelines, each in its lane
        # TP 4: the output projection's all-reduce, and the picture of which heads each rank computes
        rendered = page.locator(".asx-root").get_attribute("data-rendered")
        page.locator(".asx-tp input").fill("4")
        page.locator(".asx-tp input").dispatch_event("change")
        page.wait_for_function(f"() => document.querySelector('.asx-root').dataset.rendered !== '{rendered}'")
        page.locator(".asx-op", has_text="o_proj").first.click()
        page.locator(".asx-details .asx-ranks.js-plotly-plot").wait_for(timeout=30_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator(".asx-details").screenshot(path=str(ARTIFACTS / "app-explore-ranks.png"))
        page.close()
    off_machine = sorted({u for u in requests if not u.startswith(LOCAL)})
    assert not off_machine, f"the app fetched from off the machine: {off_machine}"
    assert not errors, errors


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_app_binds_to_this_machine_unless_told_and_warns_when_it_is() -> None:
    command = voila_command(Path("app.ipynb"), 8866, "127.0.0.1", open_browser=False)
    assert "--Voila.ip=127.0.0.1" in command and "--no-browser" in command and "--template=attnsparse" in command
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert "no login" in exposure_warning("0.0.0.0", 8866)


def test_app_notebook_shows_the_widget_with_the_given_model_and_text() -> None:
    import json

    nb = json.loads(app_notebook("gpt2", "Hello 'there'"))
    source = nb["cells"][0]["source"]
    assert "aw.show('gpt2', text=\"Hello 'there'\"" in source
    assert "text=" not in json.loads(app_notebook(None, None))["cells"][0]["source"]  # the widget's own default
    assert "per_layer=False" in json.loads(app_notebook(None, None, per_layer=False))["cells"][0]["source"]
    explorer = json.loads(app_notebook("DeepSeek-V3", None, explore=True))["cells"][0]["source"]
    assert "aw.explore('DeepSeek-V3')" in explorer and "aw.show" not in explorer  # attnsparse app --explore


@pytest.mark.parametrize("argv", [["app", "--port", "0"], ["app", "--port", "70000"], ["app", "--text", "/no/such"]])
def test_app_rejects_bad_arguments_clearly(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "attnsparse: error:" in err and ("--port" in err or "--text" in err)
