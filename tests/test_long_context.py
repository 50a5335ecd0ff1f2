"""Long texts: the blocked attention path (capture.row_blocks.row_block) against independent oracles.

Above ``capture.row_blocks.LONG_SCORES_BYTES`` of scores per attention call the engine computes one block of query
rows at a time, over only the keys a block can use. Here the threshold is lowered (fixture ``blocked``) so that
short texts on tiny models take that path, and what comes out is checked against:

* the stock eager model handed the same keep-mask as an explicit additive float mask (static masks; every tiny
  family, GQA, soft-capping and the models' own sliding windows included), and the default model at 1024 tokens;
* the plain per-row reference of tests/reference_masks.py (score-dependent masks, on the default model);
* the spec's formulas in numpy for the attention metrics measured block by block.

Tolerances: probabilities 1e-5 absolute (sums over fewer exact zeros round differently), perplexity 1e-4 relative.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_capture_oracle import (
    TOY_TEXT,
    additive,
    eager,
    model_allowed,
    numpy_attention_metrics,
    random_ids,
)
from test_sparse_oracle_scores import SCORE_MASKS, TEXT, reference_run
from tiny_models import ToyTokenizer, build, configs

import attnsparse_widget as aw
from attnsparse_widget import capture, masks, passes, pipeline
from attnsparse_widget import store as store_module
from attnsparse_widget.capture import Plan, QueryKeys, Recomputation, attention_active, row_blocks
from attnsparse_widget.hooks import LayerOutputs, capture_layer_outputs
from attnsparse_widget.introspect import layer_indexer, num_layers
from attnsparse_widget.measure import output_metrics
from attnsparse_widget.metrics import Metrics
from attnsparse_widget.passes import captured_pass
from attnsparse_widget.pooling import pool_sum
from attnsparse_widget.store import AttentionStore

pytestmark = pytest.mark.model

ATOL = 1e-5
ROWS = 6  # query rows per block in these tests


@pytest.fixture
def blocked(monkeypatch):
    """Every attention call of more than one query takes the blocked path, ``ROWS`` rows (rounded to the store's
    cell) at a time, into stores that keep the pooled overview only, as for a long text."""
    aw.clear_cache()
    monkeypatch.setattr(row_blocks, "LONG_SCORES_BYTES", 0)
    monkeypatch.setattr(row_blocks, "row_block", _small_blocks)
    monkeypatch.setattr(store_module, "retains", lambda *args, **kwargs: False)
    yield
    aw.clear_cache()


def _small_blocks(n_heads: int, n_q: int, n_k: int, cell: int = 1) -> int | None:
    rows = max(cell, ROWS // cell * cell)
    return rows if rows < n_q else None


def capture_overview(model, ids, mask=None, max_side=16):
    """Our pass into an overview store (``max_side`` cells a side); returns (store, logits, plan)."""
    heads = model.config.get_text_config().num_attention_heads
    store = AttentionStore(num_layers(model), heads, ids.shape[1], retain=False, max_side=max_side)
    plan = Plan(layer_of=layer_indexer(model), mask=mask, recorder=store, cell=store.factor)
    with torch.no_grad(), attention_active(model, plan):
        logits = model(input_ids=ids).logits
    return store, logits, plan


def explicit_masks(model, mask, n):
    """The keep-mask of every layer within the model's own allowed set, and the additive mask(s) for eager."""
    heads = model.config.num_attention_heads
    per_layer = [torch.as_tensor(masks.build(mask, n, layer=layer, n_heads=heads)) for layer in range(3)]
    allowed = model_allowed(model, n)
    keep = [(k if k.dim() == 3 else k[None]) & a for k, a in zip(per_layer, allowed, strict=False)]
    types = getattr(model.config, "layer_types", None)
    if types and len(set(types)) > 1:
        return keep, {t: additive(keep[types.index(t)]) for t in set(types)}
    return keep, additive(keep[0])


def pooled(attention: torch.Tensor, factor: int) -> torch.Tensor:
    return pool_sum(attention[0].float(), factor)


TINY = list(configs())


# one of each kind of column set: none dropped, a contiguous band, sinks plus a band, scattered columns, per-head
# and per-layer random blocks (every static mask's rows are checked block by block in test_masks_properties.py)
@pytest.mark.parametrize("mask_id", ["dense", "sliding_window", "sink_window", "strided", "bigbird"])
@pytest.mark.parametrize("family", TINY)
def test_blocked_static_sparse_equals_eager_with_explicit_mask(blocked, family, mask_id):
    model = build(family, "eager" if family == "gemma2" else "sdpa")
    n = 40
    ids = random_ids(n, seed=2)
    mask = masks.resolve(mask_id, n, 0.5)
    keep, explicit = explicit_masks(model, mask, n)
    if not isinstance(explicit, dict) and any(not torch.equal(keep[0], k) for k in keep):
        model = build(family, "eager" if family == "gemma2" else "sdpa", n_layers=1)  # one explicit mask per model
    store, logits, _ = capture_overview(model, ids, mask)
    attentions, ref_logits = eager(model, ids, explicit)
    assert float((logits - ref_logits).abs().max()) <= 1e-4
    heads = model.config.num_attention_heads
    for layer, ref in enumerate(attentions):
        assert float((store.pooled_probs[layer] - pooled(ref, store.factor)).abs().max()) <= ATOL * store.factor**2
        if store.pooled_keep[layer] is not None:  # the keep-mask it applied, pooled: the explicit one
            expected = pool_sum(keep[layer].expand(heads, -1, -1).float(), store.factor)
            assert torch.equal(store.pooled_keep[layer].expand(heads, -1, -1), expected)


@pytest.mark.parametrize("family", TINY)
def test_blocked_probe_of_a_region_equals_eager_rows(blocked, family):
    """``layer_attention(rows=...)`` recomputes only those query rows, at full width: eager's rows exactly."""
    model = build(family, "eager" if family == "gemma2" else "sdpa")
    n = 40
    ids = random_ids(n, seed=3)
    mask = masks.resolve("sink_window", n, 0.5)
    keep, explicit = explicit_masks(model, mask, n)
    attentions, _ = eager(model, ids, explicit)
    sparse = captured_pass(model, ids, mask, seed=0, is_lm=True)
    for layer in range(num_layers(model)):
        probs, kept, allowed = sparse.layer(layer, rows=(7, 19))
        assert probs.shape == (1, model.config.num_attention_heads, 12, n)
        assert float((probs - attentions[layer][:, :, 7:19]).abs().max()) <= ATOL
        assert kept is not None and torch.equal(
            kept[0].expand(probs.shape[1], -1, -1), keep[layer][:, 7:19].expand(probs.shape[1], -1, -1)
        )


@pytest.mark.parametrize("mask_id", SCORE_MASKS)
def test_blocked_score_dependent_mask_equals_reference(blocked, default_model, mask_id):
    """Row-local score-dependent masks (top-k, DSA, NSA, MoBA, Quest) chosen block by block equal the plain per-row
    reference; the others (H2O, vertical-slash, block top-k read other rows) run in one piece, and still match."""
    model, tok = default_model
    ids = tok(TEXT, return_tensors="pt").input_ids
    mask = masks.resolve(mask_id, ids.shape[1], 0.5)
    store, ours, _ = capture_overview(model, ids, mask, max_side=8)
    out = reference_run(model, ids, mask)
    for layer in range(num_layers(model)):
        ref = pooled(out.attentions[layer], store.factor)
        assert float((store.pooled_probs[layer] - ref).abs().max()) <= ATOL * store.factor**2, layer
    assert float((ours - out.logits).abs().max()) <= 1e-4


@pytest.mark.parametrize("mask_id", ["sink_window", "topk", "nsa"])
def test_blocked_attention_metrics_match_numpy(blocked, mask_id):
    """Recall and KL measured block by block, from the dense pass's queries, keys and row log-normalisers, equal the
    spec's formulas on the full maps."""
    model = build("llama")
    text = (TOY_TEXT + " ") * 2
    res = aw.compare((model, ToyTokenizer()), text, mask=mask_id, sparsity=0.5, per_layer=False)
    assert not res.sparse.store.retain and res.sparse.store.compared
    assert res.dense.qk is not None and all(lse is not None for lse in res.dense.qk.lse)
    recall, kl = numpy_attention_metrics(res)
    np.testing.assert_allclose(res.metrics.mass_recall_per_head, recall, rtol=1e-5)
    np.testing.assert_allclose(res.metrics.kl_per_head, kl, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mask_id", ["sink_window", "topk"])
def test_blocked_and_one_piece_give_the_same_comparison(monkeypatch, mask_id):
    """The whole comparison, blocked or not: the same budgets, sparsity and continuations, and the same metrics
    to float tolerance. (Masks sized on sampled blocks, NSA, MoBA, Quest, may choose another budget: see
    capture.row_blocks.CALIBRATION_BLOCKS.)"""
    model, tok = build("qwen2"), ToyTokenizer()
    text = (TOY_TEXT + " ") * 2
    kwargs = dict(mask=mask_id, sparsity=0.6, per_layer=True, continuation_tokens=4)
    aw.clear_cache()
    whole = aw.compare((model, tok), text, **kwargs)
    aw.clear_cache()
    monkeypatch.setattr(row_blocks, "LONG_SCORES_BYTES", 0)
    monkeypatch.setattr(row_blocks, "row_block", _small_blocks)
    monkeypatch.setattr(store_module, "retains", lambda *args, **kwargs: False)
    parts = aw.compare((model, tok), text, **kwargs)
    aw.clear_cache()
    assert parts.sparse.budgets == whole.sparse.budgets
    m, w = parts.metrics, whole.metrics
    assert m.achieved_sparsity == w.achieved_sparsity
    assert m.dense_ppl == pytest.approx(w.dense_ppl, rel=1e-4)
    assert m.sparse_ppl == pytest.approx(w.sparse_ppl, rel=1e-4)
    np.testing.assert_allclose(m.mass_recall_per_head, w.mass_recall_per_head, rtol=1e-5)
    np.testing.assert_allclose(m.per_layer_delta_ppl, w.per_layer_delta_ppl, rtol=1e-4, atol=1e-4)
    assert parts.continuations == whole.continuations


def test_default_model_at_1024_tokens_blocked_equals_eager_with_explicit_mask(default_model, monkeypatch):
    """The default model at 1024 tokens, in blocks of 128 rows: the logits and perplexity of a sinks + window mask
    equal the stock eager model handed the same mask (1e-4 relative on perplexity)."""
    model, tok = default_model
    ids = tok(" ".join(aw.sample_texts()) * 4, return_tensors="pt").input_ids[:, :1024]
    n = ids.shape[1]
    assert n == 1024
    monkeypatch.setattr(row_blocks, "LONG_SCORES_BYTES", 0)
    monkeypatch.setattr(row_blocks, "BLOCK_SCORES_BYTES", 4 * 9 * n * 128)
    assert row_blocks.row_block(9, n, n, 4) == 128
    mask = masks.resolve("sink_window", n, 0.9)
    store, logits, plan = capture_overview(model, ids, mask, max_side=256)
    assert store.factor == 4 and plan.first_changed
    keep = torch.as_tensor(masks.build(mask, n, n_heads=1))
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            ref = model(input_ids=ids, attention_mask=additive(keep)).logits
    finally:
        model.set_attn_implementation(before)
    assert float((logits - ref).abs().max()) <= 1e-3
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    ref_nll = torch.nn.functional.cross_entropy(ref[0, :-1], ids[0, 1:])
    assert float(torch.exp(nll)) == pytest.approx(float(torch.exp(ref_nll)), rel=1e-4)


def test_a_region_is_recomputed_bit_for_bit_as_in_the_whole_layer(blocked):
    """Rows asked for on their own come from the pass's own blocks of rows: exactly the numbers of the whole layer
    recomputed, and of ``Comparison.attention(layer, head=..., region=...)``."""
    model = build("llama")
    res = aw.compare((model, ToyTokenizer()), TOY_TEXT, mask="sink_window", sparsity=0.5, per_layer=False)
    n = len(res.tokens)
    for which in ("dense", "sparse"):
        whole = res.attention(1, which)
        assert np.array_equal(res.attention(1, which, region=(7, 19, 3, n)), whole[:, 7:19, 3:])
        assert np.array_equal(res.attention(1, which, head=2), whole[2])
    assert np.array_equal(res.keep_mask(1, region=(5, 9, 0, 4)), res.keep_mask(1)[:, 5:9, :4])


def test_whole_maps_above_the_limit_are_refused_with_the_two_ways_that_fit(blocked, monkeypatch):
    from attnsparse_widget import result

    model = build("llama")
    res = aw.compare((model, ToyTokenizer()), TOY_TEXT, mask="sink_window", sparsity=0.5, per_layer=False)
    n = len(res.tokens)
    monkeypatch.setattr(result, "FULL_MAP_BYTES", 4 * n * n)  # one head's map fits, four heads' do not
    with pytest.raises(ValueError, match=r"head=0.*region=\(q0, q1, k0, k1\)"):
        res.attention(0, "sparse")
    assert res.attention(0, "sparse", head=3).shape == (n, n)
    for bad in ((0, n + 1, 0, n), (5, 5, 0, n), (0, 1, 0)):
        with pytest.raises(ValueError, match="region must be"):
            res.attention(0, region=bad)
    with pytest.raises(ValueError, match="head must be in 0..3"):
        res.attention(0, head=4)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gemma2"])
@pytest.mark.parametrize("mask_id", ["sink_window", "strided", "topk", "nsa", "h2o"])
def test_view_first_pass_records_what_the_captured_pass_records(monkeypatch, family, mask_id):
    """A long text goes view first (passes.masked_pass: a positions-only mask on the fast kernels, a score-dependent
    one on the eager path, sized per layer as the captured pass does; then each layer recorded by replay); the
    comparison equals the one the captured pass gives (itself checked against eager above), layer by layer: the
    budgets, the maps, the sparsity, the metrics, the continuations. Gemma-2's soft-capping keeps its layers off the
    fast kernels."""
    model, tok = build(family, "eager" if family == "gemma2" else "sdpa"), ToyTokenizer()
    text = ((TOY_TEXT + " ") * 6)[:300]
    kwargs = dict(mask=mask_id, sparsity=0.6, per_layer=True, continuation_tokens=4)
    aw.clear_cache()
    monkeypatch.setattr(passes, "QUERIES_KEPT_BYTES", 0)  # the dense queries recomputed per layer, as at 8K
    monkeypatch.setattr(passes, "OUTPUTS_EVERY", 2)  # and blocks 0 and 2 computed again from block 1's output
    fast = aw.compare((model, tok), text, **kwargs)
    assert [out is not None for out in fast.sparse.layer_outputs.outputs] == [False, True, False]
    assert fast.n_layers == 3 and len(fast.tokens) > 256 and not fast.sparse.store.retain
    assert fast.dense.qk is not None and fast.dense.kv is None
    assert not any(t is not None for t in fast.dense.qk.queries + fast.dense.qk.keys)
    aw.clear_cache()
    monkeypatch.setattr(passes, "QUERIES_KEPT_BYTES", passes.QK_BUDGET)  # measured in the pass, as at 2K
    monkeypatch.setattr(pipeline, "view_first", lambda *args: False)
    whole = aw.compare((model, tok), text, **kwargs)
    aw.clear_cache()
    m, w = fast.metrics, whole.metrics
    assert fast.sparse.budgets == whole.sparse.budgets
    assert m.achieved_sparsity_per_head == w.achieved_sparsity_per_head
    assert m.sparse_ppl == pytest.approx(w.sparse_ppl, rel=1e-5)
    np.testing.assert_allclose(m.mass_recall_per_head, w.mass_recall_per_head, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.kl_per_head, w.kl_per_head, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.per_layer_delta_ppl, w.per_layer_delta_ppl, rtol=1e-4, atol=1e-4)
    assert fast.continuations == whole.continuations
    # the rows before the first one the mask changed: the view-first pass's own equal the dense pass's to rounding
    everything = copy.copy(fast.sparse)
    everything.first_changed = {0: 0}
    output_metrics(Metrics(0.6, m.achieved_sparsity, []), fast.dense, everything)
    np.testing.assert_allclose(everything.nll, fast.sparse.nll, rtol=1e-5, atol=1e-6)
    for layer in range(fast.n_layers):
        ours, _ = fast.maps(layer)
        ref, _ = whole.maps(layer)
        for name in ours:
            np.testing.assert_allclose(ours[name], ref[name], atol=ATOL, err_msg=f"{name}, layer {layer}")


@pytest.mark.parametrize("family", TINY)
def test_recomputed_queries_and_keys_equal_the_ones_the_dense_pass_saw(family):
    """A long text's dense pass keeps no queries and keys; each layer's, recomputed from the recorded block outputs
    (capture.layer_inputs), equal bit for bit what that layer's attention call received in the pass."""
    model = build(family, "eager" if family == "gemma2" else "sdpa")
    ids = random_ids(40)
    kept = QueryKeys.empty(num_layers(model))
    outputs = LayerOutputs()
    plan = Plan(layer_of=layer_indexer(model), mask=None, keep_qk=kept)
    with torch.inference_mode(), attention_active(model, plan), capture_layer_outputs(model, outputs):
        model(input_ids=ids, use_cache=False)
    for layer in range(num_layers(model)):
        queries, keys, _ = capture.layer_inputs(model, ids, layer, outputs)
        assert torch.equal(queries, kept.queries[layer]) and torch.equal(keys, kept.keys[layer]), f"layer {layer}"


def _pass_outputs(model, ids, plan, every):
    """Block outputs of one pass under ``plan`` keeping every ``every``-th, with what computes the others again."""
    outputs = LayerOutputs()
    with torch.inference_mode(), attention_active(model, plan), capture_layer_outputs(model, outputs, every):
        model(input_ids=ids, use_cache=False)
    outputs.recompute = Recomputation.of(plan)
    return outputs


ROUTES = {  # a pass that takes each route of the attention function, and the route it must report
    "dense-sdpa": (None, {}, "dense-sdpa"),
    "blocked dense": (None, {"recorder": "store"}, "blocked"),
    "blocked sparse": ("sink_window", {"recorder": "store"}, "blocked"),
    "blocked score-dependent": ("topk", {"recorder": "store"}, "blocked"),
    "fast sdpa": ("sink_window", {"kernel": "sdpa"}, "sdpa"),
    "fast flex": ("sink_window", {"kernel": "flex"}, "flex"),
    "eager": ("h2o", {"kernel": "eager"}, "eager"),  # not row-local: never blocked
}


# soft-capping keeps Gemma-2's layers off SDPA and the fast kernels: it takes the other routes
ROUTE_CASES = [
    (family, route)
    for family in ("llama", "qwen2", "gemma2")
    for route in ROUTES
    if family != "gemma2" or ROUTES[route][2] not in ("flex", "sdpa", "dense-sdpa")
]


@pytest.mark.parametrize(("family", "route"), ROUTE_CASES)
def test_skipped_block_outputs_are_computed_again_bit_for_bit(blocked, family, route):
    """A long text keeps every k-th block output only (passes.OUTPUTS_EVERY); a replay from block l computes the
    blocks after the nearest kept one again (capture.outputs_before), each by the route its attention call took in
    the pass. Every block output computed so equals, bit for bit, the one the same pass produced (recorded here with
    every output kept), on each route: SDPA for unread dense layers, the blocked path, the fast kernels, eager."""
    mask_id, how, expected = ROUTES[route]
    if expected == "flex" and not aw.kernels.flex_available("cpu"):
        pytest.skip("FlexAttention does not compile on this machine")
    model = build(family, "eager" if family == "gemma2" else "sdpa", n_layers=7)
    ids = random_ids(40)
    mask = None if mask_id is None else masks.resolve(mask_id, 40, 0.6)

    def plan():
        heads = model.config.get_text_config().num_attention_heads
        recorder = AttentionStore(7, heads, 40) if how.get("recorder") else None
        return Plan(layer_of=layer_indexer(model), mask=mask, recorder=recorder, kernel=how.get("kernel"))

    every = _pass_outputs(model, ids, plan(), every=1)
    first = plan()
    some = _pass_outputs(model, ids, first, every=3)
    assert {kind for kind, _ in first.taken.values()} == {expected}
    assert [i for i, out in enumerate(some.outputs) if out is not None] == [2, 5]
    for layer in range(1, 8):
        again = capture.outputs_before(model, ids, layer, some).outputs[layer - 1]
        want = every.outputs[layer - 1]
        again, want = (again[0], want[0]) if isinstance(want, tuple) else (again, want)
        assert torch.equal(again, want), f"block {layer - 1}"


@pytest.mark.parametrize("mask_id", ["sink_window", "topk"])
def test_a_comparison_keeping_every_third_block_output_equals_one_keeping_all(monkeypatch, mask_id):
    """Keeping every third block output changes nothing a comparison shows, bit for bit: every layer's maps of both
    passes, the metrics, the per-layer curves (replays from every layer), the continuations (a KV cache rebuilt
    from the outputs) and a region recomputed at full resolution."""
    model, tok = build("llama", n_layers=7), ToyTokenizer()
    text = ((TOY_TEXT + " ") * 6)[:300]
    kwargs = dict(mask=mask_id, sparsity=0.6, per_layer=True, continuation_tokens=4)
    monkeypatch.setattr(passes, "QUERIES_KEPT_BYTES", 0)
    results = {}
    for every in (1, 3):
        aw.clear_cache()
        monkeypatch.setattr(passes, "OUTPUTS_EVERY", every)
        results[every] = aw.compare((model, tok), text, **kwargs)
    aw.clear_cache()
    some, all_ = results[3], results[1]
    assert [i for i, out in enumerate(some.dense.layer_outputs.outputs) if out is not None] == [2, 5]
    assert some.metrics == all_.metrics
    assert some.continuations == all_.continuations
    for layer in range(7):
        ours, _ = some.maps(layer)
        ref, _ = all_.maps(layer)
        for name in ours:
            np.testing.assert_array_equal(ours[name], ref[name], err_msg=f"{name}, layer {layer}")
    region = dict(region=(100, 140, 60, 100))
    for name, values in some.maps(4, **region)[0].items():
        np.testing.assert_array_equal(values, all_.maps(4, **region)[0][name], err_msg=name)
