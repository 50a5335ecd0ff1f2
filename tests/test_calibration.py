"""Calibrating score-dependent budgets on real scores (issue 13 §6).

A score-dependent mask's budget is first sized on surrogate scores (``Mask.with_sparsity``); on real attention its
choices overlap its forced parts (window, local blocks, own block) and keep fewer pairs, so the sparse pass sizes it
again per layer on the layer's own logits (``Mask.budget_for_scores`` / ``capture.Plan.target_sparsity``). Here: the
one budget search, the mask-level method on structured logits, the message of an out-of-reach request, and a
calibrated pass of the default model whose budgets a later pass reuses exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from tiny_models import build

from attnsparse_widget import costs, introspect, masks, sample_texts
from attnsparse_widget.capture import Plan, attention_active, layer_attention
from attnsparse_widget.introspect import layer_indexer, num_layers
from attnsparse_widget.masks.base import (
    SPARSITY_TOLERANCE,
    MaskContext,
    SparsityOutOfReach,
    budget_range_text,
    calibrated_per_layer,
    out_of_reach_message,
    search_budget,
    sparsity_shortfall,
    surrogate_scores,
    window_for_sparsity,
)
from attnsparse_widget.measure import sparsity_metrics
from attnsparse_widget.payload import info_payload
from attnsparse_widget.pipeline import Request, prepare
from attnsparse_widget.store import AttentionStore

pytestmark = pytest.mark.model

CALIBRATED = [m for m in masks.ids() if calibrated_per_layer(masks.get(m))]
MONOTONE = [m for m in CALIBRATED if m != "h2o"]  # H2O's greedy heavy hitters are not nested as the budget grows


def attention_like_logits(n: int, heads: int = 3, seed: int = 0) -> torch.Tensor:
    """Logits ``[H, n, n]`` shaped like a real layer's: a strong sink column, a local band, a few heavy columns,
    noise; -inf on future pairs."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    gap = np.maximum(i - j, 0)
    heavy = np.zeros(n)
    heavy[rng.choice(n, size=max(1, n // 20), replace=False)] = 2.0
    base = 4.0 * (j == 0) + 3.0 * np.exp(-gap / 4.0) + heavy[None, :]
    logits = base[None] + rng.normal(scale=0.7, size=(heads, n, n))
    logits = np.where(j <= i, logits, -np.inf)
    return torch.from_numpy(logits.astype(np.float32))


def sparsity_on(mask: masks.Mask, scores: torch.Tensor, ctx: MaskContext) -> float:
    n = scores.shape[-1]
    keep = mask.keep(n, scores=scores, ctx=ctx) & torch.ones(n, n, dtype=torch.bool).tril()
    return 1.0 - float(keep.sum()) / (n * (n + 1) / 2 * keep.shape[0])


# ------------------------------------------------------------------------------------------------ the one search
@pytest.mark.parametrize("start", [None, 1, 7, 20, 40, 1000, -5])
@pytest.mark.parametrize("target", [0.0, 0.13, 0.5, 0.52, 0.97, 1.0])
def test_search_budget_finds_the_nearest_from_any_start(start, target):
    values = {b: 1.0 - (b // 3) * 3 / 40 for b in range(1, 41)}  # a staircase falling from ~1 to 0
    calls: list[int] = []

    def s(b: int) -> float:
        calls.append(b)
        return values[b]

    best = search_budget(target, s, 1, 40, start)
    assert abs(values[best] - target) == min(abs(v - target) for v in values.values())
    assert len(calls) <= 16


def test_search_budget_from_a_good_start_is_cheap():
    s = {b: 1.0 - b / 100 for b in range(1, 101)}.__getitem__
    calls: list[int] = []
    best = search_budget(0.7, lambda b: calls.append(b) or s(b), 1, 100, 30)
    assert best == 30 and len(set(calls)) <= 3


# -------------------------------------------------------------------------------------------- the mask-level method
@pytest.mark.parametrize("name", MONOTONE)
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
def test_budget_for_scores_is_the_nearest_budget_on_these_scores(name, target):
    n = 72
    scores = attention_like_logits(n)
    ctx = MaskContext(n_heads=3, kv_groups=3)
    mask = masks.resolve(name, n, target, warn=False)
    budget = mask.budget_for_scores(target, scores, ctx)
    lo, hi = mask.budget_range(n, True)
    achieved = sparsity_on(mask.with_budget(budget), scores, ctx)
    best = min(abs(sparsity_on(mask.with_budget(b), scores, ctx) - target) for b in range(lo, hi + 1))
    assert abs(achieved - target) <= best + 1e-9, (name, budget, achieved)


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7, 0.9])
def test_budget_for_scores_h2o_is_within_one_step(target):
    n = 72
    scores = attention_like_logits(n)
    mask = masks.resolve("h2o", n, target, warn=False)
    budget = mask.budget_for_scores(target, scores)
    achieved = sparsity_on(mask.with_budget(budget), scores, MaskContext())
    assert abs(achieved - target) <= 2 / n + 1e-9


@pytest.mark.parametrize("name", ["vertical_slash", "nsa", "moba", "block_topk"])
def test_surrogate_budget_misses_on_real_like_scores_and_calibration_fixes_it(name):
    """The issue's failure in miniature: the budget sized on surrogate scores lands far from the request on
    attention-like logits (the choices overlap the forced parts); the one sized on the scores lands on it."""
    n, target = 256, 0.5
    scores = attention_like_logits(n, heads=3, seed=1)
    ctx = MaskContext(n_heads=3, kv_groups=3)
    mask = masks.resolve(name, n, target, warn=False)
    calibrated = mask.with_budget(mask.budget_for_scores(target, scores, ctx))
    assert abs(sparsity_on(calibrated, scores, ctx) - target) <= SPARSITY_TOLERANCE
    if name == "vertical_slash":
        assert sparsity_on(mask, scores, ctx) - target > 0.1  # the issue: 0.3 -> 0.565, 0.5 -> 0.735 on real text


def test_budget_for_scores_counts_only_the_allowed_pairs():
    """With the model's own mask excluding pairs (here: a sliding window of 64), sparsity is over the allowed ones."""
    n = 256
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (j <= i) & (i - j < 64)
    scores = attention_like_logits(n, heads=1).masked_fill(~allowed, float("-inf"))
    mask = masks.get("topk")
    k = mask.budget_for_scores(0.5, scores, allowed=allowed)
    keep = mask.with_budget(k).keep(n, scores=scores) & allowed
    assert abs(1 - float(keep.sum()) / float(allowed.sum()) - 0.5) <= 0.02
    assert k < window_for_sparsity(0.5, n)  # the causal closed form would keep far more


CALIBRATED = [m["id"] for m in masks.available() if calibrated_per_layer(masks.get(m["id"]))]


@pytest.mark.unit
@pytest.mark.parametrize("name", CALIBRATED)
@pytest.mark.parametrize("target", [0.3, 0.7])
def test_build_with_scores_sizes_the_budget_on_them(name, target):
    """``masks.build(name, T, sparsity=s, scores=S)`` meets ``s`` on *these* scores, or warns with what they gave
    (it used to keep the surrogate's budget: vertical_slash gave 0.48 for 0.3 on random-normal scores)."""
    n = 256
    scores = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keep = masks.build(name, n, sparsity=target, scores=scores)
    causal = np.tril(np.ones((n, n), bool))
    achieved = 1 - (keep & causal).sum() / causal.sum()  # counted here, not by the library
    said = [str(w.message) for w in caught if issubclass(w.category, SparsityOutOfReach)]
    if abs(achieved - target) > SPARSITY_TOLERANCE:
        assert len(said) == 1 and f"{achieved:.3f} is used" in said[0], (achieved, said)
    else:
        assert not said, said


def test_budget_for_scores_on_surrogate_scores_agrees_with_with_sparsity():
    """On the surrogate scores the calibration and the slider's own sizing are the same search (vertical-slash
    sizes on its canonical realisation instead: no score matrix stands for it, see its ``realised_sparsity``)."""
    n = 90
    for name in CALIBRATED:
        if name == "vertical_slash":
            continue
        mask = masks.resolve(name, n, 0.6, warn=False)
        b = getattr(mask.with_budget(mask.budget_for_scores(0.6, surrogate_scores(n))), str(mask.budget))
        assert abs(mask.with_budget(b).realised_sparsity(n) - mask.realised_sparsity(n)) <= 1e-9, name


# --------------------------------------------------------------------------------------------- wording and labels
def test_per_layer_budgets_in_the_label():
    mask = masks.get("moba")
    assert mask.label({0: 2, 1: 3, 2: 2}) == "moba(k=2–3 per layer, block=16)"
    assert mask.label({0: 2, 1: 2}) == "moba(k=2, block=16)"
    assert mask.label() == mask.label({}) == "moba(k=3, block=16)"
    assert budget_range_text({5: 7}) == "7"


def test_sparsity_shortfall_names_what_was_used_and_why():
    nsa = masks.get("nsa")
    assert sparsity_shortfall(nsa, 0.9, 0.885, 378, budgets={0: 3, 1: 3}) is None  # within the tolerance
    msg = sparsity_shortfall(nsa, 0.9, 0.877, 378, budgets={0: 3, 1: 3})
    assert msg is not None and msg.startswith("nsa: sparsity 0.900 cannot be reached: ")
    assert "0.877 is used (n=3, sized per layer on its scores)" in msg and "sparsest setting (n=3)" in msg
    assert nsa.fixed_part in msg and "378 tokens" in msg
    msg = sparsity_shortfall(masks.get("block_topk"), 0.5, 0.45, 40, budgets={0: 7, 1: 9})
    assert msg is not None and "top_k=7–9 per layer" in msg and "whole steps" in msg
    # one budget for every layer (static patterns): outside the range at this length, or between two steps
    strided = masks.get("strided", stride=14)
    msg = sparsity_shortfall(strided, 0.9, 0.859, 378)
    assert msg is not None and "0.859 is used (stride=14)" in msg and "this pattern reaches" in msg
    msg = sparsity_shortfall(masks.get("bigbird", n_random=3), 0.5, 0.55, 378, reach=(0.0, 0.9))
    assert msg is not None and "whole steps" in msg and "(n_random=3)" in msg
    msg = sparsity_shortfall(masks.get("dense"), 0.3, 0.0, 378)
    assert msg is not None and "0.000 is used" in msg and "no budget" in msg
    # a score-dependent mask sized without its scores (masks.build): the budget is what is used, the sparsity an
    # estimate on a stand-in score (the real scores move it: notebook 02's quest picture)
    quest = masks.get("quest", token_budget=24, page=8)
    msg = sparsity_shortfall(quest, 0.7, 0.649, 128, reach=(0.0, 0.649))
    assert msg is not None and "token_budget=24 is used (about 0.649 on a stand-in score" in msg
    assert "depends on the real scores" in msg and "0.649 is used" not in msg
    assert out_of_reach_message("x", 0.5, 0.4, "k=3", "why").startswith("x: sparsity 0.500 cannot be reached: why;")


# ------------------------------------------------------------------------------------------------------- dedupe
def test_costs_reuses_the_mask_arithmetic(default_model):
    for t in (1, 2, 10, 377, 4096):
        assert costs.allowed_pairs(t) == masks.base.allowed_pairs(t, t, True)
        for s in (0.0, 0.3, 0.9):
            assert costs.budget_for_sparsity(t, s) == window_for_sparsity(s, t)
    model, _ = default_model
    assert introspect.text_config(model) is introspect.text_config(model.config)


# ------------------------------------------------------------------------------- a calibrated pass of a real model
def captured(model, ids, plan: Plan) -> AttentionStore:
    store = AttentionStore(num_layers(model), model.config.num_attention_heads, ids.shape[1])
    plan.recorder = store
    with torch.inference_mode(), attention_active(model, plan):
        model(input_ids=ids, use_cache=False)
    return store


def overall(store: AttentionStore) -> float:
    return sparsity_metrics(store, None).achieved_sparsity


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vertical_slash", "block_topk", "h2o"])
def test_calibrated_pass_meets_the_request_and_its_budgets_replay_exactly(default_model, name):
    model, tok = default_model
    ids = tok(sample_texts()[0], return_tensors="pt").input_ids
    n, target = ids.shape[1], 0.5
    mask = masks.resolve(name, n, target, warn=False)
    plan = Plan(layer_of=layer_indexer(model), mask=mask, target_sparsity=target)
    store = captured(model, ids, plan)
    assert sorted(plan.budgets) == list(range(num_layers(model)))
    assert abs(overall(store) - target) <= SPARSITY_TOLERANCE, (plan.budgets, overall(store))

    again = captured(model, ids, Plan(layer_of=layer_indexer(model), mask=mask, budgets=dict(plan.budgets)))
    for a, b in zip(store.kept, again.kept, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["topk", "dsa"])
def test_masks_that_keep_a_count_by_position_are_calibrated_by_counting(name, monkeypatch):
    """Top-k and DSA keep min(allowed keys, k) in every row whatever the scores, so the calibration counts instead
    of selecting: the same budgets, per layer, as selecting at every candidate budget (Qwen2 with sliding layers:
    the allowed sets differ between layers)."""
    model = build("qwen2", n_layers=3)
    ids = torch.randint(3, 90, (1, 40), generator=torch.Generator().manual_seed(0))
    mask = masks.resolve(name, 40, 0.6, warn=False)
    plan = Plan(layer_of=layer_indexer(model), mask=mask, target_sparsity=0.6)
    counted = captured(model, ids, plan)
    monkeypatch.setattr(type(mask), "drops_by_position", False)
    selecting = Plan(layer_of=layer_indexer(model), mask=mask, target_sparsity=0.6)
    selected = captured(model, ids, selecting)
    assert plan.budgets == selecting.budgets and len(set(plan.budgets.values())) > 1  # the sliding layers differ
    for a, b in zip(counted.kept, selected.kept, strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------- the comparison, every mask
JOINED = "\n\n".join(sample_texts())  # 378 tokens of the default model (issue 13 §6)
REQUESTS = (0.3, 0.5, 0.7, 0.9)


@pytest.mark.slow
@pytest.mark.parametrize("name", masks.ids())
def test_every_mask_meets_the_request_or_says_what_it_used(default_model, name):
    """The 0.02 rule on the joined sample texts: the achieved sparsity is within 0.02 of the request, or one
    SparsityOutOfReach warning names the value used (also in the result's notes, which the widget shows).

    Runs the comparison's first stage (``pipeline.prepare``: the dense and sparse passes and the sparsity): it is
    where ``compare`` judges the request, and the later stages do not change the achieved sparsity."""
    for requested in REQUESTS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = prepare(default_model, Request(JOINED, mask=name, sparsity=requested, continuation_tokens=0))
        assert len(res.tokens) == 378
        achieved = res.metrics.achieved_sparsity
        said = [str(w.message) for w in caught if issubclass(w.category, SparsityOutOfReach)]
        if abs(achieved - requested) <= SPARSITY_TOLERANCE:
            assert not said, (requested, achieved, said)
        else:
            assert len(said) == 1 and f"{achieved:.3f} is used (" in said[0], (requested, achieved, said)
            assert said[0] in res.metrics.notes and said[0] in info_payload(res)["note"]
        if calibrated_per_layer(res.mask):
            assert sorted(res.sparse.budgets) == list(range(res.n_layers))
            if len(set(res.sparse.budgets.values())) > 1:
                assert "per layer" in res.mask_label and res.mask.budget not in res.mask_params


@pytest.mark.slow
def test_later_uses_of_a_calibrated_pass_apply_its_budgets(default_model):
    """A layer recomputed from a calibrated pass (long texts recompute layers on demand) is the layer the pass
    applied: the same per-layer budget, so the same keep-mask (the mask's own estimate would differ)."""
    model, _ = default_model
    res = prepare(default_model, Request(JOINED, mask="vertical_slash", sparsity=0.3, continuation_tokens=0))
    budgets = res.sparse.budgets
    layer = next(layer for layer, b in budgets.items() if b != res.mask.size)
    ids = torch.tensor([res.token_ids])
    kept = res.sparse.store.kept[layer]  # what the pass kept there, per head
    _, keep, allowed = layer_attention(model, ids, res.mask, layer, res.sparse.layer_outputs, res.sparse.seed, budgets)
    assert keep is not None and torch.equal((keep & allowed).sum(dim=(-1, -2)), kept)
    _, estimate, _ = layer_attention(model, ids, res.mask, layer, res.sparse.layer_outputs, res.sparse.seed)
    assert estimate is not None and not torch.equal((estimate & allowed).sum(dim=(-1, -2)), kept)
