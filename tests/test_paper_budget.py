"""sparsity="paper": every parameter of a mask, its budget included, as its paper ships it, in compare, the widget
and the command line; what was used is said, and the achieved sparsity reported."""

from __future__ import annotations

import pytest
from tiny_models import ToyTokenizer, build

import attnsparse_widget as aw
from attnsparse_widget import cli, costs, masks, pipeline
from attnsparse_widget.adapt import Training

TEXT = "the cat sat on the mat and looked at the dog, which sat by the door and looked back at the cat"


@pytest.mark.unit
def test_the_papers_parameters_budget_included():
    dsa, note = masks.at_paper("dsa", 8192)
    assert dsa.k == 2048 and note is None
    # DeepSeek's k = 2048 keeps min(i + 1, 2048) keys in row i: at 8192 tokens 0.5625 of the causal pairs dropped
    assert costs.budget_sparsity(8192, dsa.k) == pytest.approx(1 - (8192 * 2048 - 2048 * 2047 / 2) / (8192 * 8193 / 2))
    assert round(costs.budget_sparsity(8192, dsa.k), 4) == 0.5625
    nsa = masks.resolve("nsa", 8192, "paper")
    assert (nsa.n, nsa.block, nsa.window) == (16, 64, 512)
    assert masks.resolve("quest", 8192, "paper").token_budget == 1024
    assert masks.resolve("sink_window", 8192, "paper", sinks=8).sinks == 8  # a parameter passed still wins


@pytest.mark.unit
def test_what_was_used_is_said_when_the_paper_gives_no_budget_or_the_text_is_shorter():
    _, note = masks.at_paper("sliding_window", 8192)
    assert note is not None and "no budget from its paper" in note and "window=" in note
    _, note = masks.at_paper("dsa", 1024)
    assert note is not None and "no longer than dsa's paper budget (k=2048)" in note


@pytest.mark.unit
def test_a_sparsity_that_is_neither_a_number_nor_paper_is_refused():
    with pytest.raises(TypeError, match="a number in \\[0, 1\\) or 'paper'"):
        pipeline.Request(text="x", sparsity="papers")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="adapting takes a sparsity"):
        pipeline.Request(text="x", sparsity="paper", train=Training(steps=5))


@pytest.mark.model
def test_compare_runs_the_papers_budget_and_reports_what_it_dropped():
    model, tok = build("llama", "sdpa"), ToyTokenizer()
    res = aw.compare((model, tok), TEXT, mask="dsa", sparsity="paper", per_layer=False, continuation_tokens=0)
    assert res.metrics.requested_sparsity is None
    assert res.mask.k == 2048 and res.metrics.achieved_sparsity == 0.0  # every key of a short text fits k = 2048
    assert any("no longer than dsa's paper budget" in n for n in res.metrics.notes)
    window = aw.compare((model, tok), TEXT, mask="sink_window", sparsity="paper", per_layer=False,
                        continuation_tokens=0, sinks=2, window=16)  # fmt: skip
    assert (window.mask.sinks, window.mask.window) == (2, 16) and window.metrics.achieved_sparsity > 0.3
    assert any(n.startswith("sparsity='paper'") for n in window.metrics.notes)


@pytest.mark.model
def test_the_widget_has_a_paper_choice_beside_the_slider():
    model, tok = build("llama", "sdpa"), ToyTokenizer()
    w = aw.AttentionDiffWidget((model, tok), text=TEXT, mask="sink_window", sparsity=0.5, per_layer=False,
                               threaded=False)  # fmt: skip
    assert w.result.metrics.requested_sparsity == 0.5
    w.paper_budget = True
    assert w.result.metrics.requested_sparsity is None and w.result.mask.window == 2044
    assert any("paper budget" in n for n in w.result.metrics.notes)


@pytest.mark.unit
def test_the_command_line_takes_paper():
    parsed = cli.build_parser().parse_args(["compare", "--text", "x", "--mask", "dsa", "--sparsity", "paper"])
    assert parsed.sparsity == "paper"
    assert cli.build_parser().parse_args(["compare", "--text", "x", "--sparsity", "0.7"]).sparsity == 0.7
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["compare", "--text", "x", "--sparsity", "lots"])


@pytest.mark.model
def test_show_and_sweep_take_paper():
    model, tok = build("llama", "sdpa"), ToyTokenizer()
    w = aw.show((model, tok), TEXT, mask="dsa", sparsity="paper", per_layer=False, threaded=False)
    assert w.paper_budget and w.result.mask.k == 2048
    table = aw.sweep((model, tok), [TEXT], masks=["sink_window"], sparsities=[0.5, "paper"], progress=False,
                     mask_params={"sink_window": {}})  # fmt: skip
    assert [r["requested_sparsity"] for r in table] == [0.5, "paper"]
    assert table[1]["achieved_sparsity"] == 0.0  # the text is shorter than the paper's 2048-token cache
    assert len(aw.plot_sweep(table)["data"]) >= 1
