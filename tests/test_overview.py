"""Long texts: the pooled overview store with on-demand recomputation gives exactly what the full-resolution store
gives, and the logits recomputed by the model's own head give the metrics that full logits give."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tiny_models import ToyTokenizer, build

import attnsparse_widget as aw
from attnsparse_widget import logits as logits_module
from attnsparse_widget import pipeline
from attnsparse_widget import store as store_module
from attnsparse_widget.pooling import block_mean

pytestmark = pytest.mark.unit

TEXT = "the quick brown fox jumps over the lazy dog; " * 7  # 315 tokens: above the 256-cell overview
CASES = [("llama", "sink_window"), ("llama", "topk"), ("gemma2", "nsa"), ("qwen2", "bigbird")]


def run(model, mask: str, *, retain: bool):
    """The captured path either way: a long text under a positions-only mask would go view first, whose masked
    layers run on another kernel and so equal these to float rounding only (test_long_context.py checks that)."""
    aw.clear_cache()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_module, "retains", lambda *args, **kwargs: retain)
        mp.setattr(pipeline, "view_first", lambda *args: False)
        return aw.compare((model, ToyTokenizer()), TEXT, mask=mask, sparsity=0.6, continuation_tokens=4)


@pytest.fixture(scope="module", params=CASES, ids=[f"{f}-{m}" for f, m in CASES])
def pair(request):
    family, mask = request.param
    model = build(family, "eager" if family == "gemma2" else "sdpa")
    return run(model, mask, retain=True), run(model, mask, retain=False)


def test_the_regimes_are_the_ones_asked_for(pair):
    full, overview = pair
    assert full.sparse.store.retain and not overview.sparse.store.retain
    assert overview.sparse.store.factor == 2 and overview.sparse.store.probs == [None] * 3
    assert overview.sparse.store.nbytes() < full.sparse.store.nbytes() / 2  # factor 2 here, 8 at 2048 tokens


def test_recomputed_layers_equal_the_captured_ones_bit_for_bit(pair):
    full, overview = pair
    for layer in range(full.n_layers):
        for which in ("dense", "sparse"):
            assert np.array_equal(full.attention(layer, which), overview.attention(layer, which)), (layer, which)
        assert np.array_equal(full.keep_mask(layer), overview.keep_mask(layer)), layer


def test_metrics_are_the_same(pair):
    full, overview = pair
    a, b = full.metrics, overview.metrics
    assert a.achieved_sparsity == b.achieved_sparsity and a.achieved_sparsity_per_head == b.achieved_sparsity_per_head
    assert a.sparse_ppl == b.sparse_ppl and a.next_token_kl == b.next_token_kl
    assert a.mass_recall_per_head == b.mass_recall_per_head and a.kl_per_head == b.kl_per_head
    assert a.per_layer_delta_ppl == b.per_layer_delta_ppl and a.cumulative_delta_ppl == b.cumulative_delta_ppl
    assert full.continuations == overview.continuations


@pytest.mark.parametrize("head", [-1, 0, 3])
def test_pooled_maps_equal_pooling_the_full_maps(pair, head):
    full, overview = pair
    n = len(full.tokens)
    for layer in (0, 2):
        ours, factor = overview.maps(layer, head)
        assert factor == 2 and ours["dense"].shape == (math.ceil(n / 2),) * 2
        select = (lambda x: x.mean(0)) if head < 0 else (lambda x: x[head])
        expected = {
            "dense": select(full.attention(layer, "dense")),
            "sparse": select(full.attention(layer, "sparse")),
            "keep": select(full.keep_mask(layer).astype(np.float32)),
            "allowed": full.allowed_mask(layer).astype(np.float32),
        }
        for name, value in expected.items():
            np.testing.assert_allclose(ours[name], block_mean(value, 2), atol=1e-6, err_msg=name)
        # pooled again for a smaller overview (the HTML page's 128 cells), exactly from the sums
        smaller, factor = overview.maps(layer, head, max_side=64)
        assert factor == 6
        np.testing.assert_allclose(smaller["dense"], block_mean(expected["dense"], 6), atol=1e-6)
        # a zoomed region comes at full resolution, recomputed for that layer
        region = (100, 180, 20, 90)
        zoom, factor = overview.maps(layer, head, region)
        assert factor == 1
        np.testing.assert_array_equal(zoom["sparse"], expected["sparse"][100:180, 20:90])


def test_gallery_thumbnails_agree(pair):
    full, overview = pair
    for layer in (0, 1):
        for a, b in zip(full.head_maps(layer, 24), overview.head_maps(layer, 24), strict=True):
            assert a.shape == b.shape == (4, 23, 23)  # 14 tokens a cell: ceil(315 / 14) = 23 cells
            np.testing.assert_allclose(a, b, atol=1e-6)


def test_full_logits_give_the_same_metrics():
    """A model whose head cannot be replayed keeps full logits: the metrics do not depend on the path."""
    model = build("llama")
    aw.clear_cache()
    replayed = aw.compare((model, ToyTokenizer()), TEXT, mask="topk", sparsity=0.7, continuation_tokens=3)
    assert replayed.sparse.base_output is not None and replayed.sparse.full_output is None
    aw.clear_cache()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(logits_module._verdicts, model, False)
        kept = aw.compare((model, ToyTokenizer()), TEXT, mask="topk", sparsity=0.7, continuation_tokens=3)
    assert kept.sparse.base_output is None and kept.sparse.full_output.shape == (len(kept.tokens), 96)
    for name in ("dense_ppl", "sparse_ppl", "next_token_kl", "top1_agreement", "output_relative_error"):
        assert math.isclose(getattr(replayed.metrics, name), getattr(kept.metrics, name), rel_tol=1e-5), name
    np.testing.assert_allclose(
        replayed.metrics.per_layer_delta_ppl, kept.metrics.per_layer_delta_ppl, rtol=1e-4, atol=1e-5
    )
    assert replayed.continuations == kept.continuations
    for name, top in replayed.next_token_top(10).items():  # one row of the head vs a slice of all rows: 1e-7
        other = kept.next_token_top(10)[name]
        assert [t for t, _ in top] == [t for t, _ in other]
        np.testing.assert_allclose([p for _, p in top], [p for _, p in other], rtol=1e-5)
