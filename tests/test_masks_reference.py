"""Every mask against a plain reference, and the spec's count formulas (sparse-patterns.md §1, verify_sparsity.py).

The references are per-row loops written from the spec's formulas, sharing no code with the library: the causal
ones live in tests/reference_masks.py (the real-model oracle test uses them too); BigBird (with its documented
random-block hash) and the encoder forms of the score-dependent masks are written here.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import reference_masks as ref
import torch

from attnsparse_widget import masks
from attnsparse_widget.masks.base import MaskContext, window_count, window_for_sparsity

pytestmark = pytest.mark.unit

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
    "vertical_slash": [
        {"size": 6, "vertical_fraction": 0.5, "last_q": 4, "sink_columns": 1, "local_diagonals": 1},
        {"size": 9, "vertical_fraction": 0.2, "last_q": 30, "sink_columns": 0, "local_diagonals": 2},
    ],
}


def test_every_issue_mask_is_registered():
    expected = {
        "dense",
        "sliding_window",
        "dilated_window",
        "chunked",
        "sink_window",
        "global_local",
        "bigbird",
        "strided",
        "fixed",
        "topk",
        "dsa",
        "nsa",
        "vertical_slash",
        "block_topk",
        "moba",
        "h2o",
        "quest",
    }
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


def _mix32(x: int) -> int:
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def _rank(seed: int, layer: int, head: int, qb: int, kb: int) -> int:
    h = _mix32(seed & 0xFFFFFFFF)
    for part in (layer, head, qb, kb):
        h = _mix32(h ^ part)
    return h


def bigbird_reference(n, block, n_global, n_random, causal, heads, seed, layer):
    """BigBird from its docstring: fixed blocks plus the n_random eligible blocks of smallest hash rank."""
    nb = -(-n // block)
    keep = np.zeros((heads, n, n), dtype=bool)
    for h in range(heads):
        for i in range(n):
            qb = i // block
            if causal:
                eligible = [kb for kb in range(n_global, qb - 1)]
            else:
                eligible = [kb for kb in range(nb) if kb >= n_global and kb != nb - 1 and abs(qb - kb) > 1]
            rand = sorted(eligible, key=lambda kb: (_rank(seed, layer, h, qb, kb), kb))[:n_random]
            for j in range(n):
                kb = j // block
                if causal:
                    rule = kb < n_global or kb in (qb - 1, qb) or kb in rand
                else:
                    glob = kb < n_global or qb < n_global or kb == nb - 1 or qb == nb - 1
                    rule = glob or abs(qb - kb) <= 1 or kb in rand
                keep[h, i, j] = (rule and (j <= i or not causal)) or i == j
    return keep


@pytest.mark.parametrize("n", [1, 9, 40, 67])
@pytest.mark.parametrize(
    "params",
    [
        {"block": 4, "n_global": 1, "n_random": 2},
        {"block": 3, "n_global": 0, "n_random": 1},
        {"block": 5, "n_global": 2, "n_random": 0},
    ],
)
@pytest.mark.parametrize("causal", [True, False])
def test_bigbird_equals_reference(n, params, causal):
    for seed, layer in [(0, 0), (7, 3), (-1, 11)]:
        ours = masks.get("bigbird", **params).keep(n, ctx=MaskContext(causal=causal, n_heads=3, seed=seed, layer=layer))
        expected = bigbird_reference(n, **params, causal=causal, heads=3, seed=seed, layer=layer)
        np.testing.assert_array_equal(ours.numpy(), expected)


def _softmax(row):
    e = np.exp(row - row.max())
    return e / e.sum()


def _keep_best(score: dict, k: int) -> list:
    return sorted(score, key=lambda c: -score[c])[:k]


def topk_encoder_reference(logits, k):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    for head in range(h):
        for i in range(n):
            others = {j: logits[head, i, j] for j in range(n) if j != i}
            keep[head, i, _keep_best(others, k - 1) + [i]] = True
    return keep


def dsa_encoder_reference(logits, k):
    h, n, _ = logits.shape
    keep = np.zeros((1, n, n), dtype=bool)
    for i in range(n):
        index = sum(_softmax(logits[head, i].astype(np.float64)) for head in range(h))
        others = {j: index[j] for j in range(n) if j != i}
        keep[0, i, _keep_best(others, k - 1) + [i]] = True
    return keep


def moba_encoder_reference(logits, k, block):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    for head in range(h):
        for i in range(n):
            own = i // block
            gate = {b: np.mean(logits[head, i, b * block : (b + 1) * block]) for b in range(-(-n // block)) if b != own}
            chosen = [own] + _keep_best(gate, k - 1)
            for j in range(n):
                keep[head, i, j] = j // block in chosen or i == j
    return keep


def block_topk_encoder_reference(logits, top_k, block):
    h, n, _ = logits.shape
    keep = np.zeros((h, n, n), dtype=bool)
    nb = -(-n // block)
    for head in range(h):
        for qb in range(nb):
            rows = range(qb * block, min(n, (qb + 1) * block))
            pooled = {
                kb: np.mean(logits[head, qb * block : (qb + 1) * block, kb * block : (kb + 1) * block])
                for kb in range(nb)
            }
            chosen = _keep_best(pooled, top_k)
            for i in rows:
                for j in range(n):
                    keep[head, i, j] = j // block in chosen or i == j
    return keep


ENCODER_SCORE_CASES = [
    ("topk", {"k": 1}, topk_encoder_reference),
    ("topk", {"k": 5}, topk_encoder_reference),
    ("dsa", {"k": 3}, dsa_encoder_reference),
    ("moba", {"k": 1, "block": 4}, moba_encoder_reference),
    ("moba", {"k": 2, "block": 3}, moba_encoder_reference),
    ("block_topk", {"top_k": 1, "block": 4}, block_topk_encoder_reference),
    ("block_topk", {"top_k": 2, "block": 3}, block_topk_encoder_reference),
]


@pytest.mark.parametrize("name, params, reference", ENCODER_SCORE_CASES)
@pytest.mark.parametrize("n", [1, 7, 19])
def test_score_dependent_encoder_masks_equal_reference(name, params, reference, n):
    logits = np.random.default_rng(n + 100).normal(size=(4, n, n)).astype(np.float32)
    ours = masks.get(name, **params).keep(n, scores=torch.from_numpy(logits), ctx=MaskContext(causal=False, n_heads=4))
    expected = reference(logits, **params)
    np.testing.assert_array_equal(np.broadcast_to(ours.numpy(), (4, n, n)), np.broadcast_to(expected, (4, n, n)))


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


@pytest.mark.parametrize(
    "stride, expected", [(8, 0.861), (16, 0.908), (23, 0.913), (32, 0.908), (64, 0.864), (256, 0.560)]
)
def test_strided_sparsity_matches_spec(stride, expected):
    n = 1024
    keep = masks.build("strided", n, stride=stride)
    assert round(1 - keep.sum() / (n * (n + 1) / 2), 3) == expected


def _causal_sparsity(keep: np.ndarray) -> float:
    n = keep.shape[-1]
    return 1 - keep.sum() / (keep.shape[0] * n * (n + 1) / 2) if keep.ndim == 3 else 1 - keep.sum() / (n * (n + 1) / 2)


@pytest.mark.parametrize("window, expected", [(64, 0.8717), (256, 0.5568)])
def test_sink_window_sparsity_matches_verify_script(window, expected):
    assert round(_causal_sparsity(masks.build("sink_window", 1024, sinks=4, window=window)), 4) == expected


@pytest.mark.parametrize(
    "stride, summary, expected",
    [(8, 1, 0.8673), (16, 2, 0.8605), (23, 2, 0.8918), (32, 4, 0.8468), (64, 8, 0.8195), (256, 32, 0.6556)],
)
def test_fixed_sparsity_matches_verify_script(stride, summary, expected):
    keep = masks.build("fixed", 1024, stride=stride, summary=summary)
    assert round(_causal_sparsity(keep), 4) == expected


def test_bigbird_sparsity_matches_verify_script():
    """b=16, g=1, r=2 at N=1024: 0.8634 whatever blocks are drawn (every draw has the same count)."""
    keep = masks.build("bigbird", 1024, block=16, n_global=1, n_random=2, n_heads=2)
    assert round(_causal_sparsity(keep), 4) == 0.8634


def test_nsa_count_matches_verify_script():
    """l' = 16, n = 8 (1 initial + 2 local), w = 64 at N=1024: s ≈ 0.726 and at most (n − 2)·l' + w = 160 keys
    per row (the local blocks lie inside the window)."""
    n = 1024
    logits = torch.randn(2, n, n, generator=torch.Generator().manual_seed(0))
    keep = masks.get("nsa", n=8, block=16, window=64).keep(n, scores=logits, ctx=MaskContext(n_heads=2)).numpy()
    assert int(keep.sum(-1).max()) == 160
    assert abs(_causal_sparsity(keep) - 0.7261) < 0.01


def test_closed_forms_are_the_spec_inverse():
    """Window, sinks + window, top-k and DSA take W = round(Winv(s)) (minus the sinks) without any search."""
    for s in (0.0, 0.5, 0.9, 0.99):
        w = window_for_sparsity(s, 1024)
        assert masks.resolve("sliding_window", 1024, s).window == w
        assert masks.resolve("topk", 1024, s).k == w
        assert masks.resolve("dsa", 1024, s).k == w
        assert masks.resolve("sink_window", 1024, s).window == max(1, w - 4)


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
    for name, bad in [
        ("sliding_window", {"window": 0}),
        ("chunked", {"chunk": 0}),
        ("nsa", {"n": 2}),
        ("dilated_window", {"dilation": 0}),
        ("moba", {"block": 0}),
        ("fixed", {"summary": 200}),
    ]:
        with pytest.raises(ValueError, match=name):
            masks.get(name, **bad)


def test_block_larger_than_text_works():
    for name, params in [
        ("moba", {"block": 500}),
        ("nsa", {"block": 500, "window": 3}),
        ("chunked", {"chunk": 500}),
        ("bigbird", {"block": 500}),
        ("quest", {"page": 500}),
        ("block_topk", {"block": 500}),
    ]:
        n = 20
        scores = np.random.default_rng(0).normal(size=(n, n)) if masks.REGISTRY[name].score_dependent else None
        keep = masks.build(name, n, scores=scores, **params)
        assert keep.shape[-2:] == (n, n) and keep[..., np.arange(n), np.arange(n)].all()


def test_available_is_complete():
    ids = [info["id"] for info in masks.available()]
    assert ids == masks.ids()
    for info, cls in zip(masks.available(), masks.REGISTRY.values(), strict=True):
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


def test_paper_sizes_are_the_defaults_of_long_texts():
    """From LONG_TEXT_TOKENS on, NSA takes the paper's 64-token blocks and 512-token window and Quest its 16-token
    pages (sizes passed explicitly win; the slider still sets the budget); below, the short-text defaults."""
    long, short = masks.LONG_TEXT_TOKENS, masks.LONG_TEXT_TOKENS - 1
    assert masks.paper_sizes("nsa", long) == {"block": 64, "window": 512}
    assert masks.paper_sizes("nsa", short) == {} and masks.paper_sizes("dsa", long) == {}
    assert masks.paper_sizes("quest", long) == {"page": 16}
    assert masks.paper_sizes("nsa", long, {"window": 64}) == {"block": 64}
    nsa = masks.resolve("nsa", long, None)
    assert (nsa.block, nsa.window, nsa.n) == (64, 512, 8)  # n: the default budget
    assert masks.resolve("nsa", short, None).block == 8
    assert masks.resolve("nsa", long, None, window=32).window == 32
    # DSA's k = 2048 at 8192 tokens: every row keeps min(i + 1, 2048) keys, 1 - (T·k - k(k-1)/2) / (T(T+1)/2)
    t, k = 8192, 2048
    dsa = masks.get("dsa", **masks.REGISTRY["dsa"].paper_params)
    assert dsa.realised_sparsity(t) == pytest.approx(1 - (t * k - k * (k - 1) / 2) / (t * (t + 1) / 2), abs=1e-12)
