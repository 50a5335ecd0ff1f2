"""The cost explorer (aw.explore, CostExplorer): what it sends has the contract's shape, its numbers are costs'
own, every control recosts, a bad setting is explained and keeps the picture, the state restores it, and from a
comparison it counts the realised keep-mask."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_type_hints

import numpy as np
import pytest
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm
from test_contract import _synced, assert_conforms
from tiny_models import ToyTokenizer, build

import attnsparse_widget as aw
from attnsparse_widget import contract, costs, masks
from attnsparse_widget.cost_graph import config_of, workload_of
from attnsparse_widget.cost_svg import layout

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def comm():
    setup_test_comm()
    yield
    teardown_test_comm()


def test_the_explorer_state_declares_every_synced_trait_and_conforms():
    ex = aw.explore()
    declared = set(contract.ExplorerState.__required_keys__)
    assert _synced(aw.CostExplorer) == declared
    hints = get_type_hints(contract.ExplorerState)
    for name in declared:
        assert_conforms(getattr(ex, name), hints[name])
    assert ex.error == "" and ex.settings["preset"] == "SmolLM2-135M"


def test_the_picture_carries_costs_own_numbers():
    ex = aw.explore(requests=[[2048, 2048], [2048, 1]], tp=3, flash=True)
    settings = ex.settings
    ops = costs.op_costs(config_of(settings), workload_of(settings))
    assert [(o["name"], o["flops"], o["bytes_read"], o["comm_bytes"]) for o in ex.graph["ops"]] == [
        (o.name, o.flops, o.bytes_read, o.comm_bytes) for o in ops
    ]
    h100 = next(r for r in ex.graph["ops"][0]["rooflines"] if r["accelerator"] == "H100")
    assert h100["seconds"] == pytest.approx(ops[0].roofline("H100").seconds)
    assert ex.graph["pairs"] == costs.attention_pairs(workload_of(settings))
    totals = costs.model_totals(config_of(settings), workload_of(settings), "H100")
    assert ex.graph["totals"]["model_flops"] == pytest.approx(totals["flops"])
    assert ex.graph["totals"]["model_seconds"]["H100"] == pytest.approx(totals["seconds"])
    # every tensor and op of the picture is a clickable group of the SVG
    svg = ex.graph["svg"]
    ids = set(re.findall(r'data-id="([^"]+)"', svg))
    assert ids == {t["id"] for t in ex.graph["tensors"]} | {o["id"] for o in ex.graph["ops"]}


def test_a_control_recosts_and_a_block_follows_its_dims():
    ex = aw.explore()
    before = {t["name"]: t for t in ex.graph["tensors"]}
    ex.settings = {**ex.settings, "requests": [[8192, 8192]]}
    after = {t["name"]: t for t in ex.graph["tensors"]}
    assert after["Q"]["shape"] == [9, 8192, 64] and before["Q"]["shape"] == [9, 1024, 64]
    ex.settings = {**ex.settings, "variant": "MLA"}
    names = {o["name"] for o in ex.graph["ops"]}
    assert {"kv_a_proj_with_mqa", "kv_b_proj"} <= names and ex.graph["pipeline"] == "prefill"
    assert ex.graph["crossover"] and ex.graph["crossover_at"] is not None
    flops = ex.graph["pipeline_flops"]  # both pipelines side by side; the cheaper one drawn
    assert flops["prefill"] < flops["decode"] and ex.graph["totals"]["layer_flops"] == flops["prefill"]
    ex.settings = {**ex.settings, "variant": "DSA", "requests": [[8192, 1]]}
    assert {"indexer scores", "top-k"} <= {o["name"] for o in ex.graph["ops"]}
    # another preset brings its dims and keeps the batch
    ex.settings = {**ex.settings, "preset": "Llama-3.1-8B"}
    assert (ex.settings["heads"], ex.settings["kv_heads"], ex.settings["variant"]) == (32, 8, "GQA")
    assert ex.settings["requests"] == [[8192, 1]] and ex.graph["title"].startswith("Llama-3.1-8B")
    # a click only selects: the picture is not recomputed
    graph = ex.graph
    ex.settings = {**ex.settings, "selected": "op3"}
    assert ex.graph is graph


def test_mla_draws_both_pipelines_in_lanes_of_their_own():
    ex = aw.explore("DeepSeek-V3", requests=[[8192, 8192]])
    graph, settings = ex.graph, ex.settings
    config, workload = config_of(settings), workload_of(settings)
    for lane, pipeline in enumerate(costs.PIPELINES):  # decompressed above absorbed, each exactly as costs counts it
        drawn = [(o["name"], o["flops"]) for o in graph["ops"] if o["lane"] == lane]
        assert drawn == [(o.name, o.flops) for o in costs.op_costs(config, workload, pipeline=pipeline)]
        assert graph["pipeline_flops"][pipeline] == sum(f for _, f in drawn)
    assert graph["pipeline"] == "prefill" and graph["costed_lane"] == 0  # a prefill: decompressed is cheaper
    assert "costed in the totals" in graph["lanes"][0] and "not costed" in graph["lanes"][1]
    assert graph["totals"]["layer_flops"] == graph["pipeline_flops"]["prefill"]
    boxes, starts, _, _ = layout(graph)
    lowest = max(boxes[t["id"]].y + boxes[t["id"]].h for t in graph["tensors"] if t["lane"] == 0)
    assert starts[1] > lowest  # the absorbed lane's title and blocks start below every block of the first lane
    assert all(boxes[t["id"]].y - boxes[t["id"]].dy > starts[1] for t in graph["tensors"] if t["lane"] == 1)
    assert re.search(r'data-lane="1" opacity=', graph["svg"]) and not re.search(r'data-lane="0" opacity=', graph["svg"])
    ex.settings = {**ex.settings, "pipeline": "decode"}  # the user picks the absorbed one: it is the one costed
    assert ex.graph["costed_lane"] == 1 and ex.graph["totals"]["layer_flops"] == graph["pipeline_flops"]["decode"]
    assert aw.explore().graph["lanes"] == [] and {o["lane"] for o in aw.explore().graph["ops"]} == {0}


@pytest.mark.parametrize("preset", ["SmolLM2-135M", "DeepSeek-V3", "DeepSeek-V3.2"])
def test_the_layout_runs_left_to_right_with_no_two_boxes_overlapping(preset):
    graph = aw.explore(preset, requests=[[4096, 4096], [4096, 1]], flash=preset == "SmolLM2-135M").graph
    boxes, _, width, height = layout(graph)
    column = {t["id"]: t["column"] for t in graph["tensors"]}
    for op in graph["ops"]:  # an op sits right of every input and left of its output, in its own lane
        assert all(column[i] < op["column"] for i in op["inputs"]) and column[op["output"]] == op["column"] + 1
        assert all(boxes[i].right < boxes[op["id"]].x for i in op["inputs"])
        assert boxes[op["id"]].x + boxes[op["id"]].w < boxes[op["output"]].x
    rects = [(b.x, b.y - b.dy, b.x + b.w + b.dx, b.y + b.h) for b in boxes.values()]  # with the top and side faces
    for k, (x0, y0, x1, y1) in enumerate(rects):
        assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height
        for a0, b0, a1, b1 in rects[k + 1 :]:
            assert x1 <= a0 or a1 <= x0 or y1 <= b0 or b1 <= y0, "two boxes overlap"


def test_a_bad_setting_is_explained_and_keeps_the_last_picture():
    ex = aw.explore()
    graph = ex.graph
    ex.settings = {**ex.settings, "tp": 2}  # 9 query heads
    assert "tp=2 must divide the 9 query heads" in ex.error
    assert ex.graph == graph
    ex.settings = {**ex.settings, "tp": 3}
    assert ex.error == "" and ex.graph["tp_heads"] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    ex.settings = {**ex.settings, "mask": "h2o"}
    assert "aw.explore(aw.compare(" in ex.error  # a score-dependent mask needs a comparison's scores
    with pytest.raises(ValueError, match="unknown explorer settings"):
        aw.explore(context=8192)
    with pytest.raises(ValueError, match="neither a preset"):
        aw.explore("no-such/model-anywhere")


def test_a_library_mask_is_counted_from_its_keep_mask():
    ex = aw.explore(requests=[[512, 512]], mask="sliding_window", sparsity=0.75)
    keep = masks.build("sliding_window", 512, sparsity=0.75)
    assert ex.graph["pairs"] == pytest.approx(float(keep.sum()))
    assert ex.graph["dense_pairs"] == 512 * 513 // 2
    assert ex.graph["tiles"]["computed"] == costs.tile_grid(costs.Workload([(512, 512)]), keep).computed


@pytest.mark.parametrize("flash", [True, False])
def test_the_tiles_are_the_busiest_ranks_as_the_fused_op_counts_them(flash):
    ex = aw.explore(requests=[[4096, 4096], [1024, 1024]], dp=2, flash=flash)  # rank 0 holds the 4096-token prefill
    tiles = ex.graph["tiles"]
    assert ex.graph["totals"]["dp_rank"] == 0 and ex.graph["dp_requests"] == [[0], [1]]
    assert (tiles["computed"], tiles["total"]) == (32 * 33 // 2, 32 * 32)  # 32 x 32 tiles of 128: the triangle
    if flash:  # one count: the numbers a click on the fused op shows
        fused = next(
            o for o in costs.op_costs(config_of(ex.settings), workload_of(ex.settings)) if o.name == "attention"
        )
        assert fused.details["tiles"].computed == tiles["computed"]


def test_the_state_restores_the_same_picture():
    ex = aw.explore("DeepSeek-V3", requests=[[8192, 1]] * 4, dp=2, page_size=64, accelerator="B200")
    again = aw.explore(**ex.state)
    assert again.graph == ex.graph
    assert ex.graph["block_table"][1] == list(range(128, 256))
    assert ex.graph["totals"]["kv_blocks"] == 2 * 128  # the busiest rank's two requests (one table, every layer)


def test_export_svg_writes_the_picture_on_screen(tmp_path):
    ex = aw.explore()
    path = ex.export_svg(tmp_path / "layer.svg")
    text = path.read_text(encoding="utf-8")
    assert text == ex.graph["svg"] and text.startswith("<svg") and "q_proj" in text
    # every label is inside the picture: nothing is drawn left of it
    assert min(float(x) for x in re.findall(r'<text x="(-?[\d.]+)"[^>]*text-anchor="end"', text)) > 40


@pytest.mark.model  # kaleido's Chromium, as every PNG export
def test_export_png_renders_the_same_picture(tmp_path):
    import imageio.v3 as iio

    ex = aw.explore()
    path = ex.export_png(tmp_path / "layer.png", scale=1)
    width, height = (float(v) for v in re.findall(r'width="([\d.]+)" height="([\d.]+)"', ex.graph["svg"])[0])
    image = iio.imread(path)
    assert image.shape[:2] == (round(height), round(width))
    assert (image[..., :3] < 200).any()  # something is drawn, not a blank page


def test_the_frontend_offers_every_library_mask():
    source = (ROOT / "js" / "explorer_figures.ts").read_text(encoding="utf-8")
    listed = re.search(r"export const MASKS = \[([^\]]*)\]", source, flags=re.S)
    assert listed is not None
    assert re.findall(r'"(\w+)"', listed.group(1)) == masks.ids()


@pytest.mark.model
def test_from_a_comparison_it_counts_the_realised_mask():
    model, tok = build("llama", "sdpa"), ToyTokenizer()
    res = aw.compare((model, tok), "the cat sat on the mat and looked at the dog", mask="sink_window",
                     sparsity=0.5, per_layer=False, continuation_tokens=0)  # fmt: skip
    ex = aw.explore(res, layer=1)
    n = len(res.tokens)
    keep = res.keep_mask(1)
    assert ex.settings["requests"] == [[n, n]] and ex.settings["mask"] == "realised"
    assert ex.graph["pairs"] == pytest.approx(keep.sum() / keep.shape[0])
    assert ex.graph["pairs"] < ex.graph["dense_pairs"] == n * (n + 1) // 2
    assert ex.settings["heads"] == 4 and ex.settings["kv_heads"] == 2
    kept = np.asarray(keep, dtype=bool)
    assert ex.graph["tiles"]["computed"] == costs.tile_grid(costs.Workload([(n, n)]), kept).computed
    # a static pattern keeps the same pairs in every head: held once, counted the same as head by head
    assert ex._keep.shape == (n, n) and np.array_equal(ex._keep.unpacked(), kept[0])  # held packed, 8 pairs a byte
    assert aw.CostExplorer(ex.settings, keep=kept).graph == ex.graph
    # a score-dependent one chooses per head: held per head
    res = aw.compare((model, tok), "the cat sat on the mat and looked at the dog", mask="topk", sparsity=0.5,
                     per_layer=False, continuation_tokens=0)  # fmt: skip
    per_head = res.keep_mask(1)
    assert not all(np.array_equal(per_head[0], h) for h in per_head[1:])
    assert aw.explore(res, layer=1)._keep.shape == per_head.shape


@pytest.mark.model
def test_the_widget_opens_the_explorer_on_its_comparison():
    model, tok = build("llama", "sdpa"), ToyTokenizer()
    w = aw.AttentionDiffWidget((model, tok), text="the cat sat on the mat", mask="sliding_window", sparsity=0.5,
                               per_layer=False, threaded=False)  # fmt: skip
    w.layer = 2
    ex = w.explore(flash=True)
    keep = w.result.keep_mask(2)
    assert ex.settings["mask"] == "realised" and ex.settings["flash"] is True
    assert ex.graph["pairs"] == pytest.approx(keep.sum() / keep.shape[0])
    assert any(o["name"] == "attention" for o in ex.graph["ops"])
    # the Cost tab's button: the explorer inside the widget, a reference on the wire
    assert w.explorer is None
    w._on_custom_message(w, {"type": "explore"}, [])
    first = w.explorer
    assert isinstance(first, aw.CostExplorer) and first.graph["pairs"] == ex.graph["pairs"]
    assert_conforms(w.get_state("explorer")["explorer"], get_type_hints(contract.WidgetState)["explorer"])
    assert w.get_state("explorer")["explorer"] == f"anywidget:{first.model_id}"
    w.layer = 0  # pressed again on another layer: a new explorer counts it, the one it replaces is closed
    w._on_custom_message(w, {"type": "explore"}, [])
    assert w.explorer is not first and first.comm is None
    assert w.explorer.graph["pairs"] == pytest.approx(w.result.keep_mask(0).sum() / keep.shape[0])


@pytest.mark.parametrize(
    "workload",
    [
        costs.Workload([(600, 600), (300, 1), (700, 200)]),
        costs.Workload([(600, 600)], window=50),
        costs.Workload([(900, 900), (900, 3)], topk=40),
    ],
    ids=["mixed batch", "window", "top-k"],
)
def test_the_mask_picture_is_each_cells_kept_fraction(workload):
    """The batch's mask picture (cost_graph._batch_mask, counted per row and cell) against every pair laid out one by
    one and pooled: per cell the mean of the kept fraction over the request pairs in it, NaN where there are none."""
    from attnsparse_widget.cost_graph import MASK_SIDE, _batch_mask

    def pairwise(keep=None):
        full = np.full((workload.new_tokens, workload.context_tokens), np.nan)
        r = c = 0
        for context, new in workload.requests:
            q, k = np.arange(context - new, context)[:, None], np.arange(context)[None]
            if keep is not None:
                mine = keep[:, context - new : context, :context].mean(0)
            else:
                first = 0 if workload.window is None else np.maximum(0, q - workload.window + 1)
                mine = ((k <= q) & (k >= first)).astype(float)
                if workload.topk is not None:
                    mine *= np.minimum(1.0, workload.topk / (q + 1 - first))
            full[r : r + new, c : c + context] = mine
            r, c = r + new, c + context
        f_q, f_k = -(-workload.new_tokens // MASK_SIDE), -(-workload.context_tokens // MASK_SIDE)
        rows, cols = -(-full.shape[0] // f_q), -(-full.shape[1] // f_k)
        pooled = np.full((rows, cols), np.nan)
        for i in range(rows):
            for j in range(cols):
                block = full[i * f_q : (i + 1) * f_q, j * f_k : (j + 1) * f_k]
                if (~np.isnan(block)).any():
                    pooled[i, j] = np.nanmean(block)
        return pooled

    np.testing.assert_allclose(_batch_mask(workload, None), pairwise(), equal_nan=True)
    if workload.window is None and workload.topk is None:  # a realised per-head mask, as a comparison gives
        keep = np.random.default_rng(0).random((3, 700, 700)) < 0.3
        np.testing.assert_allclose(_batch_mask(workload, keep), pairwise(keep), equal_nan=True)
