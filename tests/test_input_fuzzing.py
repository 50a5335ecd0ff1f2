"""Fuzzed and malformed input: ``compare``, the widget and every mask either work or raise a ``ValueError`` /
``TypeError`` whose message names the bad value and says what to do (and the widget shows that message and runs
the next valid input).

Texts are tokenised by the default model's real tokenizer (byte-level BPE, any Unicode); the model under them is a
tiny randomly initialised Llama with the same vocabulary and 8192 positions, so a 5000-token text runs in seconds.
A few texts also run on the default model itself.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm
from transformers import AutoModelForCausalLM, LlamaConfig

import attnsparse_widget as aw
from attnsparse_widget import masks
from attnsparse_widget.masks.base import SparsityOutOfReach
from attnsparse_widget.widget import AttentionDiffWidget

pytestmark = pytest.mark.model

# derandomize: the same examples on every run (a failure reproduces)
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
QUICK = dict(per_layer=False, continuation_tokens=0)
HOSTILE = [
    "🦙🔥 naïve café — 東京で猫が寝ている。 Привет, мир! مرحبا بالعالم 👩🏽‍💻",
    "tab\there, bell\x07, escape\x1b[31m red, form feed\x0c, DEL\x7f, zero-width\u200bjoiner\u200d",
    "\u202eright-to-left override\u202c and combining a\u0301\u0301\u0301",
    "<img src=x onerror=alert(1)> <script>alert('x')</script> </div> \"quotes\" 'single' back\\slash",
    "x",  # one token
    "\n\n\nnewlines only at the start",
]


@pytest.fixture(scope="module")
def tok(default_model):
    return default_model[1]


@pytest.fixture(scope="module")
def tiny(tok):
    """A 2-layer Llama with the default model's vocabulary and 8192 positions (random weights)."""
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    return model, tok


def check_result(res: aw.Comparison, n_tokens: int | None = None) -> None:
    """A comparison that worked: the right number of tokens, finite probabilities, sane metrics."""
    if n_tokens is not None:
        assert len(res.tokens) == n_tokens
    m = res.metrics
    assert 0.0 <= m.achieved_sparsity <= 1.0
    for layer in (0, res.n_layers - 1):
        for which in ("dense", "sparse"):
            probs = res.attention(layer, which)
            assert np.isfinite(probs).all()
            np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)  # no empty row, ever
    if len(res.tokens) > 1:
        assert math.isfinite(m.dense_ppl) and math.isfinite(m.sparse_ppl)
    else:
        assert math.isnan(m.dense_ppl) and m.notes  # said why


def mentions(err: BaseException, *parts: str) -> None:
    text = str(err)
    for part in parts:
        assert part in text, f"{part!r} not in the message {text!r}"


# ------------------------------------------------------------------------------------------------------- texts
@pytest.mark.parametrize("text", HOSTILE, ids=["scripts", "control", "bidi", "html", "one-token", "newlines"])
def test_unusual_texts_work_on_the_default_model(default_model, text):
    res = aw.compare(default_model, text, mask="sink_window", sparsity=0.5, continuation_tokens=3, per_layer=False)
    check_result(res)
    # the tokens decode back to the text (nothing dropped or mangled on the way to the labels)
    assert "".join(res.tokens) == default_model[1].decode(res.token_ids)


@FUZZ
@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=0, max_size=60))
def test_any_text_works_or_says_why(tiny, text):
    if not text.strip() or "\x00" in text:
        with pytest.raises(ValueError) as err:
            aw.compare(tiny, text, **QUICK)
        mentions(err.value, "text")
        assert "remove it" in str(err.value) or "pass at least one word" in str(err.value)
        return
    check_result(aw.compare(tiny, text, **QUICK))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("a\x00b", "NUL"),
        ("half a pair \ud83d here", "surrogate"),
    ],
)
def test_unusable_texts_get_a_clear_error(tiny, text, fragment):
    with pytest.raises(ValueError, match=fragment) as err:
        aw.compare(tiny, text, **QUICK)
    assert "text" in str(err.value)


@pytest.mark.parametrize("text", [None, 42, b"bytes", ["a list"]])
def test_text_of_the_wrong_type(tiny, text):
    with pytest.raises(TypeError, match=f"text must be a str, got {type(text).__name__}"):
        aw.compare(tiny, text, **QUICK)


@pytest.mark.slow
def test_five_thousand_tokens(tiny, tok):
    text = " ".join(f"word{i % 97}" for i in range(2600))
    n = len(tok(text).input_ids)
    assert n >= 5000
    res = aw.compare(tiny, text, mask="sink_window", sparsity=0.9, **QUICK)
    check_result(res, n)
    assert not res.sparse.store.retain  # pooled overview: memory stays bounded
    with pytest.raises(ValueError, match="max_tokens=8192"):  # past the model's positions: say how to truncate
        aw.compare(tiny, text * 2, **QUICK)
    assert len(aw.compare(tiny, text * 2, max_tokens=300, **QUICK).tokens) == 300


# --------------------------------------------------------------------------------------------------- sparsity
bad_or_good_sparsity = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3),
    st.text(max_size=4),
    st.booleans(),
    st.just(0.999),
    st.just(1.0),
    st.just(-0.1),
    st.just(0.0),
)


@FUZZ
@given(sparsity=bad_or_good_sparsity)
def test_any_sparsity_works_or_names_the_value(tiny, sparsity):
    valid = (
        not isinstance(sparsity, (bool, str))
        and isinstance(sparsity, (int, float))
        and math.isfinite(sparsity)
        and 0 <= sparsity < 1
    )
    if valid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SparsityOutOfReach)
            check_result(aw.compare(tiny, "The cat sat on the mat.", mask="topk", sparsity=sparsity, **QUICK))
        return
    with pytest.raises((ValueError, TypeError)) as err:
        aw.compare(tiny, "The cat sat on the mat.", mask="topk", sparsity=sparsity, **QUICK)
    mentions(err.value, repr(sparsity), "[0, 1)")


# ------------------------------------------------------------------------------------------------------ masks
param_values = st.one_of(
    st.integers(-5, 5000), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.none(), st.booleans()
)


@FUZZ
@given(name=st.sampled_from(masks.ids()), data=st.data(), n=st.integers(1, 40))
def test_any_mask_parameter_works_or_names_it(name, data, n):
    params = masks.REGISTRY[name]().params()
    if not params:
        with pytest.raises(ValueError, match="has no parameter 'window'; its parameters: none"):
            masks.build(name, n, window=3)
        return
    param = data.draw(st.sampled_from(sorted(params)), label="param")
    value = data.draw(param_values, label="value")
    scores = np.random.default_rng(0).normal(size=(n, n)) if masks.REGISTRY[name].score_dependent else None
    try:
        keep = masks.build(name, n, scores=scores, **{param: value})
    except (ValueError, TypeError) as err:
        mentions(err, param, repr(value))
        return
    assert keep.dtype == bool and keep.shape[-2:] == (n, n)
    assert keep.diagonal(axis1=-2, axis2=-1).all() and not np.triu(keep, 1).any()  # diagonal kept, no future


@pytest.mark.parametrize("name", masks.ids())
def test_unknown_parameter_lists_the_valid_ones(name):
    with pytest.raises(ValueError, match=f"mask '{name}' has no parameter 'bogus'; its parameters: "):
        masks.build(name, 8, bogus=1)


@pytest.mark.parametrize(
    "name, params",
    [
        ("sliding_window", {"window": 0}),
        ("sink_window", {"sinks": -1}),
        ("bigbird", {"block": 0}),
        ("nsa", {"block": 0}),
        ("block_topk", {"block": 0}),
        ("strided", {"stride": 0}),
        ("topk", {"k": 0}),
    ],
)
def test_parameters_out_of_range_name_the_minimum(tiny, name, params):
    ((param, value),) = params.items()
    with pytest.raises(ValueError, match=f"{param} must be >= .*got {value}"):
        aw.compare(tiny, "The cat sat on the mat.", mask=name, **params, **QUICK)


@pytest.mark.parametrize("name", [m for m in masks.ids() if masks.REGISTRY[m].budget is not None])
@pytest.mark.parametrize("sparsity", [0.0, 0.999])
def test_every_mask_at_the_extremes_on_a_short_text(tiny, name, sparsity):
    """Budgets, blocks and windows far larger than a 7-token text, or a sparsity no pattern can reach there: the
    mask does what it can (with a warning naming the reachable range), and no row is ever empty."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SparsityOutOfReach)
        res = aw.compare(tiny, "The cat sat on the mat.", mask=name, sparsity=sparsity, **QUICK)
    check_result(res)


def test_blocks_larger_than_the_text(tiny):
    res = aw.compare(tiny, "The cat sat.", mask="block_topk", block=64, top_k=1, **QUICK)
    check_result(res)
    assert res.metrics.achieved_sparsity == 0.0  # one block holds the whole text: nothing to drop


# ----------------------------------------------------------------------------------------------------- widget
@pytest.fixture
def comm():
    setup_test_comm()
    yield
    teardown_test_comm()


WIDGET_CASES = [
    ("text", "", "empty"),
    ("text", "a\x00b", "NUL"),
    ("sparsity", float("nan"), "nan"),
    ("sparsity", float("inf"), "inf"),
    ("sparsity", 1.0, "[0, 1)"),
    ("sparsity", -0.1, "-0.1"),
    ("mask", "no_such_mask", "Valid ids"),
    ("mask_params", {"windw": 3}, "'windw'"),
    ("mask_params", {"window": 0}, "window must be >= 1"),
    ("mask_params", {"window": "wide"}, "'wide'"),
]


@pytest.mark.parametrize("trait, value, fragment", WIDGET_CASES, ids=[f"{t}={v!r}" for t, v, _ in WIDGET_CASES])
def test_widget_shows_the_message_and_runs_the_next_valid_input(comm, tiny, trait, value, fragment):
    w = AttentionDiffWidget(tiny, threaded=False, text="The cat sat on the mat.", per_layer=False)
    good = w.result
    assert good is not None
    setattr(w, trait, value)
    assert fragment in w.status["error"] and w.status["busy"] is False
    setattr(w, trait, {"text": "The dog sat on the log.", "sparsity": 0.3, "mask": "topk", "mask_params": {}}[trait])
    assert w.status["error"] is None and w.result is not None and w.view["figure"]
    w.close()


@FEW
@given(text=st.text(min_size=1, max_size=40))
def test_widget_on_fuzzed_text(tiny, text):
    setup_test_comm()
    try:
        w = AttentionDiffWidget(tiny, threaded=False, text=text, per_layer=False)
        if text.strip() and "\x00" not in text:
            assert w.status["error"] is None and w.tokens == w.result.tokens
        else:
            assert w.status["error"]
        w.text = "The cat sat on the mat."
        assert w.status["error"] is None
        w.close()
    finally:
        teardown_test_comm()


@pytest.mark.parametrize("value", ["half", None, [0.5]])
def test_widget_traits_refuse_values_of_the_wrong_type(comm, tiny, value):
    """Traits validate their type as they are set (traitlets), naming the value; the widget keeps its state."""
    import traitlets

    w = AttentionDiffWidget(tiny, threaded=False, text="The cat sat on the mat.", per_layer=False)
    with pytest.raises(traitlets.TraitError, match="sparsity"):
        w.sparsity = value
    assert w.sparsity == 0.5 and w.status["error"] is None
    w.close()


@pytest.mark.slow
def test_widget_truncates_a_text_beyond_the_models_positions(comm, tiny, tok):
    """The widget's limit is the model's own (8192 positions here): a longer text is cut there, with a note; a
    smaller max_tokens cuts it shorter."""
    text = " ".join(f"word{i % 97}" for i in range(4200))  # over 8192 tokens
    w = AttentionDiffWidget(tiny, threaded=False, text=text, per_layer=False, max_tokens=2048)
    assert w.status["error"] is None and w.info["n_tokens"] == w.max_tokens == 2048
    assert "first 2048" in w.info["note"]
    w.close()
    w = AttentionDiffWidget(tiny, threaded=False, text=text, per_layer=False)
    assert w.status["error"] is None and w.max_tokens == 8192 and w.info["n_tokens"] == 8192
    assert "first 8192" in w.info["note"]
    w.max_tokens = 3000
    assert w.info["n_tokens"] == 3000
    w.close()
