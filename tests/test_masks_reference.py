"""Every mask against its plain reference (tests/reference_masks.py), and the spec's count formulas."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import reference_masks as ref
import torch

from attnsparse_widget import masks
from attnsparse_widget.masks.base import MaskContext, window_count, window_for_sparsity

STATIC_CASES = {
    "dense": [{}],
    "sliding_window": [{"window": 1}, {"window": 3}, {"window": 40}],
    "dilated_window": [{"window": 3, "dilation": 2}, {"window": 2, "dilation": 5}],
    "chunked": [{"chunk": 1}, {"chunk": 4}, {"chunk": 7}],
    "sink_window": [{"sinks": 4, "window": 3}, {"sinks": 0, "window": 5}, {"sinks": 1, "window": 1}],
    "global_local": [{"window": 3, "n_global": 2}, {"window": 1, "n_global": 0}],
    "strided": [{"stride": 2}, {"stride": 3}, {"stride": 8}],
    "fixed": [{"stride": 4, "summary": 1}, {"stride": 8, "summary": 2}, {"stride": 3, "summary": 0}],
}
SCORE_CASES = {
    "topk": [{"k": 1}, {"k": 3}, {"k": 8}],
    "dsa": [{"k": 1}, {"k": 4}],
    "nsa": [{"n": 3, "block": 4, "window": 3}, {"n": 5, "block": 3, "window": 2}],
    "moba": [{"k": 1, "block": 4}, {"k": 2, "block": 3}],
    "block_topk": [{"top_k": 1, "block": 4}, {"top_k": 2, "block": 3}],
    "quest": [{"token_budget": 4, "page": 2}, {"token_budget": 12, "page": 3}],
    "h2o": [{"kv_budget": 2}, {"kv_budget": 5}, {"kv_budget": 8}],
    "vertical_slash": [{"size": 6, "vertical_fraction": 0.5, "last_q": 4, "sink_columns": 1, "local_diagonals": 1},
                       {"size": 9, "vertical_fraction": 0.2, "last_q": 30, "sink_columns": 0, "local_diagonals": 2}],
}


def test_every_issue_mask_is_registered():
    expected = {"dense", "sliding_window", "dilated_window", "chunked", "sink_window", "global_local", "bigbird",
                "strided", "fixed", "topk", "dsa", "nsa", "vertical_slash", "block_topk", "moba", "h2o", "quest"}
    assert set(masks.ids()) == expected
    for info in masks.available():
        assert info["description"] and "\n" not in info["description"]
        assert info["paper"] and info["rule"].startswith("keep") or "keep(" in info["rule"], info["id"]
        assert info["budget"] is None or info["budget"] in info["params"]


@pytest.mark.parametrize("name, params", [(k, p) for k, ps in STATIC_CASES.items() for p in ps])
@pytest.mark.parametrize("n", [1, 5, 17])
@pytest.mark.parametrize("causal", [True, False])
def test_static_masks_equal_reference(name, params, n, causal):
    ours = masks.build(name, n, causal=causal, **params)
    expected = ref.for_mask(masks.get(name, **params), n, causal=causal)[0]
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("name, params", [(k, p) for k, ps in SCORE_CASES.items() for p in ps])
@pytest.mark.parametrize("n", [1, 7, 19])
def test_score_dependent_masks_equal_reference(name, params, n):
    rng = np.random.default_rng(n)
    logits = rng.normal(size=(4, n, n)).astype(np.float32)
    logits = np.where(np.tril(np.ones((n, n), bool)), logits, -np.inf)
    mask = masks.get(name, **params)
    groups = 2 if name == "nsa" else 1
    ours = mask.keep(n, scores=torch.from_numpy(logits), ctx=MaskContext(n_heads=4, kv_groups=groups)).numpy()
    expected = ref.for_mask(mask, n, logits, groups=groups)
    np.testing.assert_array_equal(np.broadcast_to(ours, (4, n, n)), np.broadcast_to(expected, (4, n, n)))


def test_bigbird_structure():
    """BigBird's random blocks: the fixed part exactly, and exactly min(r, eligible) random blocks per query
    block, all eligible, different per head and layer, the same for the same seed."""
    n, b, g, r = 64, 4, 1, 2
    mask = masks.get("bigbird", block=b, n_global=g, n_random=r)
    keep = masks.build(mask, n, layer=3, n_heads=4)
    again = masks.build(mask, n, layer=3, n_heads=4)
    np.testing.assert_array_equal(keep, again)
    assert not np.array_equal(keep, masks.build(mask, n, layer=4, n_heads=4))
    assert not np.array_equal(keep[0], keep[1])
    for head in range(4):
        for qb in range(n // b):
            i = qb * b + b - 1  # the block's last row sees every earlier key
            blocks = {j // b for j in range(i + 1) if keep[head, i, j]}
            fixed_blocks = {kb for kb in range(qb + 1) if kb < g or kb in (qb, qb - 1)}
            assert fixed_blocks <= blocks
            eligible = [kb for kb in range(g, qb - 1)]
            random_blocks = blocks - fixed_blocks
            assert random_blocks <= set(eligible)
            assert len(random_blocks) == min(r, len(eligible))


# ----------------------------------------------------------------------------------- count formulas (spec §1)
@pytest.mark.parametrize("n", [1, 10, 128, 1024])
def test_window_count_formula(n):
    for w in {1, 2, n // 3 + 1, n}:
        assert masks.build("sliding_window", n, window=w).sum() == window_count(n, w)
        sinks = min(4, n)
        if w + sinks <= n:
            assert masks.build("sink_window", n, sinks=sinks, window=w).sum() == window_count(n, w + sinks)


def test_window_inverse_matches_spec_values():
    assert [window_for_sparsity(s, 1024) for s in (0.5, 0.9, 0.99)] == [300, 53, 5]


@pytest.mark.parametrize("stride, expected", [(8, 0.861), (16, 0.908), (23, 0.913), (32, 0.908), (64, 0.864),
                                              (256, 0.560)])
def test_strided_sparsity_matches_spec(stride, expected):
    n = 1024
    keep = masks.build("strided", n, stride=stride)
    assert round(1 - keep.sum() / (n * (n + 1) / 2), 3) == expected


def test_h2o_twenty_percent_kv_drops_about_64_percent():
    n = 1024
    logits = torch.randn(1, n, n)
    keep = masks.get("h2o", kv_budget=int(0.2 * n)).keep(n, scores=logits)
    assert abs(masks.sparsity_of(keep, True) - 0.64) < 0.01


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="Valid ids: dense"):
        masks.get("nope")
    with pytest.raises(ValueError, match="no parameter 'widnow'"):
        masks.get("sliding_window", widnow=3)
    with pytest.raises(ValueError, match="either sparsity"):
        masks.build("sliding_window", 10, sparsity=0.5, window=3)
    with pytest.raises(ValueError, match="scores"):
        masks.build("topk", 10, sparsity=0.5)
    with pytest.raises(ValueError, match="causal model|encoder"):
        masks.build("h2o", 10, scores=np.zeros((10, 10)), causal=False)
    for name, bad in [("sliding_window", {"window": 0}), ("chunked", {"chunk": 0}), ("nsa", {"n": 2}),
                      ("dilated_window", {"dilation": 0}), ("moba", {"block": 0}), ("fixed", {"summary": 40})]:
        with pytest.raises(ValueError, match=name):
            masks.get(name, **bad)


def test_block_larger_than_text_works():
    for name, params in [("moba", {"block": 500}), ("nsa", {"block": 500, "window": 3}), ("chunked", {"chunk": 500}),
                         ("bigbird", {"block": 500}), ("quest", {"page": 500}), ("block_topk", {"block": 500})]:
        n = 20
        scores = np.random.default_rng(0).normal(size=(n, n)) if masks.REGISTRY[name].score_dependent else None
        keep = masks.build(name, n, scores=scores, **params)
        assert keep.shape[-2:] == (n, n) and keep[..., np.arange(n), np.arange(n)].all()


def test_available_is_complete():
    ids = [info["id"] for info in masks.available()]
    assert ids == masks.ids()
    for info, cls in zip(masks.available(), masks.REGISTRY.values()):
        assert info["params"] == cls().params()
    assert list(itertools.islice(ids, 3)) == ["dense", "sliding_window", "dilated_window"]


def test_masks_md_is_generated_from_the_code():
    from pathlib import Path

    assert (Path(__file__).parent.parent / "MASKS.md").read_text() == masks.reference_markdown(), (
        "MASKS.md is stale: run `python -m attnsparse_widget.masks > MASKS.md`"
    )


def test_parameters_are_type_checked():
    assert masks.get("sliding_window", window=8.0).window == 8  # an integral float (e.g. from JSON) is fine
    for bad in ("8", 8.5, float("nan"), None, True):
        with pytest.raises(TypeError, match="sliding_window: window must be"):
            masks.get("sliding_window", window=bad)
    with pytest.raises(ValueError, match=r"vertical_fraction must be in \[0, 1\]"):
        masks.get("vertical_slash", vertical_fraction=1.5)
