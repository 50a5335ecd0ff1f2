"""The fast path (kernels.py): masked layers whose probabilities nobody reads run through FlexAttention or SDPA with
the keep-mask. Checked against the stock eager model handed the same keep-mask as an explicit additive float mask
(every tiny family, GQA and MQA, the models' own sliding windows) and on the default model at 1024 tokens.

Tolerances: logits 1e-4 absolute on tiny models (the kernels sum in another order), perplexity 1e-4 relative;
kernel outputs 1e-5 against a float64 softmax.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_capture_oracle import additive, eager, model_allowed, random_ids
from tiny_models import ToyTokenizer, build, configs

import attnsparse_widget as aw
from attnsparse_widget import costs, kernels, masks, measure
from attnsparse_widget.capture import Plan, attention_active
from attnsparse_widget.introspect import layer_indexer
from attnsparse_widget.passes import captured_pass

pytestmark = pytest.mark.model

FAST_FAMILIES = [name for name in configs() if name != "gemma2"]  # gemma2 soft-caps: its layers stay eager


def plain_pass(model, ids, mask, kernel):
    """A forward pass with the mask and nothing captured: every masked layer takes the fast path."""
    plan = Plan(layer_of=layer_indexer(model), mask=mask, kernel=kernel)
    with torch.no_grad(), attention_active(model, plan):
        return model(input_ids=ids).logits, plan


def one_explicit_mask(model, mask, n):
    """The keep-mask within the model's allowed pairs as an additive mask, one per layer type (the tiny models'
    layers share one static pattern)."""
    allowed = model_allowed(model, n)
    keep = torch.as_tensor(masks.build(mask, n, layer=0, n_heads=model.config.num_attention_heads))
    keep = keep if keep.dim() == 3 else keep[None]
    types = getattr(model.config, "layer_types", None)
    if types and len(set(types)) > 1:
        return {t: additive(keep & allowed[types.index(t)]) for t in set(types)}
    return additive(keep & allowed[0])


@pytest.mark.parametrize("kernel", kernels.KERNELS)
@pytest.mark.parametrize("mask_id", ["sliding_window", "sink_window", "strided"])
@pytest.mark.parametrize("family", FAST_FAMILIES)
def test_fast_path_equals_eager_with_explicit_mask(family, mask_id, kernel):
    model = build(family)
    n = 40
    ids = random_ids(n, seed=5)
    mask = masks.resolve(mask_id, n, 0.6)
    logits, plan = plain_pass(model, ids, mask, kernel)
    _, ref = eager(model, ids, one_explicit_mask(model, mask, n))
    assert float((logits - ref).abs().max()) <= 1e-4
    # the pass says which rows changed, as the eager path does (replays skip the rows before)
    assert plan.first_changed == plain_pass(model, ids, mask, "eager")[1].first_changed


def test_score_dependent_and_captured_layers_stay_eager(monkeypatch):
    """The fast path takes neither a mask read off the scores nor a layer someone records."""
    calls = []
    real = kernels.masked_attention

    def counted(*args):
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(kernels, "masked_attention", counted)
    model = build("llama")
    ids = random_ids(20)
    plain_pass(model, ids, masks.resolve("topk", 20, 0.5), None)
    captured_pass(model, ids, masks.resolve("sliding_window", 20, 0.5), seed=0, is_lm=True)
    assert calls == []
    plain_pass(model, ids, masks.resolve("sliding_window", 20, 0.5), None)
    assert calls == ["sdpa"] * model.config.num_hidden_layers  # short texts: SDPA with the mask


@pytest.mark.parametrize("keep_kind", ["window", "scattered"])
def test_kernels_equal_a_float64_softmax(keep_kind):
    """Both kernels against the definition, on random inputs with GQA and a length off the buckets."""
    g = torch.Generator().manual_seed(0)
    n, heads, kv, dim = 300, 6, 2, 16
    q = torch.randn(1, heads, n, dim, generator=g)
    k = torch.randn(1, kv, n, dim, generator=g)
    v = torch.randn(1, kv, n, dim, generator=g)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None]
    if keep_kind == "window":
        keep = ((j <= i) & (i - j < 70))[None]
    else:
        keep = (torch.rand(heads, n, n, generator=g) < 0.2) & (j <= i)
        keep |= torch.eye(n, dtype=torch.bool)
    scale = dim**-0.5
    kr, vr = (x.repeat_interleave(heads // kv, 1).double() for x in (k, v))
    scores = (q.double() @ kr.transpose(-1, -2) * scale).masked_fill(~keep, -math.inf)
    ref = torch.softmax(scores, -1) @ vr
    for kernel in kernels.KERNELS:
        out = kernels.masked_attention(q, k, v, keep, scale, kernel)
        assert out.shape == (1, heads, n, dim)
        assert float((out.double() - ref).abs().max()) <= 1e-5, kernel


def test_tiles_of_a_window_counted_by_hand():
    n = 4 * kernels.BLOCK
    i, j = torch.arange(n)[:, None], torch.arange(n)[None]
    keep = ((j <= i) & (i - j < kernels.BLOCK))[None]
    found = kernels.tiles(keep)
    # a window one tile wide touches the diagonal tile and the one left of it in every tile row
    assert found.live[0].int().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert not found.full.any()  # no tile has every pair kept (diagonal tiles stop at the diagonal)
    everything = torch.ones(1, n, n, dtype=torch.bool)
    assert kernels.tiles(everything).full.all()


def test_choose_kernel_by_length_and_shape(monkeypatch):
    cpu = torch.device("cpu")
    assert kernels.choose_kernel(1, 5000, cpu) == "sdpa"  # a decoding step
    assert kernels.choose_kernel(100, 100, cpu) == "sdpa"
    expected = "flex" if kernels.flex_available("cpu") else "sdpa"
    assert kernels.choose_kernel(kernels.FLEX_MIN_TOKENS, kernels.FLEX_MIN_TOKENS, cpu) == expected
    assert kernels.bucket(1) == kernels.BUCKET and kernels.bucket(kernels.BUCKET + 1) == 2 * kernels.BUCKET
    monkeypatch.setattr(kernels, "flex_usable", lambda device_type="cpu": True)  # as on a machine with CUDA
    cuda = torch.device("cuda")
    assert kernels.choose_kernel(4096, 4096, cuda) == "sdpa"  # the H200's crossover is higher than the CPU's
    assert kernels.choose_kernel(kernels.FLEX_MIN_TOKENS_CUDA, kernels.FLEX_MIN_TOKENS_CUDA, cuda) == "flex"


def test_time_attention_measures_both_kernels():
    g = torch.Generator().manual_seed(1)
    n = 256
    q = torch.randn(1, 4, n, 16, generator=g)
    k = torch.randn(1, 2, n, 16, generator=g)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None]
    keep = ((j <= i) & (i - j < 64))[None]
    timing = kernels.time_attention(q, k, k, keep, 0.25, repeats=1)
    assert timing.dense > 0 and timing.sparse > 0 and timing.kernel in kernels.KERNELS
    # 2 tile rows of 128: the causal tiles are 3, the window touches all 3 (its band crosses the tile edge)
    assert timing.skipped == pytest.approx(0.0)


@pytest.mark.slow
def test_default_model_at_1024_tokens_fast_path_equals_eager_with_explicit_mask(default_model):
    """The default model at 1024 tokens with a sinks + window mask at 0.9: the flex pass's perplexity equals the
    stock eager model handed the same mask to 1e-4 relative."""
    model, tok = default_model
    ids = tok(" ".join(aw.sample_texts()) * 4, return_tensors="pt").input_ids[:, :1024]
    assert ids.shape[1] == 1024
    mask = masks.resolve("sink_window", 1024, 0.9)
    logits, _ = plain_pass(model, ids, mask, "flex")
    _, ref = eager(model, ids, additive(torch.as_tensor(masks.build(mask, 1024, n_heads=1))))
    nll = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, 1:])
    ref_nll = torch.nn.functional.cross_entropy(ref[0, :-1].float(), ids[0, 1:])
    assert math.exp(float(nll)) == pytest.approx(math.exp(float(ref_nll)), rel=1e-4)


def test_compare_measures_attention_time_with_the_tiles_of_the_mask():
    """``time_attention=True``: seconds per forward for both kernels, and the skipped tiles of the sparse pass's
    keep-mask as costs.skippable_tiles counts them (numpy, 128-pair tiles)."""
    model = build("llama")
    text = "the keeper wrote in his log; the storm came from the west " * 5
    res = aw.compare(
        (model, ToyTokenizer()), text, mask="sliding_window", sparsity=0.8, per_layer=False, time_attention=True
    )
    m = res.metrics
    assert m.attention_time_dense > 0 and m.attention_time_sparse > 0
    assert m.attention_kernel == ("flex" if kernels.flex_available("cpu") else "sdpa")
    keep = res.keep_mask(0)
    assert m.attention_tiles_skipped == pytest.approx(costs.skippable_tiles(keep, tile=kernels.BLOCK))
    assert m.attention_tiles_skipped == pytest.approx(1 / 6)  # 3 tile rows: 6 causal tiles, the oldest one skipped
    assert "attention time" in res.summary()
    plain = aw.compare((model, ToyTokenizer()), text, mask="sliding_window", sparsity=0.8, per_layer=False)
    assert plain.metrics.attention_time_dense is None  # only when asked for


def test_timed_layers_spread_over_the_model():
    assert measure.timed_layers(30) == [0, 14, 29]  # round(14.5) is 14 (half to even)
    assert measure.timed_layers(2) == [0, 1]
    assert measure.timed_layers(1) == [0]


def test_flex_compilation_is_a_step_of_its_own_once_per_shape(monkeypatch):
    """The first flex call of a shape compiles (seconds): the pipeline runs it as its own step
    (``pipeline.COMPILING``) before the stage that needs it, once per process and shape; the stage after it
    compiles nothing more, and a second comparison of the same shapes has no such step."""
    if not kernels.flex_usable("cpu"):
        pytest.skip("no C++ compiler for inductor here")  # setup.sh installs one; CI always has it
    from attnsparse_widget import pipeline

    monkeypatch.setattr(kernels, "_flex_compiled", set())  # as in a fresh process (the compiled code is reused)
    model = build("llama")
    text = "the keeper wrote in his log; the storm came from the west " * 5

    def run() -> list[str]:
        seen: list[tuple[str, int]] = []
        request = pipeline.Request(text, mask="sliding_window", sparsity=0.8, per_layer=False, time_attention=True)
        for p in pipeline.stages((model, ToyTokenizer()), request):
            seen.append((p.stage, len(kernels._flex_compiled)))
        return seen

    first = run()
    stages = [s for s, _ in first]
    assert stages.index(pipeline.COMPILING) < stages.index(pipeline.ATTENTION_TIME)
    compiled_after = {s: n for s, n in first}
    assert compiled_after[pipeline.COMPILING] == 1 and compiled_after[pipeline.ATTENTION_TIME] == 1
    assert pipeline.COMPILING not in [s for s, _ in run()]


def test_replays_compile_only_where_they_take_flex(monkeypatch):
    if not kernels.flex_usable("cpu"):
        pytest.skip("no C++ compiler for inductor here")
    monkeypatch.setattr(kernels, "_flex_compiled", set())
    model = build("llama")
    text = "the keeper wrote in his log; the storm came from the west " * 5
    res = aw.compare((model, ToyTokenizer()), text, mask="sliding_window", sparsity=0.8, per_layer=False)
    assert len(res.token_ids) < kernels.FLEX_MIN_TOKENS
    assert not measure.flex_compile_pending(res, replays=True)  # short: the replays take sdpa
    topk = aw.compare((model, ToyTokenizer()), text, mask="topk", sparsity=0.8, per_layer=False)
    assert not measure.flex_compile_pending(topk, replays=True)  # score-dependent: the replays stay eager
    monkeypatch.setattr(kernels, "FLEX_MIN_TOKENS", 16)  # as if the text were long: the replays take flex
    assert measure.flex_compile_pending(res, replays=True)
    assert not measure.flex_compile_pending(topk, replays=True)
