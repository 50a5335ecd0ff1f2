"""The README's pictures, made by the project's own code on the embedded default model. Run only when asked; the
results are committed under docs/images/:

    .venv/bin/python scripts/make_readme_images.py [--out docs/images] [--only hero widget gallery curve]

hero.gif         ``export_gif``: the layers stepping, dense | sparse | sparse - dense (sinks + window at 70 %)
widget.png       the widget in JupyterLab (Debian's Chromium under Playwright): controls, main view, metrics
gallery.png      the same widget's head gallery: mass recall of every layer and head
degradation.png  ``plot_sweep`` of a sweep over the sample texts: perplexity against achieved sparsity per mask
explorer.png     the cost explorer in JupyterLab (Chromium): the default model's layer, QKᵀ clicked
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import attnsparse_widget as aw  # noqa: E402
from attnsparse_widget.export import render_pngs  # noqa: E402

TEXT = aw.sample_texts()[0]
MASK, SPARSITY = "sink_window", 0.7
HERO_LAYERS = range(0, 30, 2)  # every other layer: 15 frames
HERO_SIZE = (960, 384)
GIF_BUDGET = 2 * 2**20


def hero(out: Path) -> None:
    model, tok = aw.load_model()
    res = aw.compare((model, tok), TEXT, MASK, SPARSITY, per_layer=False, continuation_tokens=0)
    report = res.export_gif(out / "hero.gif", layers=HERO_LAYERS, size=HERO_SIZE, duration_ms=600, overwrite=True)
    size = report.path.stat().st_size
    print(f"hero.gif: {report.frames} frames, {size / 1e6:.2f} MB, {report.seconds:.1f} s")
    if size > GIF_BUDGET:
        raise SystemExit(f"hero.gif is {size / 1e6:.2f} MB, over the README's 2 MB: fewer layers or a smaller size")


def browser_shots(out: Path, which: set[str]) -> None:
    """The widget in JupyterLab: the main view once settled, then the head gallery tab."""
    from harness import chromium, jupyterlab, open_notebook, run_cell, settled, write_notebook

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cell = f"import attnsparse_widget as aw\nw = aw.show(None, {TEXT!r}, mask={MASK!r}, sparsity={SPARSITY})\nw"
        write_notebook(root / "shot.ipynb", [cell])
        with jupyterlab(root) as url, chromium() as browser:
            page, errors = open_notebook(browser, f"{url}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/shot.ipynb")
            run_cell(page, 0)
            settled(page, timeout=900_000)
            page.wait_for_function("() => document.querySelector('.asw-root')?.dataset.busy === '0'")
            time.sleep(1)  # plotly's transitions end
            widget = page.locator(".asw-root")
            if "widget" in which:
                widget.screenshot(path=str(out / "widget.png"))
                print("widget.png")
            if "gallery" in which:
                page.set_viewport_size({"width": 1500, "height": 3000})  # every layer's row on the page at once
                page.locator(".asw-tab[data-tab='gallery']").click()
                page.wait_for_function("() => document.querySelector('.asw-gallery')?.dataset.rendered")
                time.sleep(1)
                page.locator(".asw-gallery").screenshot(path=str(out / "gallery.png"))
                print("gallery.png")
            if errors:
                raise SystemExit(f"the widget threw in the browser: {errors}")


def curve(out: Path) -> None:
    table = aw.sweep(None, masks=("sliding_window", "sink_window", "topk", "nsa"), sparsities=(0.3, 0.5, 0.7, 0.9))
    fig = aw.plot_sweep(table).to_dict()
    (out / "degradation.png").write_bytes(render_pngs([fig], (900, 480))[0])
    print("degradation.png")


def explorer_shot(out: Path) -> None:
    """The cost explorer in JupyterLab, its QKᵀ op clicked (its numbers and roofline beside the picture)."""
    from harness import chromium, jupyterlab, open_notebook, run_cell, write_notebook

    cells = ["import attnsparse_widget as aw\nex = aw.explore()\nex"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_notebook(root / "explore.ipynb", cells)
        with jupyterlab(root) as url, chromium() as browser:
            page, _ = open_notebook(
                browser, f"{url}/lab/workspaces/{uuid.uuid4().hex[:8]}/tree/explore.ipynb", width=1500, height=1300
            )
            run_cell(page, 0)
            page.locator(".asx-root[data-rendered]").wait_for(timeout=120_000)
            page.locator(".asx-op", has_text="QK^T").first.click()
            page.locator(".asx-details .asx-roofline.js-plotly-plot").wait_for(timeout=60_000)
            time.sleep(1)
            page.locator(".asx-root").screenshot(path=str(out / "explorer.png"))
            print("explorer.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--only", nargs="+", choices=("hero", "widget", "gallery", "curve", "explorer"), default=None)
    args = parser.parse_args()
    which = set(args.only or ("hero", "widget", "gallery", "curve", "explorer"))
    args.out.mkdir(parents=True, exist_ok=True)
    if "hero" in which:
        hero(args.out)
    if which & {"widget", "gallery"}:
        browser_shots(args.out, which)
    if "curve" in which:
        curve(args.out)
    if "explorer" in which:
        explorer_shot(args.out)


if __name__ == "__main__":
    main()
