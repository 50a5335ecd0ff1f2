"""compare(): the public API, its metrics against independent recomputation, and its promises about the user's
model and about bad input."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from model_state import assert_unchanged, snapshot
from tiny_models import ToyTokenizer, build

import attnsparse_widget as aw
from attnsparse_widget import masks
from attnsparse_widget.capture import Plan, attention_active
from attnsparse_widget.introspect import layer_indexer, layer_stack
from attnsparse_widget.metrics import token_nll

pytestmark = pytest.mark.model

TEXT = (
    "The lighthouse keeper wrote in his log every evening. The storm came from the west, and the ships stayed in "
    "the harbour until the wind turned."
)


@pytest.fixture(scope="module")
def smol(default_model):
    return default_model


@pytest.fixture(scope="module")
def res(smol):
    return aw.compare(smol, TEXT, mask="sink_window", sparsity=0.5, continuation_tokens=8)


# --------------------------------------------------------------------------------------------------- the API
def test_result_shapes_and_types(res, smol):
    model, _ = smol
    n = len(res.tokens)
    assert res.n_layers == 30 and res.n_heads == 9
    for layer in (0, 29):
        dense = res.attention(layer)
        sparse = res.attention(layer, which="sparse")
        keep = res.keep_mask(layer)
        assert dense.shape == sparse.shape == keep.shape == (9, n, n)
        assert dense.dtype == np.float32 and keep.dtype == bool
        np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(sparse.sum(-1), 1.0, atol=1e-5)
        assert np.all(sparse[~keep] == 0)  # dropped pairs carry exactly zero probability
        assert keep[:, np.arange(n), np.arange(n)].all()  # the diagonal is always kept
        assert not np.triu(keep, 1).any()  # never a future key
    assert all("Ġ" not in t for t in res.tokens)
    assert "".join(res.tokens) == TEXT
    assert res.mask.id == "sink_window" and res.mask.params()["sinks"] == 4
    assert isinstance(res.continuations["dense"], str) and isinstance(res.continuations["sparse"], str)
    assert model.config._attn_implementation == "sdpa"


def test_metrics_are_complete_and_consistent(res):
    m = res.metrics
    assert m.requested_sparsity == 0.5
    assert abs(m.achieved_sparsity - 0.5) < 0.03
    assert m.dense_ppl > 1 and m.sparse_ppl > 1
    assert math.isclose(m.delta_ppl, m.sparse_ppl - m.dense_ppl)
    assert math.isclose(m.delta_nll, math.log(m.sparse_ppl) - math.log(m.dense_ppl), rel_tol=1e-6)
    assert len(m.per_layer_delta_ppl) == len(m.cumulative_delta_ppl) == len(m.mass_recall) == len(m.kl) == 30
    assert np.array(m.mass_recall_per_head).shape == (30, 9) == np.array(m.achieved_sparsity_per_head).shape
    assert 0 <= m.mass_recall_min <= m.mass_recall_p5 <= min(m.mass_recall) <= 1
    assert 0 <= m.top1_agreement <= 1 and m.next_token_kl >= 0
    assert math.isclose(m.cumulative_delta_ppl[-1], m.delta_ppl)
    d = m.to_dict()
    assert d["per_layer_delta_ppl"] == m.per_layer_delta_ppl and "kl_per_head" in d


def test_recall_kl_and_sparsity_match_a_numpy_recomputation(res):
    """The metrics recomputed in numpy from the returned arrays, with the spec's formulas."""
    for layer in (0, 13, 29):
        p = res.attention(layer).astype(np.float64)
        q = res.attention(layer, which="sparse").astype(np.float64)
        keep = res.keep_mask(layer)
        recall = (p * keep).sum(-1).mean(-1)
        np.testing.assert_allclose(res.metrics.mass_recall_per_head[layer], recall, rtol=1e-5)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(q > 0, q * np.log(q / np.maximum(p, 1e-30)), 0).sum(-1).mean(-1)
        np.testing.assert_allclose(res.metrics.kl_per_head[layer], kl, rtol=1e-4, atol=1e-6)
        n = keep.shape[-1]
        np.testing.assert_allclose(
            res.metrics.achieved_sparsity_per_head[layer], 1 - keep.sum((-1, -2)) / (n * (n + 1) / 2), atol=1e-9
        )


def test_perplexity_matches_a_direct_recomputation(res, smol):
    model, _ = smol
    ids = torch.tensor([res.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0]  # the model's own sdpa attention
    nll = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:])
    assert math.isclose(res.metrics.dense_ppl, math.exp(float(nll)), rel_tol=1e-4)


def test_delta_nll_noise_matches_a_numpy_recomputation(res, smol):
    """The standard error of ΔNLL from per-token losses of the stock model (dense) and a plain full pass under the
    mask (sparse), with numpy's sample standard deviation."""
    model, _ = smol
    ids = torch.tensor([res.token_ids])
    plan = Plan(layer_of=layer_indexer(model), mask=res.mask, sparse_layers=frozenset(range(30)),
                budgets=res.sparse.budgets)  # fmt: skip
    with torch.no_grad():
        dense = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:], reduction="none")
        with attention_active(model, plan):
            sparse = torch.nn.functional.cross_entropy(model(ids).logits[0, :-1], ids[0, 1:], reduction="none")
    diff = (sparse - dense).double().numpy()
    assert math.isclose(res.metrics.delta_nll_se, diff.std(ddof=1) / math.sqrt(diff.size), rel_tol=1e-3)
    assert math.isclose(res.metrics.delta_nll, diff.mean(), rel_tol=1e-3)


def test_a_mask_that_lowers_perplexity_says_whether_that_is_noise(smol):
    """A sparse run below dense looks like a bug: the result's notes say whether it is within the text's noise."""
    below = [
        aw.compare(smol, TEXT, mask=mask, sparsity=s, per_layer=False, continuation_tokens=0)
        for mask, s in [("dsa", 0.6), ("topk", 0.3), ("sliding_window", 0.1), ("sink_window", 0.2)]
    ]
    below = [r for r in below if r.metrics.delta_nll < 0]
    assert below, "no mask lowered the perplexity of TEXT: choose another case"
    for r in below:
        m = r.metrics
        said = [n for n in m.notes if "lowers perplexity" in n]
        assert len(said) == 1 and f"{m.delta_nll:+.3f}" in said[0] and f"{2 * m.delta_nll_se:.3f}" in said[0]
        assert ("within this text's noise" in said[0]) == (-m.delta_nll <= 2 * m.delta_nll_se)


def full_pass_ppl(model, res, sparse_layers) -> float:
    """The plain way: one full forward pass with the mask at ``sparse_layers`` only, its perplexity."""
    ids = torch.tensor([res.token_ids])
    plan = Plan(
        layer_of=layer_indexer(model), mask=res.mask, sparse_layers=frozenset(sparse_layers), budgets=res.sparse.budgets
    )
    with torch.no_grad(), attention_active(model, plan):
        logits = model(input_ids=ids).logits[0]
    return math.exp(float(token_nll(logits, ids[0]).mean()))


def assert_curves_equal_full_passes(model, res, layers) -> None:
    dense = res.metrics.dense_ppl
    for layer in layers:
        assert math.isclose(
            res.metrics.per_layer_delta_ppl[layer] + dense, full_pass_ppl(model, res, {layer}), rel_tol=1e-5
        ), layer
        assert math.isclose(
            res.metrics.cumulative_delta_ppl[layer] + dense, full_pass_ppl(model, res, range(layer + 1)), rel_tol=1e-5
        ), layer


@pytest.mark.parametrize("layer", [0, 11, 29])
def test_per_layer_curves_equal_full_passes_without_replay(res, smol, layer):
    """The replay shortcut against the plain way: a full forward pass with the mask at the chosen layers."""
    assert_curves_equal_full_passes(smol[0], res, [layer])


def test_dense_pass_is_cached_across_masks(res, smol):
    other = aw.compare(smol, TEXT, mask="sliding_window", sparsity=0.3, per_layer=False, continuation_tokens=8)
    assert other.dense.layer_outputs is res.dense.layer_outputs
    assert other.sparse.layer_outputs is not res.sparse.layer_outputs
    assert other.mask.id == "sliding_window"


def test_score_dependent_mask_keeps_topk_per_row(smol):
    r = aw.compare(smol, TEXT, mask="topk", sparsity=0.6, per_layer=False, continuation_tokens=0)
    n = len(r.tokens)
    k = r.mask.params()["k"]
    keep = r.keep_mask(5)
    np.testing.assert_array_equal(keep.sum(-1), np.minimum(np.arange(n) + 1, k)[None].repeat(9, 0))
    assert abs(r.metrics.achieved_sparsity - 0.6) < 0.03
    # top-k keeps the highest-scoring keys: the sparse pass's own dense softmax ranks them, so recall beats a
    # window of the same size on this layer
    assert r.continuations == {}


def test_explicit_budget_parameter_instead_of_sparsity(smol):
    r = aw.compare(smol, TEXT, mask="sliding_window", window=8, per_layer=False, continuation_tokens=0)
    assert r.mask.params()["window"] == 8 and r.metrics.requested_sparsity is None
    n = len(r.tokens)
    assert math.isclose(r.metrics.achieved_sparsity, 1 - masks.base.window_count(n, 8) / (n * (n + 1) / 2))


def test_summary_is_readable(res):
    text = res.summary()
    assert "sink_window" in text and "perplexity" in text and "continuation" in text
    assert "post-hoc" in text


def test_next_token_top(res):
    top = res.next_token_top(-1, k=5)
    assert len(top["dense"]) == 5 and len(top["sparse"]) == 5
    probs = [p for _, p in top["dense"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


# ---------------------------------------------------------------------------------------------- the encoder
def test_encoder_compare(minilm):
    r = aw.compare(
        minilm, "The encoder reads in both directions.", mask="sliding_window", sparsity=0.5, continuation_tokens=5
    )
    assert r.causal is False
    assert r.metrics.dense_ppl is None and r.metrics.per_layer_delta_ppl is None
    assert r.metrics.output_relative_error > 0
    keep = r.keep_mask(0)
    assert np.triu(keep, 1).any()  # bidirectional: keys after the query are allowed
    assert r.continuations == {}
    with pytest.raises(ValueError, match="causal"):
        aw.compare(minilm, "text", mask="h2o", sparsity=0.5)


# ----------------------------------------------------------------------------------- the user's model, unchanged
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_model_unchanged_after_compare(family):
    model = build(family)
    model.train()  # the user's mode must come back too
    ids = torch.randint(3, 90, (1, 10))
    before = snapshot(model, ids)
    aw.compare((model, ToyTokenizer()), "hello sparse world", mask="strided", sparsity=0.5, continuation_tokens=3)
    aw.compare((model, ToyTokenizer()), "hello sparse world", mask="topk", sparsity=0.5, continuation_tokens=3)
    assert_unchanged(model, ids, before)


def test_no_deprecation_warnings_from_transformers():
    """The engine passes and reads the KV cache under the name this transformers takes (``cache`` in later 5.x,
    ``past_key_values`` before), so a compare with continuations and per-layer replays logs no deprecation."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    library_logger = logging.getLogger("transformers")
    logging.Logger.warning_once.cache_clear()  # transformers logs each message once per process
    library_logger.addHandler(handler)
    try:
        aw.compare(
            (build("llama"), ToyTokenizer()),
            "hello sparse world again",
            mask="sink_window",
            sparsity=0.5,
            continuation_tokens=3,
        )
    finally:
        library_logger.removeHandler(handler)
    assert not [m for m in messages if "deprecat" in m.lower()], messages


class Exploding(masks.SlidingWindow if hasattr(masks, "SlidingWindow") else masks.REGISTRY["sliding_window"]):
    """A mask that fails inside the forward pass, at layer 1."""

    def pattern(self, q, k, ctx):
        if ctx.layer == 1:
            raise self.error
        return super().pattern(q, k, ctx)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_model_unchanged_after_compare_raised(error):
    model = build("llama")
    ids = torch.randint(3, 90, (1, 10))
    before = snapshot(model, ids)
    bad = Exploding(window=3)
    object.__setattr__(bad, "error", error)
    with pytest.raises(type(error)):
        aw.compare((model, ToyTokenizer()), "hello sparse world", mask=bad, continuation_tokens=2)
    assert_unchanged(model, ids, before)
    assert layer_stack(model) is not None


# -------------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def tiny_gpt2():
    return build("gpt2"), ToyTokenizer()


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(text=""), ValueError, "empty"),
        (dict(text="   \n"), ValueError, "empty"),
        (dict(text=42), TypeError, "text must be a str"),
        (dict(text="x" * 200), ValueError, "max_tokens=128"),
        (dict(sparsity=-0.1), ValueError, r"\[0, 1\)"),
        (dict(sparsity=1.0), ValueError, r"\[0, 1\)"),
        (dict(sparsity=float("nan")), ValueError, r"\[0, 1\)"),
        (dict(sparsity="half"), TypeError, "number"),
        (dict(mask="sliding_windw"), ValueError, "Did you mean 'sliding_window'"),
        (dict(mask="nope"), ValueError, "Valid ids: dense, sliding_window"),
        (dict(mask="sliding_window", windw=3), ValueError, "no parameter 'windw'.*window"),
        (dict(mask="sliding_window", window=0), ValueError, "window must be >= 1"),
        (dict(mask="sliding_window", sparsity=0.5, window=4), ValueError, "either sparsity"),
    ],
)
def test_bad_input_gets_a_clear_error(tiny_gpt2, kwargs, error, pattern):
    model, tok = tiny_gpt2
    args = {"text": "hello world", "mask": "sink_window", **kwargs}
    with pytest.raises(error, match=pattern):
        aw.compare((model, tok), continuation_tokens=0, per_layer=False, **args)


def test_long_text_truncates_with_max_tokens(tiny_gpt2):
    model, tok = tiny_gpt2
    r = aw.compare((model, tok), "x" * 200, max_tokens=128, per_layer=False, continuation_tokens=0)
    assert len(r.tokens) == 128


def test_unsupported_model_is_named():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    model = GPTNeoForCausalLM(
        GPTNeoConfig(
            vocab_size=96,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            attention_types=[[["global", "local"], 1]],
            max_position_embeddings=64,
        )
    )
    with pytest.raises(aw.UnsupportedModelError, match="GPTNeoForCausalLM.*Families that work"):
        aw.compare((model, ToyTokenizer()), "hello", per_layer=False, continuation_tokens=0)


def test_two_threads_on_one_model_do_not_interfere():
    """Two widgets on the same model compute in two threads: each comparison equals the one computed alone."""
    import threading

    model, tok = build("llama"), ToyTokenizer()
    jobs = [("the first text, with its own mask", "sink_window", 0.5), ("and another one", "topk", 0.3)]
    alone = [aw.compare((model, tok), t, mask=m, sparsity=s, continuation_tokens=4) for t, m, s in jobs]
    aw.clear_cache()
    together: list = [None, None]
    errors: list = []

    def run(i: int) -> None:
        try:
            for _ in range(3):
                t, m, s = jobs[i]
                together[i] = aw.compare((model, tok), t, mask=m, sparsity=s, continuation_tokens=4)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for a, b in zip(alone, together, strict=True):
        assert (
            a.metrics.sparse_ppl == b.metrics.sparse_ppl
            and a.metrics.per_layer_delta_ppl == b.metrics.per_layer_delta_ppl
        )
        assert np.array_equal(a.attention(1, "sparse"), b.attention(1, "sparse"))
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma", "mistral"])
@pytest.mark.parametrize("mask", ["sink_window", "topk", "h2o", "bigbird"])
def test_per_layer_shortcuts_equal_full_passes_tiny(family, mask):
    """Replays that skip unchanged prefix positions (cache of the dense keys/values) or score only later positions
    give what plain full passes with the mask at those layers give, for every layer."""
    model, tok = build(family), ToyTokenizer()
    aw.clear_cache()
    res = aw.compare(
        (model, tok), "the quick brown fox jumps over the lazy dog " * 2, mask=mask, sparsity=0.6, continuation_tokens=0
    )
    assert_curves_equal_full_passes(model, res, range(res.n_layers))
