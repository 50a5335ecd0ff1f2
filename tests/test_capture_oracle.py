"""Correctness of the capture path against independent oracles.

Dense: captured attention and logits equal transformers' stock eager attention with ``output_attentions=True``.
Sparse (static masks): equal the stock eager model run with the explicit keep-mask passed as a 4D additive float
mask (0 where kept, finfo.min where dropped; a 4D *boolean* mask would be added as 0/1 by eager, not applied).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_models import ToyTokenizer, build, configs

import attnsparse_widget as aw
from attnsparse_widget import masks, passes, pipeline
from attnsparse_widget import store as store_module
from attnsparse_widget.capture import Plan, attention_active
from attnsparse_widget.introspect import layer_indexer, num_layers
from attnsparse_widget.measure import output_metrics
from attnsparse_widget.metrics import Metrics
from attnsparse_widget.store import AttentionStore

pytestmark = pytest.mark.model

ATOL = 1e-5
STATIC_MASKS = [m for m, cls in masks.REGISTRY.items() if not cls.score_dependent]
MIN = torch.finfo(torch.float32).min
TOY_TEXT = "the keeper wrote in his log; the storm came from the west and the ships stayed in harbour"


def capture(model, ids, attention_mask=None, mask=None):
    """Run ``model`` through the attnsparse attention function; return (store, logits or hidden state)."""
    heads = model.config.get_text_config().num_attention_heads
    store = AttentionStore(num_layers(model), heads, ids.shape[1], batch=ids.shape[0])
    plan = Plan(layer_of=layer_indexer(model), mask=mask, recorder=store)
    with torch.no_grad(), attention_active(model, plan):
        out = model(input_ids=ids, attention_mask=attention_mask)
    return store, _main(out)


def eager(model, ids, attention_mask=None):
    """The same model with transformers' own eager attention and output_attentions=True."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=attention_mask, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    return out.attentions, _main(out)


def _main(out):
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state


def model_allowed(model, n: int) -> list[torch.Tensor]:
    """Per layer, the pairs the model's own config allows (causal plus its own sliding window), written from the
    config independently of the library."""
    cfg = model.config
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    causal = j <= i
    types = (
        getattr(cfg, "layer_types", None)
        or ["sliding_attention" if getattr(cfg, "sliding_window", None) else "full_attention"] * cfg.num_hidden_layers
    )
    window = getattr(cfg, "sliding_window", None)
    return [causal & (i - j < window) if t == "sliding_attention" else causal for t in types]


def additive(keep: torch.Tensor) -> torch.Tensor:
    """``[T, T]`` or ``[H, T, T]`` keep → ``[1, H|1, T, T]`` additive float mask."""
    keep = keep if keep.dim() == 3 else keep[None]
    return torch.where(keep, torch.tensor(0.0), torch.tensor(MIN))[None]


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    assert float((ours.float() - ref.float()).abs().max()) <= ATOL


TINY = list(configs())


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    return request.param, build(request.param, "eager" if request.param == "gemma2" else "sdpa")


def random_ids(n: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 90, (1, n), generator=g)


# ----------------------------------------------------------------------------------------------------- dense
def test_dense_capture_equals_eager_tiny(tiny):
    _, model = tiny
    ids = random_ids()
    store, logits = capture(model, ids)
    attentions, ref_logits = eager(model, ids)
    assert len(attentions) == num_layers(model)
    for layer, ref in enumerate(attentions):
        assert_close(store.probs[layer], ref)
    assert_close(logits, ref_logits)


def test_dense_capture_equals_eager_default_model(default_model):
    model, tok = default_model
    ids = tok("Attention sinks are the first tokens that every later token looks at.", return_tensors="pt").input_ids
    store, logits = capture(model, ids)
    attentions, ref_logits = eager(model, ids)
    for layer, ref in enumerate(attentions):
        assert_close(store.probs[layer], ref)
    assert_close(logits, ref_logits)


def test_dense_capture_equals_eager_encoder_with_padding(minilm):
    model, tok = minilm
    enc = tok(["The encoder reads both directions at once.", "Short one."], return_tensors="pt", padding=True)
    assert int(enc.attention_mask.sum()) < enc.attention_mask.numel()  # the batch really is padded
    store, hidden = capture(model, enc.input_ids, enc.attention_mask)
    attentions, ref_hidden = eager(model, enc.input_ids, enc.attention_mask)
    for layer, ref in enumerate(attentions):
        assert_close(store.probs[layer], ref)
    assert_close(hidden, ref_hidden)


# ---------------------------------------------------------------------------------------------------- sparse
@pytest.mark.parametrize("mask_id", STATIC_MASKS)
def test_static_sparse_equals_eager_with_explicit_mask_tiny(tiny, mask_id):
    name, model = tiny
    n = 48  # several blocks of every block pattern
    ids = random_ids(n, seed=1)
    mask = masks.resolve(mask_id, n, 0.4)
    heads = model.config.num_attention_heads
    per_layer = [torch.as_tensor(masks.build(mask, n, layer=layer, n_heads=heads)) for layer in range(3)]
    if any(not torch.equal(per_layer[0], k) for k in per_layer):
        # the pattern is seeded per layer (BigBird): one explicit eager mask serves one layer, so use a
        # one-layer model of the same family
        model = build(name, "eager" if name == "gemma2" else "sdpa", n_layers=1)
    store, logits = capture(model, ids, mask=mask)
    allowed = model_allowed(model, n)
    # per_layer has 3 entries, allowed one per layer of the model (1 for the one-layer rebuild)
    keep = [(k if k.dim() == 3 else k[None]) & a for k, a in zip(per_layer, allowed, strict=False)]
    types = getattr(model.config, "layer_types", None)
    if types and len(set(types)) > 1:  # Qwen2 / Gemma-2 alternate full and sliding layers: one mask per type
        explicit = {t: additive(keep[types.index(t)]) for t in set(types)}
    else:
        explicit = additive(keep[0])
    attentions, ref_logits = eager(model, ids, explicit)
    for layer, ref in enumerate(attentions):
        assert_close(store.probs[layer], ref)
        applied = store.keep[layer] if store.keep[layer] is not None else store.allowed[layer]
        assert torch.equal(applied[0].expand(heads, -1, -1), keep[layer].expand(heads, -1, -1))
    assert_close(logits, ref_logits)


@pytest.mark.parametrize("mask_id", [m for m in STATIC_MASKS if m != "dense"])
def test_static_sparse_equals_eager_default_model(default_model, mask_id):
    model, tok = default_model
    ids = tok(
        "Sparse attention keeps a few pairs and drops the rest. Here we check, layer by layer and head by "
        "head, that what the engine computes is exactly what the stock eager attention computes when it is "
        "handed the same mask explicitly, as an additive float mask.",
        return_tensors="pt",
    ).input_ids
    n = ids.shape[1]
    mask = masks.resolve(mask_id, n, 0.5)
    store, logits = capture(model, ids, mask=mask)
    keep = torch.as_tensor(masks.build(mask, n, n_heads=1))
    attentions, ref_logits = eager(model, ids, additive(keep))
    for layer in (0, 7, 29):
        assert_close(store.probs[layer], attentions[layer])
    assert_close(logits, ref_logits)


@pytest.mark.parametrize("mask_id", ["sliding_window", "sink_window", "strided"])
def test_static_sparse_equals_eager_encoder_with_padding(minilm, mask_id):
    model, tok = minilm
    enc = tok(
        ["Global and local attention in an encoder, both directions.", "Tiny text."], return_tensors="pt", padding=True
    )
    if not masks.REGISTRY[mask_id].supports_encoder:
        pytest.skip(f"{mask_id} is causal-only")
    n = enc.input_ids.shape[1]
    valid = enc.attention_mask.bool()
    mask = masks.resolve(mask_id, n, 0.4, causal=False)
    store, hidden = capture(model, enc.input_ids, enc.attention_mask, mask=mask)
    explicit = torch.full((2, 1, n, n), MIN)
    for b in range(2):
        m = int(valid[b].sum())  # right padding: the valid tokens are the first m
        sub = torch.as_tensor(masks.build(mask, m, causal=False))  # the pattern over the valid tokens only
        explicit[b, 0, :m, :m] = torch.where(sub, 0.0, MIN)
        explicit[b, 0, m:, :m] = 0.0  # padding queries: left as the model has them (all valid keys)
    attentions, ref_hidden = eager(model, enc.input_ids, explicit)
    for layer, ref in enumerate(attentions):
        assert_close(store.probs[layer][:, :, :, :], ref)
    assert_close(hidden, ref_hidden)


# ------------------------------------------------------------------------- attention metrics, measured in the pass
def numpy_attention_metrics(res) -> tuple[list[list[float]], list[list[float]]]:
    """Mass recall and row KL(sparse‖dense) per layer and head, with the spec's formulas in float64 numpy, from the
    full-resolution maps the comparison returns (the stores, checked against eager above)."""
    recall, kl = [], []
    for layer in range(res.n_layers):
        p = res.attention(layer).astype(np.float64)
        q = res.attention(layer, which="sparse").astype(np.float64)
        keep = res.keep_mask(layer)
        recall.append((p * keep).sum(-1).mean(-1).tolist())
        with np.errstate(divide="ignore", invalid="ignore"):
            kl.append(np.where(q > 0, q * np.log(q / np.maximum(p, 1e-30)), 0).sum(-1).mean(-1).tolist())
    return recall, kl


@pytest.fixture
def overview(monkeypatch):
    """Stores that keep no full-resolution maps (as for texts longer than the overview), whatever the length; the
    comparison's arrays are then recomputed by replaying one layer, which the dense oracle tests above check."""
    aw.clear_cache()
    monkeypatch.setattr(store_module, "retains", lambda *args, **kwargs: False)
    yield
    aw.clear_cache()


@pytest.mark.parametrize("mask_id", ["sink_window", "topk"])
def test_attention_metrics_measured_during_the_sparse_pass_match_numpy_tiny(tiny, mask_id, overview):
    """The sparse pass rebuilds each layer's dense probabilities from the dense pass's queries and keys (GQA,
    Gemma 2's soft-capping and sliding layers included) and measures recall and KL as it runs."""
    _, model = tiny
    res = aw.compare((model, ToyTokenizer()), TOY_TEXT, mask=mask_id, sparsity=0.5, per_layer=False)
    assert res.sparse.store.compared  # measured in the pass, not by replaying the layers
    recall, kl = numpy_attention_metrics(res)
    np.testing.assert_allclose(res.metrics.mass_recall_per_head, recall, rtol=1e-5)
    np.testing.assert_allclose(res.metrics.kl_per_head, kl, rtol=1e-4, atol=1e-6)


def test_attention_metrics_measured_during_the_pass_match_numpy_encoder(minilm, overview):
    res = aw.compare(minilm, "Sparse attention keeps some pairs and drops the rest.", mask="sliding_window")
    assert res.sparse.store.compared
    recall, kl = numpy_attention_metrics(res)
    np.testing.assert_allclose(res.metrics.mass_recall_per_head, recall, rtol=1e-5)
    np.testing.assert_allclose(res.metrics.kl_per_head, kl, rtol=1e-4, atol=1e-6)


def test_without_the_dense_queries_the_metrics_come_from_replayed_layers(monkeypatch, overview):
    """Above the query budget the dense pass keeps no queries; both passes' layers are then recomputed one by one
    and measured the same way: the same numbers."""
    model, tok = build("llama"), ToyTokenizer()
    measured = aw.compare((model, tok), TOY_TEXT, mask="topk", sparsity=0.5, per_layer=False)
    assert measured.sparse.store.compared
    aw.clear_cache()
    monkeypatch.setattr(passes, "QK_BUDGET", 0)
    replayed = aw.compare((model, tok), TOY_TEXT, mask="topk", sparsity=0.5, per_layer=False)
    assert replayed.dense.qk is None and not replayed.sparse.store.compared
    np.testing.assert_allclose(replayed.metrics.mass_recall_per_head, measured.metrics.mass_recall_per_head, rtol=1e-6)
    np.testing.assert_allclose(replayed.metrics.kl_per_head, measured.metrics.kl_per_head, rtol=1e-5, atol=1e-7)
    assert replayed.metrics.mass_recall_min == pytest.approx(measured.metrics.mass_recall_min, rel=1e-6)


def test_rows_before_the_first_changed_one_are_taken_from_the_dense_pass(monkeypatch):
    """A causal model's rows before the first one any mask changed come out of the sparse pass as out of the dense
    one, bit for bit; output_metrics takes their loss and argmax from the dense pass. Computing every row instead
    gives the same metrics. (The captured pass: a view-first pass runs its masked layers on another kernel, equal
    to float rounding; test_long_context.py checks it.)"""
    monkeypatch.setattr(pipeline, "view_first", lambda *args: False)
    model, tok = build("llama"), ToyTokenizer()
    text = (TOY_TEXT + " ") * 4  # > 256 tokens: the window leaves the first chunks of 128 positions unchanged
    res = aw.compare((model, tok), text, mask="sliding_window", sparsity=0.3, per_layer=False, continuation_tokens=0)
    first = min(res.sparse.first_changed.values())
    assert first >= 128, first  # at least one chunk is skipped
    everything = copy.copy(res.sparse)
    everything.first_changed = {0: 0}  # as if the first row had changed: every row computed
    m = Metrics(res.metrics.requested_sparsity, res.metrics.achieved_sparsity, [])
    output_metrics(m, res.dense, everything)
    assert torch.equal(everything.nll, res.sparse.nll) and torch.equal(everything.argmax, res.sparse.argmax)
    assert m.next_token_kl == pytest.approx(res.metrics.next_token_kl, rel=1e-6, abs=1e-9)
    assert m.output_relative_error == pytest.approx(res.metrics.output_relative_error, rel=1e-6, abs=1e-9)
    assert m.sparse_ppl == res.metrics.sparse_ppl
