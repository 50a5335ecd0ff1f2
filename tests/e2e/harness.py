"""JupyterLab on a loopback port and Debian Chromium driven by Playwright: shared by the browser tests and the
browser benchmark (benchmarks/bench_browser.py)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and timings, for a person to look at
BUNDLE = ROOT / "src" / "attnsparse_widget" / "static" / "widget.js"
# a browser test of the widget: its tier, and skipped where the frontend bundle is not built
WIDGET_IN_A_BROWSER = [
    pytest.mark.browser,
    pytest.mark.skipif(not BUNDLE.is_file(), reason="the frontend bundle is not built (npm run build)"),
]
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = KERNELSPEC
    nbformat.write(nb, path)


@contextlib.contextmanager
def jupyterlab(root: Path, python: str = sys.executable, env: dict[str, str] | None = None) -> Iterator[str]:
    """A JupyterLab server on a free loopback port serving ``root`` (no token, no news); yields its URL. ``python``
    runs it (and its kernels); ``env`` replaces the environment it inherits."""
    # no "get notified about Jupyter news?" toast over the screenshots
    (root / ".cfg" / "labconfig").mkdir(parents=True, exist_ok=True)
    (root / ".cfg" / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    port = free_port()
    env = {
        **(os.environ if env is None else env),
        "JUPYTER_CONFIG_DIR": str(root / ".cfg"),
        "JUPYTER_RUNTIME_DIR": str(root / ".rt"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / ".ws"),
    }
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            [
                python,
                "-m",
                "jupyterlab",
                "--no-browser",
                f"--port={port}",
                "--ip=127.0.0.1",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.disable_check_xsrf=True",
                "--LabApp.news_url=",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ]
            + (["--allow-root"] if os.geteuid() == 0 else []),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            serving(f"{url}/api", root / "server.log")
            yield url
        finally:
            stop(proc, 10)


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """Debian's Chromium under Playwright (its own browser download cannot work offline)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def open_notebook(browser, url: str, width: int = 1500, height: int = 1100):  # noqa: ANN001, ANN201
    """Open a notebook page and wait for its kernel; returns (page, errors thrown by our bundle)."""
    page = browser.new_page(viewport={"width": width, "height": height}, accept_downloads=True)
    errors: list[str] = []
    # errors thrown by our bundle (anywidget imports it from a blob: URL); the host application's own start-up
    # noise (e.g. Notebook 7's "Command 'filebrowser:open-path' not registered") is not ours to assert on
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}") if "blob:" in (e.stack or "") else None)
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(url, wait_until="domcontentloaded")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
    page.locator(".jp-NotebookPanel-toolbar").first.wait_for(timeout=60_000)
    page.wait_for_function(
        "() => { const s = document.querySelector('.jp-Notebook-ExecutionIndicator, .jp-KernelStatus');"
        " return !s || !/starting|unknown|connecting/i.test(s.getAttribute('data-status') ?? s.textContent ?? ''); }",
        timeout=120_000,
    )
    time.sleep(2)  # the kernel connects
    return page, errors


def run_cell(page, index: int) -> None:  # noqa: ANN001
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def settled(page, request_after: int = 0, timeout: float = 300_000, nth: int = 0) -> None:  # noqa: ANN001
    """Wait until the ``nth`` widget is idle with a request number above ``request_after`` and a painted main view."""
    page.wait_for_function(
        "([n, k]) => { const deep = (root) => { const found = [...root.querySelectorAll('.asw-root')];"
        " if (found.length) return found;"  # marimo renders each widget inside a shadow root
        " return [...root.querySelectorAll('*')].filter((e) => e.shadowRoot).flatMap((e) => deep(e.shadowRoot)); };"
        " const r = deep(document)[k];"
        " return r && r.dataset.busy === '0' && Number(r.dataset.request) > n"
        " && r.querySelector('.asw-main')?.dataset.rendered; }",
        arg=[request_after, nth],
        timeout=timeout,
        polling=100,  # not every animation frame: timings stay clean
    )


def stop(proc: subprocess.Popen, seconds: float) -> None:
    """Ask a server to stop (SIGTERM); kill it if it is still there after ``seconds``."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()


def serving(url: str, log: Path, seconds: float = 60) -> None:
    """Wait until a server answers at ``url``; a server that never does fails with the end of its ``log``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(log.read_text()[-3000:])


# a file of the app's page (Voila): polling it tells that the server answers without running the app's notebook in
# a kernel of its own (the page's root would: a second model load competing with the page's own)
VOILA_STATIC = "voila/templates/attnsparse/static/index.css"

# the addresses a page may load from: this machine's loopback server and in-page data
LOCAL = ("http://127.0.0.1", "data:", "blob:", "about:")


def request_of(page) -> int:  # noqa: ANN001
    """The widget's request number (it rises with each rerun of the engine the page asked for)."""
    return int(page.locator(".asw-root").get_attribute("data-request"))


def watched_page(context, requests: list[str], errors: list[str]):  # noqa: ANN001, ANN201
    """A new page of ``context`` whose every request goes to ``requests``, every page error, console error and HTTP
    error to ``errors``."""
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return page


def open_app(context, url: str, requests: list[str], errors: list[str]):  # noqa: ANN001, ANN201
    """Open a page that shows one widget (an app: Voila, marimo) and wait until its first view is painted
    (:func:`painted`); requests and errors are collected as :func:`watched_page` does."""
    page = watched_page(context, requests, errors)
    page.goto(url, wait_until="domcontentloaded", timeout=120_000)
    painted(page, "app-not-painted", errors)
    return page


def painted(page, name: str, errors: list[str]) -> None:  # noqa: ANN001
    """Wait until the page's widget has painted its main view and is idle; a page that does not get there leaves
    its evidence as ``name`` (:func:`keep_evidence`) before the test fails."""
    try:
        page.locator(".asw-main.js-plotly-plot").wait_for(timeout=300_000)
        settled(page, timeout=300_000)
    except Exception:
        keep_evidence(page, name, errors)
        raise


def keep_evidence(page, name: str, errors: list[str]) -> None:  # noqa: ANN001
    """A page that did not get where a test waited for: its screenshot, text and errors go to test-artifacts/ so
    that a failure in CI can be read afterwards."""
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        text = page.evaluate("() => document.body.innerText")
    except Exception as err:  # noqa: BLE001 - evidence is best effort, the test fails anyway
        text = f"(the page could not be read: {err})"
    (ARTIFACTS / f"{name}.txt").write_text(f"{page.url}\n\nerrors: {errors}\n\n{text[-20000:]}\n")


def slider_step(page) -> str:  # noqa: ANN001
    """Move the sparsity slider one step; returns its new value once the widget has repainted."""
    before = request_of(page)
    page.locator(".asw-sparsity").focus()
    page.keyboard.press("ArrowRight")
    settled(page, before, timeout=300_000)
    return page.locator(".asw-sparsity").input_value()


def explorer_repaint_ms(page, requests: str) -> float:  # noqa: ANN001
    """Set the cost explorer's requests control to ``requests`` ("context:new, ...") and return the milliseconds
    from the control's change until the explorer has repainted (its ``data-rendered`` count went up, then a frame)."""
    return page.evaluate(
        """(value) => new Promise((done, fail) => {
            const root = document.querySelector('.asx-root');
            const before = Number(root.dataset.rendered);
            const input = document.querySelector('.asx-requests-text');
            const start = performance.now();
            const late = setTimeout(() => fail(new Error(`no repaint 60 s after requests = ${value}: a value equal `
                + 'to the current one repaints nothing')), 60000);
            new MutationObserver((_, obs) => {
                if (Number(root.dataset.rendered) > before) { obs.disconnect(); clearTimeout(late);
                    requestAnimationFrame(() => done(performance.now() - start)); }
            }).observe(root, { attributes: true, attributeFilter: ['data-rendered'] });
            input.value = value;
            input.dispatchEvent(new Event('change'));
        })""",
        requests,
    )
