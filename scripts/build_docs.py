"""Build the course site (``make docs``): the README as the home page, the notebooks executed with their outputs,
MASKS.md, benchmarks/README.md, ARCHITECTURE.md and the API reference, as a static site in ``docs/_build/html/``
that opens from the file system or any static host with nothing fetched off the machine.

The tool is mkdocs-material with mkdocs-jupyter (and mkdocstrings for the API): pure Python, so it builds offline
(Jupyter Book 2's MyST engine downloads its theme at build time), and its ``offline`` plugin makes the site work
from ``file://``, search included. The configuration is ``mkdocs.yml`` at the repository root.

Steps:
1. Executed notebooks: ``docs/_build/executed/NAME.ipynb`` when it was executed from the current source (the test
   suite writes them there, so CI runs each notebook once), else this script executes it (nbclient) at the
   sizes the tests use (:data:`NOTEBOOK_SIZES`; set the variables yourself for the full sizes).
2. The site's copy of each notebook (:func:`site_notebook`): plotly figures become a ``<div>`` drawn by the
   package's own plotly.js (served once, as ``js/plotly.js``); each widget becomes a static picture of the view it
   showed when the notebook ended (rendered by kaleido during the execution); other widgets (progress bars) are
   dropped, and so is the saved widget state (it would load the widget manager from a CDN).
3. ``mkdocs build`` into ``docs/_build/html/``.

    .venv/bin/python scripts/build_docs.py             # or: make docs
    .venv/bin/python scripts/build_docs.py --reexecute # run every notebook again
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "docs" / "_build"
EXECUTED = BUILD / "executed"  # executed notebooks (and their widgets' pictures), written by the tests too
SOURCE = BUILD / "src"  # the site's sources, staged here for mkdocs (docs_dir in mkdocs.yml)
SITE = BUILD / "html"
REMOVE = "remove-cell"  # cells with this tag run but are left out of the site (mkdocs.yml's remove_tag_config)
NOTEBOOK_SIZES = {  # the sizes the tests run the notebooks at (the notebooks' own defaults take tens of minutes)
    "ATTNSPARSE_NOTEBOOK_STEPS": "10",  # notebook 07's training steps (200 by default)
    "ATTNSPARSE_NOTEBOOK_TOKENS": "1536",  # notebooks 02-04's full-context sections (8192 by default)
    "ATTNSPARSE_NOTEBOOK_LENGTHS": "512 1024",  # notebook 06's measured kernel curve (1024 to 8192 by default)
}
# The last cell of every execution (tagged out of the site): each widget's main view, as soon as it is on screen, is
# rendered to PNG (kaleido), named by its model id, for the site's static picture of it. The export reads the
# snapshot on screen (w.result), which the worker never changes while it computes the later stages.
PICTURES_CELL = """\
import gc as _gc
from pathlib import Path as _Path
import attnsparse_widget as _aw
_folder = _Path({folder!r})
_folder.mkdir(parents=True, exist_ok=True)
for _w in [_o for _o in _gc.get_objects() if issubclass(type(_o), _aw.AttentionDiffWidget)]:  # type(): no weakproxy
    _w.wait(None, until="view")
    if _w.result is None:  # the page would show an error or an empty widget: say what happened
        raise RuntimeError(f"widget {{_w.model_id}} ended without a result; its status: {{_w.status}}")
    _w.export_png(_folder / f"{{_w.model_id}}.png", overwrite=True)
for _x in [_o for _o in _gc.get_objects() if issubclass(type(_o), _aw.CostExplorer)]:  # its picture, as SVG
    _x.export_svg(_folder / f"{{_x.model_id}}.svg")
"""
SITE_PAGES = {  # repository files staged as pages of the site: their name there
    "MASKS.md": "masks.md",
    "COSTS.md": "costs.md",
    "benchmarks/README.md": "benchmarks.md",
    "ARCHITECTURE.md": "architecture.md",
}
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")  # a Markdown link (not a picture): [label](target)
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pictures_folder(executed: Path) -> Path:
    return executed.with_suffix(".pictures")


def execute_notebook(
    src: Path, dst: Path, env: dict[str, str] | None = None, extra_cells: tuple[str, ...] = ()
) -> nbformat.NotebookNode:
    """Run ``src`` top to bottom in a fresh kernel (in a temporary working directory) and write it, outputs and
    all, to ``dst``, stamped with the digest of its source. ``extra_cells`` run after the notebook's own cells,
    tagged out of the site. Raises nbclient's ``CellExecutionError`` on the first failing cell (``dst`` is then
    not written)."""
    nb = nbformat.read(src, as_version=4)
    cells = [PICTURES_CELL.format(folder=str(pictures_folder(dst))), *extra_cells]
    for code in cells:
        nb.cells.append(nbformat.v4.new_code_cell(code, metadata={"tags": [REMOVE]}))
    shutil.rmtree(pictures_folder(dst), ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="attnsparse-nb-") as cwd:
        client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": cwd}})
        client.execute(env={**os.environ, **NOTEBOOK_SIZES, **(env or {})})
    nb.metadata["attnsparse"] = {"source_sha256": source_digest(src)}
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dst)
    return nb


def executed_path(src: Path) -> Path:
    """Where the executed copy of the notebook ``src`` goes (the tests' runs write it there too)."""
    return EXECUTED / src.name


def executed_notebook(src: Path, reexecute: bool = False) -> Path:
    """The executed copy of ``src`` in :data:`EXECUTED`: reused when it was run from the same source."""
    dst = executed_path(src)
    if not reexecute and dst.is_file():
        stamp = nbformat.read(dst, as_version=4).metadata.get("attnsparse", {}).get("source_sha256")
        if stamp == source_digest(src):
            return dst
    print(f"executing {src.name} ...", flush=True)
    execute_notebook(src, dst)
    return dst


def plotly_html(figure: dict[str, Any], div_id: str) -> str:
    """A figure as a ``<div>`` and the script that draws it with the site's plotly.js (``window.Plotly``, loaded at
    the end of the page: the drawing waits for DOMContentLoaded, which follows every script of the page)."""
    data = json.dumps(figure).replace("</", "<\\/")  # nothing in the data can close the <script>
    return (
        f'<div id="{div_id}" class="asw-figure"></div>\n'
        f'<script>document.addEventListener("DOMContentLoaded", function () {{ const f = {data};'
        f' Plotly.newPlot("{div_id}", f.data, f.layout, {{responsive: true, displaylogo: false}}); }});</script>'
    )


def progress_text(states: dict[str, Any], model_id: str) -> str | None:
    """A progress bar (tqdm's: a box of a label, a bar and the counts) as text, in the final state the executed
    notebook saved; None for any other widget."""
    texts: list[str] = []
    found = False

    def walk(mid: str) -> None:
        nonlocal found
        model = states.get(mid, {})
        state = model.get("state", {})
        name = model.get("model_name", "")
        if name in ("FloatProgressModel", "IntProgressModel"):
            found = True
            done = state.get("value", 0) / max(state.get("max", 1) or 1, 1e-12)
            texts.append("[" + "#" * round(20 * done) + " " * (20 - round(20 * done)) + "]")
        elif name in ("HTMLModel", "LabelModel"):
            texts.append(html.unescape(re.sub(r"<[^>]+>", "", state.get("value", ""))).strip())
        for child in state.get("children", []):
            walk(child.removeprefix("IPY_MODEL_"))

    walk(model_id)
    return " ".join(t for t in texts if t) if found else None


def widget_picture(png: bytes, svg: bool = False) -> dict[str, str]:
    """A widget's static picture for the site: the comparison widget's main view (PNG), or the cost explorer's
    picture (its own SVG, ``svg``)."""
    what = "The cost explorer's picture" if svg else "The widget's main view"
    alt = f"{what} when the notebook finished (a static picture; run the notebook for the live one)"
    img = base64.b64encode(png).decode("ascii")
    kind = "svg+xml" if svg else "png"
    return {
        "text/html": f'<figure class="asw-widget-picture"><img src="data:image/{kind};base64,{img}" alt="{alt}">'
        f"<figcaption>{html.escape(alt)}.</figcaption></figure>",
        "text/plain": f"[{what[4:]}]",
    }


def site_notebook(executed: Path) -> nbformat.NotebookNode:
    """The site's copy of an executed notebook (see the module's docstring, step 2)."""
    nb = nbformat.read(executed, as_version=4)
    widget_states = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    pictures = pictures_folder(executed)
    stem = executed.stem
    figures = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            data = out.get("data", {})
            if PLOTLY_MIME in data:
                figures += 1
                out.data = {"text/html": plotly_html(data[PLOTLY_MIME], f"{stem}-figure-{figures}")}
            elif WIDGET_MIME in data:
                model_id = data[WIDGET_MIME]["model_id"]
                png, svg = pictures / f"{model_id}.png", pictures / f"{model_id}.svg"
                if png.is_file():
                    out.data = widget_picture(png.read_bytes())
                elif svg.is_file():  # the cost explorer's picture, as it draws it
                    out.data = widget_picture(svg.read_bytes(), svg=True)
                elif text := progress_text(widget_states, model_id):
                    out.data = {"text/plain": text}  # a progress bar, as it ended (its saved text is its start)
                else:
                    continue  # another widget: no static form
            outputs.append(out)
        cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return nb


def site_link(match: re.Match[str]) -> str:
    """A link of the README on the site: to the page a repository file became (:data:`SITE_PAGES`), or, for another
    file of the repository (CONTRIBUTING.md, an example), its label as plain text; anything else unchanged."""
    label, target = match.group(1), match.group(2)
    if target in SITE_PAGES:
        return f"[{label}]({SITE_PAGES[target]})"
    if "://" not in target and not target.startswith("#") and (ROOT / target).is_file():
        return label
    return match.group(0)


def readme_page(text: str) -> str:
    """The README as the home page: links into the repository made to point at the site's pages."""
    text = text.replace("](docs/images/", "](images/").replace('src="docs/images/', 'src="images/')
    text = LINK.sub(site_link, text)
    return re.sub(r"`notebooks/`", "[the notebooks](notebooks/01_quickstart.ipynb)", text, count=1)


API_PAGE = """\
# API reference

Everything `import attnsparse_widget as aw` exposes, from the docstrings.

::: attnsparse_widget
    options:
      show_submodules: false
      members_order: source
"""

EXTRA_CSS = """\
.md-grid { max-width: 1500px; }  /* room for the figures (up to 1200 px wide) next to the navigation */
.asw-figure { width: 100%; min-height: 420px; overflow-x: auto; }
.jupyter-wrapper .jp-OutputArea-output pre { white-space: pre; overflow-x: auto; }  /* tables keep their columns */
.asw-widget-picture img { max-width: 100%; border: 1px solid #ddd; }
.asw-widget-picture figcaption { font-size: 0.75rem; color: #666; }
"""


def stage(reexecute: bool = False) -> None:
    """Write the site's sources into :data:`SOURCE`."""
    sys.path.insert(0, str(ROOT / "src"))
    from attnsparse_widget.export import plotly_js

    shutil.rmtree(SOURCE, ignore_errors=True)
    (SOURCE / "notebooks").mkdir(parents=True)
    (SOURCE / "js").mkdir()
    (SOURCE / "css").mkdir()
    (SOURCE / "index.md").write_text(readme_page((ROOT / "README.md").read_text(encoding="utf-8")), encoding="utf-8")
    for path, page in SITE_PAGES.items():
        shutil.copy(ROOT / path, SOURCE / page)
    (SOURCE / "api.md").write_text(API_PAGE, encoding="utf-8")
    shutil.copytree(ROOT / "docs" / "images", SOURCE / "images")
    (SOURCE / "js" / "plotly.js").write_text(plotly_js(), encoding="utf-8")
    shutil.copy(ROOT / "node_modules" / "iframe-worker" / "shim" / "index.js", SOURCE / "js" / "iframe-worker-shim.js")
    (SOURCE / "css" / "site.css").write_text(EXTRA_CSS, encoding="utf-8")
    for src in sorted(NOTEBOOKS.glob("*.ipynb")):
        nbformat.write(site_notebook(executed_notebook(src, reexecute)), SOURCE / "notebooks" / src.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reexecute", action="store_true", help="execute every notebook again")
    args = parser.parse_args(argv)
    stage(args.reexecute)
    mkdocs = [sys.executable, "-m", "mkdocs", "build", "--clean", "--config-file", str(ROOT / "mkdocs.yml")]
    # NO_MKDOCS_2_WARNING: Material's banner on its end of life (May 2027; why mkdocs: ARCHITECTURE.md, the course)
    subprocess.run(mkdocs, check=True, cwd=ROOT, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    print(f"site: {SITE / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
