"""Models this was not built around: attention outside ``AttentionInterface`` (GPT-Neo), bfloat16 weights, a
skeleton on the ``meta`` device, a model offloaded to disk by accelerate, an encoder-decoder. Each works, or gets a
clear message naming what is unsupported and what works instead, and comes out unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm
from model_state import assert_unchanged, snapshot
from tiny_models import COMMON, ToyTokenizer, build
from transformers import (
    AutoModelForCausalLM,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    LlamaConfig,
    T5Config,
    T5ForConditionalGeneration,
)

import attnsparse_widget as aw
from attnsparse_widget.widget import AttentionDiffWidget

pytestmark = pytest.mark.unit

TEXT = "the quick brown fox jumps over the lazy dog"
IDS = torch.randint(3, 90, (1, 12), generator=torch.Generator().manual_seed(2))
QUICK = dict(per_layer=False, continuation_tokens=0)


@pytest.fixture
def comm():
    setup_test_comm()
    yield
    teardown_test_comm()


def gpt_neo() -> GPTNeoForCausalLM:
    torch.manual_seed(0)
    config = GPTNeoConfig(
        vocab_size=96,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        attention_types=[[["global", "local"], 1]],
        max_position_embeddings=64,
    )
    return GPTNeoForCausalLM(config).eval()


def test_attention_outside_the_interface_is_named_with_what_works(comm):
    model = gpt_neo()
    before = snapshot(model, IDS)
    with pytest.raises(
        aw.UnsupportedModelError, match="GPTNeoForCausalLM cannot be analysed.*Families that work: Llama"
    ):
        aw.compare((model, ToyTokenizer()), TEXT, **QUICK)
    assert isinstance(aw.UnsupportedModelError("x"), TypeError)  # catchable as a TypeError too
    w = AttentionDiffWidget((model, ToyTokenizer()), threaded=False, text=TEXT)
    assert "GPTNeoForCausalLM cannot be analysed" in w.status["error"] and w.result is None
    w.close()
    assert_unchanged(model, IDS, before)


def test_bfloat16_model_matches_its_own_eager_attention():
    """Scores in the model's dtype as eager attention computes them, softmax in float32, captured in float32: cast
    back to bfloat16 they are eager's own probabilities, exactly."""
    model = build("llama").to(torch.bfloat16)
    tok = ToyTokenizer()
    ids = tok(TEXT).input_ids
    model.set_attn_implementation("eager")
    with torch.no_grad():  # first: transformers leaves its own capture hooks on the model after this
        eager = model(ids, output_attentions=True).attentions
    model.set_attn_implementation("sdpa")
    before = snapshot(model, IDS)
    res = aw.compare((model, tok), TEXT, mask="dense", **QUICK)
    for layer, probs in enumerate(eager):
        ours = torch.from_numpy(res.attention(layer)).to(torch.bfloat16)
        assert torch.equal(ours, probs[0])
    sparse = aw.compare((model, tok), TEXT, mask="sink_window", sparsity=0.5, **QUICK)
    assert np.isfinite(sparse.metrics.sparse_ppl) and sparse.attention(0, "sparse").dtype == np.float32
    assert model.dtype == torch.bfloat16
    assert_unchanged(model, IDS, before)


def test_meta_device_skeleton_gets_a_clear_message():
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**COMMON, num_key_value_heads=2))
    with pytest.raises(ValueError, match="'meta' device .*load real weights first"):
        aw.compare((model, ToyTokenizer()), TEXT, **QUICK)


def test_disk_offloaded_model_works_and_keeps_its_hooks(tmp_path):
    """accelerate's offloading hooks live on the modules' own ``forward``: replays put them back (not delete
    them), and the offloaded model gives the same results as the same weights in memory."""
    in_memory = build("llama")
    in_memory.save_pretrained(tmp_path / "model")
    device_map = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    offloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "model", device_map=device_map, offload_folder=tmp_path / "offload"
    ).eval()
    assert any(p.device.type == "meta" for p in offloaded.parameters())  # really on disk until used
    before = snapshot(offloaded, IDS)
    tok = ToyTokenizer()
    ours = aw.compare((offloaded, tok), TEXT, mask="topk", sparsity=0.5, continuation_tokens=3)
    reference = aw.compare((in_memory, tok), TEXT, mask="topk", sparsity=0.5, continuation_tokens=3)
    assert ours.metrics.sparse_ppl == pytest.approx(reference.metrics.sparse_ppl, rel=1e-5)
    assert ours.metrics.per_layer_delta_ppl == pytest.approx(reference.metrics.per_layer_delta_ppl, rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(ours.attention(2, "sparse"), reference.attention(2, "sparse"), atol=1e-6)
    assert ours.continuations == reference.continuations
    assert_unchanged(offloaded, IDS, before)


def test_encoder_decoder_is_refused_with_what_works_instead():
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(
        T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)
    ).eval()
    with pytest.raises(aw.UnsupportedModelError, match="encoder-decoder.*decoder-only model, or the encoder"):
        aw.compare((model, ToyTokenizer()), TEXT, **QUICK)
    assert model.config._attn_implementation != "attnsparse"
