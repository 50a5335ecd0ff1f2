"""The command line: ``attnsparse masks`` and ``attnsparse compare`` on the embedded default model."""

from __future__ import annotations

import json

import pytest

from attnsparse_widget import masks
from attnsparse_widget.cli import main

pytestmark = pytest.mark.model


def test_masks_lists_every_mask(capsys):
    assert main(["masks"]) == 0
    out = capsys.readouterr().out
    assert all(mask_id in out for mask_id in masks.ids())


def test_compare_prints_json_metrics(default_model, capsys):
    text = "The keeper wrote in his log. The storm came from the west and the boats stayed in."
    assert main(["compare", "--text", text, "--mask", "sliding_window", "--sparsity", "0.5", "--tokens", "3",
                 "--no-per-layer", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["mask"].startswith("sliding_window(") and abs(out["achieved_sparsity"] - 0.5) < 0.05
    assert out["sparse_ppl"] > 0 and set(out["continuations"]) == {"dense", "sparse"}
    assert out["per_layer_delta_ppl"] is None


def test_compare_summary_and_errors(default_model, capsys):
    assert main(["compare", "--text", "A short text to score.", "--tokens", "0", "--param", "sinks=2"]) == 0
    out = capsys.readouterr().out
    assert "sink_window(sinks=2" in out and "perplexity sparse" in out and "dense attention" in out
    assert main(["compare", "--text", "   "]) == 2
    assert "empty" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        main(["compare", "--param", "sinks"])


@pytest.mark.slow
def test_compare_reads_a_text_file_and_times_the_attention(default_model, capsys, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("The keeper wrote in his log. The storm came from the west and the boats stayed in.\n" * 3)
    assert main(["compare", "--text-file", str(path), "--mask", "sliding_window", "--tokens", "0", "--no-per-layer",
                 "--time-attention", "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["attention_time_dense"] > 0 and out["attention_time_sparse"] > 0 and out["attention_kernel"]
    assert main(["compare", "--text-file", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read --text-file" in capsys.readouterr().err
