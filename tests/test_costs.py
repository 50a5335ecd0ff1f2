"""costs.py: attention FLOPs and KV-cache bytes against values computed by hand from the formulas."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from transformers import BertConfig, DeepseekV3Config, LlamaConfig, LlavaConfig, MixtralConfig

from attnsparse_widget import costs, introspect

pytestmark = pytest.mark.unit


def tiny_gqa() -> LlamaConfig:
    """4 query heads sharing 2 KV heads of 8 dims, 3 layers."""
    return LlamaConfig(
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_hidden_layers=3,
        intermediate_size=64,
        vocab_size=100,
    )


def smollm2_135m() -> LlamaConfig:
    """The default model's shape (SmolLM2-135M-Instruct), written out so no model is loaded."""
    return LlamaConfig(
        hidden_size=576,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        num_hidden_layers=30,
        intermediate_size=1536,
        vocab_size=49152,
    )


# ------------------------------------------------------------------------------------------------------- pairs
def test_allowed_pairs():
    assert costs.allowed_pairs(10) == 55
    assert costs.allowed_pairs(10, causal=False) == 100
    assert costs.allowed_pairs(1) == 1


def test_budget_sparsity_matches_window_count():
    # T = 10, k = 3: Kwin = 10·3 − 3 = 27 of 55 pairs kept
    assert costs.budget_sparsity(10, 3) == pytest.approx(1 - 27 / 55)
    assert costs.budget_sparsity(10, 10) == 0.0
    assert costs.budget_sparsity(10, 4096) == 0.0  # a budget above T keeps everything
    assert costs.budget_sparsity(10, 1) == pytest.approx(1 - 10 / 55)  # the diagonal only
    # DSA's k = 2048 at 128K tokens: (131072·2048 − 2048·2047/2) / (131072·131073/2) kept
    kept = 131072 * 2048 - 2048 * 2047 // 2
    assert costs.budget_sparsity(131072, 2048) == pytest.approx(1 - kept / (131072 * 131073 / 2))
    assert 0.968 < costs.budget_sparsity(131072, 2048) < 0.970


# ------------------------------------------------------------------------------------------------------- FLOPs
def test_attention_flops_small_gqa_config_by_hand():
    # T = 10 → 55 causal pairs; QKᵀ: 2 · 8 dims · 55 pairs · 4 heads · 3 layers = 10560; PV the same
    out = costs.attention_flops(tiny_gqa(), 10)
    assert out == {"pairs": 55.0, "qk": 10560.0, "pv": 10560.0, "total": 21120.0}


def test_attention_flops_encoder_counts_all_pairs():
    out = costs.attention_flops(tiny_gqa(), 10, causal=False)
    assert out["pairs"] == 100.0 and out["total"] == 2 * 2 * 8 * 100 * 4 * 3


@pytest.mark.parametrize("sparsity", [0.0, 0.25, 0.5, 0.9, 0.99])
def test_attention_flops_scale_linearly_with_sparsity(sparsity):
    dense = costs.attention_flops(tiny_gqa(), 777)
    sparse = costs.attention_flops(tiny_gqa(), 777, sparsity=sparsity)
    for key in ("pairs", "qk", "pv", "total"):
        assert sparse[key] == pytest.approx((1 - sparsity) * dense[key], rel=1e-12)


def test_gqa_does_not_change_attention_flops():
    mha = LlamaConfig(**{**tiny_gqa().to_dict(), "num_key_value_heads": 4})
    assert costs.attention_flops(mha, 50) == costs.attention_flops(tiny_gqa(), 50)


def test_attention_flops_quadratic_in_length():
    one, two = costs.attention_flops(tiny_gqa(), 1000), costs.attention_flops(tiny_gqa(), 2000)
    assert two["total"] / one["total"] == pytest.approx(2000 * 2001 / (1000 * 1001))


def test_mla_head_dims_use_nope_plus_rope_not_head_dim():
    config = DeepseekV3Config()
    assert config.head_dim == 64  # transformers stores only the RoPE part here
    assert introspect.head_dims(config) == (128 + 64, 128)
    out = costs.attention_flops(config, 4)
    pairs = 10
    assert out["qk"] == 2 * 192 * pairs * 128 * 61 and out["pv"] == 2 * 128 * pairs * 128 * 61


def test_head_dim_falls_back_to_hidden_over_heads():
    config = BertConfig(hidden_size=48, num_attention_heads=3, num_hidden_layers=2)
    assert getattr(config, "head_dim", None) is None
    assert introspect.head_dims(config) == (16, 16)
    assert costs.kv_values_per_token_per_layer(config) == 2 * 3 * 16  # no num_key_value_heads: one per head


def test_projection_and_mlp_flops_by_hand():
    # per token per layer: Q 32·4·8 + K 32·2·8 + V 32·2·8 + O 4·8·32 = 1024 + 512 + 512 + 1024 = 3072 MACs
    # MLP 3 · 32 · 64 = 6144 MACs; lm head 32 · 100 = 3200 MACs per token
    out = costs.projection_and_mlp_flops(tiny_gqa(), 10)
    assert out["qkvo"] == 2 * 10 * 3 * 3072
    assert out["mlp"] == 2 * 10 * 3 * 6144
    assert out["lm_head"] == 2 * 10 * 3200
    assert out["total"] == out["qkvo"] + out["mlp"] + out["lm_head"]
    assert costs.projection_and_mlp_flops(tiny_gqa(), 10, gated_mlp=False)["mlp"] == 2 * 10 * 3 * 2 * 32 * 64


def test_projection_and_mlp_flops_refuses_mla_and_moe():
    with pytest.raises(ValueError):
        costs.projection_and_mlp_flops(DeepseekV3Config(), 10)
    with pytest.raises(ValueError):
        costs.projection_and_mlp_flops(MixtralConfig(), 10)


def test_default_model_shape():
    config = smollm2_135m()
    # attention: 2 · (64 + 64) · 9 heads · 30 layers = 69120 FLOPs per kept pair
    assert costs.attention_flops(config, 1)["total"] == 69120
    # projections + MLP + lm head per token: 2·30·(576·576 + 2·576·192 + 576·576 + 3·576·1536) + 2·576·49152
    per_token = 2 * 30 * (576 * 576 + 2 * 576 * 192 + 576 * 576 + 3 * 576 * 1536) + 2 * 576 * 49152
    assert costs.projection_and_mlp_flops(config, 1)["total"] == per_token


# ---------------------------------------------------------------------------------------------------- KV cache
def test_kv_cache_gqa_by_hand():
    # 2 · 2 KV heads · 8 dims = 32 values per token per layer; · 3 layers · 10 tokens · 2 bytes
    assert costs.kv_values_per_token_per_layer(tiny_gqa()) == 32
    assert costs.kv_cache_bytes(tiny_gqa(), 10) == 32 * 3 * 10 * 2
    assert costs.kv_cache_bytes(tiny_gqa(), 10, dtype_bytes=4) == 32 * 3 * 10 * 4


def test_kv_cache_mha_is_larger_by_the_group_size():
    mha = LlamaConfig(**{**tiny_gqa().to_dict(), "num_key_value_heads": 4})
    assert costs.kv_cache_bytes(mha, 10) == 2 * costs.kv_cache_bytes(tiny_gqa(), 10)


def test_kv_cache_default_model_shape():
    assert costs.kv_values_per_token_per_layer(smollm2_135m()) == 2 * 3 * 64 == 384
    assert costs.kv_cache_bytes(smollm2_135m(), 1000) == 1000 * 30 * 384 * 2


def test_kv_cache_mla():
    config = DeepseekV3Config()  # kv_lora_rank 512, qk_rope_head_dim 64, 61 layers
    assert costs.kv_values_per_token_per_layer(config) == 512 + 64 == 576
    assert costs.kv_cache_bytes(config, 100) == 100 * 61 * 576 * 2


def test_kv_cache_eviction_caps_the_tokens():
    assert costs.kv_cache_bytes(tiny_gqa(), 10, cached_tokens=4) == 32 * 3 * 4 * 2
    assert costs.kv_cache_bytes(tiny_gqa(), 3, cached_tokens=4) == costs.kv_cache_bytes(tiny_gqa(), 3)


def test_multimodal_config_uses_its_text_config():
    config = LlavaConfig()
    assert costs.kv_cache_bytes(config, 7) == costs.kv_cache_bytes(config.get_text_config(), 7)
    assert costs.attention_flops(config, 7) == costs.attention_flops(config.get_text_config(), 7)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_bad_lengths_raise(bad):
    with pytest.raises(ValueError):
        costs.kv_cache_bytes(tiny_gqa(), bad)
    with pytest.raises(ValueError):
        costs.attention_flops(tiny_gqa(), bad)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, True])
def test_bad_sparsity_raises(bad):
    with pytest.raises(ValueError):
        costs.attention_flops(tiny_gqa(), 10, sparsity=bad)


@pytest.mark.parametrize("seq_len", [1, 2, 10, 260, 4096, 131072])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_budget_for_sparsity_inverts_budget_sparsity(seq_len, sparsity):
    k = costs.budget_for_sparsity(seq_len, sparsity)
    assert 1 <= k <= seq_len
    best = abs(costs.budget_sparsity(seq_len, k) - sparsity)
    for other in (k - 1, k + 1):  # no neighbouring budget comes closer
        if 1 <= other <= seq_len:
            assert best <= abs(costs.budget_sparsity(seq_len, other) - sparsity) + 1e-12


def test_budget_for_sparsity_matches_the_mask_library():
    from attnsparse_widget import masks

    for sparsity in (0.5, 0.7, 0.9):
        assert costs.budget_for_sparsity(260, sparsity) == masks.get("topk").with_sparsity(sparsity, 260).k


# ------------------------------------------------------------------------------------------------ kernel tiles
def test_skippable_tiles_of_a_window_counted_by_hand():
    import numpy as np

    n = 256  # 4 x 4 tiles of 64; causal: 10 tiles hold allowed pairs
    i, j = np.indices((n, n))
    window = (j <= i) & (i - j < 16)  # touches the 4 diagonal tiles and the 3 just below
    assert costs.skippable_tiles(window) == pytest.approx(3 / 10)
    assert costs.skippable_tiles(np.tril(np.ones((n, n), bool))) == 0.0
    scattered = (j <= i) & ((i + j) % 7 == 0) | (i == j)  # few pairs, but in every tile
    assert costs.skippable_tiles(scattered) == 0.0
    # per head, averaged: one head dense, one with the window
    assert costs.skippable_tiles(np.stack([np.tril(np.ones((n, n), bool)), window])) == pytest.approx(0.15)
    assert costs.skippable_tiles(window[:100, :100], tile=32) == pytest.approx(3 / 10)  # a padded edge tile row
    with pytest.raises(ValueError, match="tile must be"):
        costs.skippable_tiles(window, tile=0)


# ------------------------------------------------------------------------------------------------------ roofline
def test_roofline_counts_by_hand_for_gqa_prefill_and_decode():
    """H = 4 query heads, H_kv = 2, d = 16, T = 8, bf16: every figure written out from the docstring's formulas."""
    cfg = SimpleNamespace(num_attention_heads=4, num_key_value_heads=2, hidden_size=64, num_hidden_layers=1)
    pre = costs.attention_roofline(cfg, 8, "prefill")
    pairs = 36  # 8 * 9 / 2
    assert pre["QK^T"]["flops"] == 2 * 16 * pairs * 4
    assert pre["QK^T"]["bytes"] == 2 * (4 * 8 * 16 + 2 * 8 * 16 + 4 * pairs)
    assert pre["softmax"]["flops"] == 5 * pairs * 4 and pre["softmax"]["bytes"] == 2 * 2 * 4 * pairs
    assert pre["PV"]["bytes"] == 2 * (4 * pairs + 2 * 8 * 16 + 4 * 8 * 16)
    assert pre["KV-cache read"]["bytes"] == 2 * 2 * 8 * 32
    assert pre["KV-cache read"]["flops"] == pre["QK^T"]["flops"] + pre["PV"]["flops"]
    dec = costs.attention_roofline(cfg, 8, "decode", sparsity=0.5)
    assert dec["QK^T"]["flops"] == 2 * 16 * 4 * 4  # 4 kept keys, 4 heads
    assert dec["KV-cache read"]["bytes"] == 2 * 2 * 4 * 32  # only the kept keys are read
    for op in costs.ATTENTION_OPS:
        assert pre[op]["intensity"] == pre[op]["flops"] / pre[op]["bytes"]


def test_roofline_mla_decode_reads_one_shared_latent():
    cfg = SimpleNamespace(
        num_attention_heads=128,
        hidden_size=7168,
        num_hidden_layers=1,
        kv_lora_rank=512,
        qk_rope_head_dim=64,
        qk_nope_head_dim=128,
        v_head_dim=128,
    )
    dec = costs.attention_roofline(cfg, 4096, "decode")
    assert dec["KV-cache read"]["bytes"] == 2 * 4096 * 576  # one latent + rope key per token, shared by 128 heads
    assert dec["KV-cache read"]["intensity"] == pytest.approx(128 * (2 * 576 + 2 * 512) / (2 * 576))
    mha = SimpleNamespace(num_attention_heads=128, hidden_size=16384, num_hidden_layers=1)
    assert (
        dec["KV-cache read"]["intensity"]
        > 50 * costs.attention_roofline(mha, 4096, "decode")["KV-cache read"]["intensity"]
    )


def test_ridge_points_and_where_a_mask_crosses_them():
    assert costs.ACCELERATORS["H100"].ridge == pytest.approx(989.4e12 / 3.35e12)
    assert costs.bound_by(1.0, costs.ACCELERATORS["A100"]) == "memory"
    assert costs.bound_by(1e4, costs.ACCELERATORS["B200"]) == "compute"
    # GQA with H / H_kv = 3 at 2048 tokens, bf16: the fused prefill's intensity is (1 - s)(T + 1)·3/2, 3074 dense;
    # at 95 % it is 154, under H100's ridge (295) and B200's (281) but just over A100's (153)
    cfg = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, hidden_size=576, num_hidden_layers=1)
    crossed = costs.ridge_crossings(cfg, 2048, "prefill", 0.95)
    assert {(op, acc) for op, acc, _, _ in crossed} == {("KV-cache read", "H100"), ("KV-cache read", "B200")}
    assert all(before == "compute" and after == "memory" for _, _, before, after in crossed)
    assert costs.ridge_crossings(cfg, 2048, "decode", 0.95) == []  # decode is memory-bound either way
    with pytest.raises(ValueError, match="phase"):
        costs.attention_roofline(cfg, 16, "train")
