"""The attention cost model (costs.Workload, attention_pairs, op_costs, layer_totals, mla_crossover): every
counting rule against a number derived by hand in the test, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import DeepseekV3Config, LlamaConfig

from attnsparse_widget import costs
from attnsparse_widget.costs import Workload

pytestmark = pytest.mark.unit


def small(heads: int = 2, kv: int = 1, d_h: int = 4, hidden: int = 8, layers: int = 3) -> dict:
    return dict(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv, head_dim=d_h,
                num_hidden_layers=layers, rope_theta=10000.0)  # fmt: skip


def op(ops: list[costs.OpCost], name: str) -> costs.OpCost:
    return next(o for o in ops if o.name == name)


# ----------------------------------------------------------------------------------------------------- pairs
def test_pairs_are_request_local_and_causal():
    # two decode steps over 100 keys: 100 pairs each, none across the requests (not 2 x 200)
    assert costs.attention_pairs(Workload([(100, 1), (100, 1)])) == 200
    # a prefill of 4: 1 + 2 + 3 + 4; a request (10, 2) whose new queries sit at 8 and 9: 9 + 10
    assert costs.attention_pairs(Workload([(4, 4)])) == 10
    assert costs.attention_pairs(Workload([(4, 4), (10, 2)])) == 10 + 19


def test_a_window_counts_its_causal_band_and_reads_its_union_of_keys():
    # queries at 4..7 of 8 keys, window 3: 3 keys each; together they read keys 2..7
    w = Workload([(8, 4)], window=3)
    assert costs.attention_pairs(w) == 12
    assert costs.keys_read(w) == 6
    # a prefill of 8 with window 3: 1 + 2 + 3 x 6
    assert costs.attention_pairs(Workload([(8, 8)], window=3)) == 21


def test_dsa_topk_is_limited_by_the_keys_available():
    # top-2 over a prefill of 4: queries see 1, 2, 2, 2 keys (not 4 x 2)
    assert costs.attention_pairs(Workload([(4, 4)], topk=2)) == 7
    # a decode step over 8192 keys with DeepSeek's k = 2048
    assert costs.attention_pairs(Workload([(8192, 1)], topk=2048)) == 2048


def test_a_realised_mask_is_counted_as_it_is_per_head():
    causal = np.tril(np.ones((6, 6), dtype=bool))
    assert costs.attention_pairs(Workload([(6, 6)]), causal) == 21
    per_head = np.stack([causal, np.eye(6, dtype=bool)])  # head 1 keeps its diagonal only
    assert costs.attention_pairs(Workload([(6, 6)]), per_head) == pytest.approx((21 + 6) / 2)
    # a decode step over the mask's first 4 tokens reads row 3, keys 0..3
    assert costs.attention_pairs(Workload([(4, 1)]), per_head) == pytest.approx((4 + 1) / 2)
    assert costs.keys_read(Workload([(4, 1)]), per_head) == pytest.approx((4 + 1) / 2)


# --------------------------------------------------------------------------------------------------- the ops
def test_gqa_reads_the_stored_key_value_heads_not_their_broadcast_copies():
    # 8 query heads share 2 KV heads of 64: a decode step over 100 keys reads 2 x 100 x 64 bf16 keys
    ops = costs.op_costs(small(heads=8, kv=2, d_h=64, hidden=512), Workload([(100, 1)]))
    qk = op(ops, "QK^T")
    key = next(t for t in qk.inputs if t.name == "K")
    assert key.bytes == 2 * 100 * 64 * 2
    assert qk.flops == 2 * 8 * 100 * 64  # every query head scores every key
    assert [o.name for o in ops] == [
        "q_proj", "k_proj", "v_proj", "RoPE q", "RoPE k", "cache write", "QK^T", "softmax", "PV", "o_proj"
    ]  # fmt: skip


def test_the_projections_cost_2mkn():
    # a prefill of 4 tokens, hidden 8, 2 heads of 4: q_proj is [4, 8] x [8, 8]
    q = op(costs.op_costs(small(), Workload([(4, 4)])), "q_proj")
    assert q.flops == 2 * 4 * 8 * 8
    assert q.bytes_read == (4 * 8 + 8 * 8) * 2 and q.bytes_written == 2 * 4 * 4 * 2


def test_tensor_parallelism_splits_heads_and_all_reduces_the_output_projection():
    # tp = 2 of 2 heads: each rank keeps 1 head; o_proj is [4, 4] x [4, 8] and its [4, 8] bf16 output (64 bytes)
    # goes round a 2-rank ring: 2 (tp - 1) / tp x 64 bytes per rank
    ops = costs.op_costs(small(heads=2, kv=2), Workload([(4, 4)], tp=2))
    o = op(ops, "o_proj")
    assert o.flops == 2 * 4 * 4 * 8
    assert o.comm_bytes == 64
    assert op(ops, "QK^T").flops == 2 * 1 * 10 * 4  # one head's 10 causal pairs
    # one KV head for 4 ranks: replicated, one per rank
    mqa = costs.op_costs(small(heads=4, kv=1), Workload([(4, 4)], tp=4))
    assert op(mqa, "k_proj").output.shape == (1, 4, 4)


def test_data_parallelism_reports_its_busiest_rank():
    # request 0 (1 new token) on rank 0, request 1 (3 new tokens) on rank 1
    w = Workload([(10, 1), (10, 3)], dp=2)
    assert costs.dp_ranks(w) == ((0,), (1,))
    totals = costs.layer_totals(small(), w, "H100")
    assert totals["dp_rank"] == 1
    assert op(costs.op_costs(small(), w), "q_proj").flops == 2 * 3 * 8 * 8  # that rank's three tokens


def test_flash_attention_moves_q_k_v_in_and_o_out_only():
    # 2 heads sharing 1 KV head of 4, a prefill of 8: Q 2x8x4, K and V 1x8x4, O 2x8x4 bf16; 36 pairs per head
    ops = costs.op_costs(small(), Workload([(8, 8)], flash=True))
    att = op(ops, "attention")
    assert att.bytes_read == (64 + 32 + 32) * 2 and att.bytes_written == 64 * 2
    assert att.flops == 2 * 36 * (2 * 4 + 5 + 2 * 4)
    assert not any(o.name in ("QK^T", "softmax", "PV") for o in ops)


def test_flash_tiles_hold_a_kept_pair():
    causal = costs.tile_grid(Workload([(256, 256)], flash=True))
    assert (causal.computed, causal.total) == (3, 4)  # 128 x 128 tiles: the upper one holds no causal pair
    band = costs.tile_grid(Workload([(512, 512)], window=1, tile=(128, 128)))
    assert (band.computed, band.total) == (4, 16)  # a window of one key: the diagonal tiles only
    keep = np.tril(np.ones((256, 256), dtype=bool))
    assert costs.tile_grid(Workload([(256, 256)]), keep).computed == 3  # the same from the mask


def test_paged_kv_blocks_and_occupancy():
    w = Workload([(100, 1), (33, 33), (16, 16)], page_size=16)
    paged = costs.paged_kv(w)
    assert paged is not None and paged.blocks == (7, 3, 1) and paged.total_blocks == 11
    assert paged.table == (tuple(range(7)), (7, 8, 9), (10,))
    totals = costs.layer_totals(small(), w)
    assert totals["kv_blocks"] == 11
    assert totals["kv_occupancy"] == pytest.approx(149 / (11 * 16))
    assert totals["kv_cache_bytes"] == 11 * 16 * 1 * (4 + 4) * 2  # allocated slots x one KV head's k and v


def test_mla_caches_its_latent_and_rope_key():
    # DeepSeek-V3: 512 + 64 values per token and layer, 1152 bytes in bf16 (71x fewer than 128 heads of 192 + 128)
    v3 = costs.preset("DeepSeek-V3")
    assert costs.layer_totals(v3, Workload([(8192, 1)]))["kv_cache_bytes"] == 8192 * 1152
    assert costs.model_totals(v3, Workload([(8192, 1)]))["kv_cache_bytes"] == 61 * 8192 * 1152
    assert costs.model_shape(DeepseekV3Config()).variant == "MLA"


def test_the_mla_crossover():
    v3 = costs.preset("DeepSeek-V3")
    assert costs.mla_crossover(v3, 8192) == pytest.approx(33554432 * 8192 / (33554432 + 196608 * 8192))
    assert costs.mla_crossover(v3, 8192) == pytest.approx(167.18, abs=0.01)
    assert costs.mla_crossover(v3, 10**12) == pytest.approx(33554432 / 196608, rel=1e-6)  # about 170.7
    # op_costs takes the cheaper pipeline; with a request's causal pairs they cross at 168.9 at 8192 keys
    names = {new: {o.name for o in costs.op_costs(v3, Workload([(8192, new)]))} for new in (168, 170)}
    assert "kv_b_proj (W_UK absorbed)" in names[168] and "kv_b_proj" in names[170]
    flops = {p: sum(o.flops for o in costs.op_costs(v3, Workload([(8192, 1)]), pipeline=p)) for p in costs.PIPELINES}
    assert flops["decode"] < flops["prefill"]


def test_dsa_adds_its_indexer_and_attends_to_top_k():
    v32 = costs.preset("DeepSeek-V3.2")
    ops = costs.op_costs(v32, Workload([(8192, 1)]), pipeline="decode")
    names = [o.name for o in ops]
    assert names.index("indexer scores") < names.index("top-k") < names.index("QK^T")
    assert op(ops, "indexer scores").flops == 8192 * 64 * (2 * 128 + 3)  # every available key, 64 FP8 heads
    assert op(ops, "indexer scores").dtype == "fp8"
    assert op(ops, "QK^T").flops == 2 * 128 * 2048 * (512 + 64)  # 2048 selected keys, absorbed over L + R


def test_the_roofline_is_the_larger_of_compute_and_memory_time():
    matmul = costs.OpCost("x", "matmul", (), costs.TensorSpec("y", (1,), ("n",), 0), 312e12, 0.0, 0.0)
    a100 = matmul.roofline("A100")
    assert a100.seconds == pytest.approx(1.0) and a100.bound == "compute"
    reads = costs.OpCost("x", "cache", (), costs.TensorSpec("y", (1,), ("n",), 0), 0.0, 2.039e12, 0.0)
    assert reads.roofline("A100").seconds == pytest.approx(1.0) and reads.roofline("A100").bound == "memory"
    fp8 = costs.OpCost("x", "indexer", (), costs.TensorSpec("y", (1,), ("n",), 0), 1979e12, 0.0, 0.0, dtype="fp8")
    assert fp8.roofline("H100").seconds == pytest.approx(1.0) and fp8.roofline("H100").dtype == "fp8"
    assert fp8.roofline("A100").dtype == "bf16"  # no FP8 on an A100: its BF16 peak
    assert costs.ACCELERATORS["H100"].ridge == pytest.approx(989.4 / 3.35, rel=1e-9)


def test_a_config_object_and_its_dict_cost_the_same():
    config = LlamaConfig(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, num_hidden_layers=30,
                         intermediate_size=1536, vocab_size=49152)  # fmt: skip
    w = Workload([(512, 512)])
    ours = [(o.name, o.flops, o.bytes_read) for o in costs.op_costs(config, w)]
    theirs = [(o.name, o.flops, o.bytes_read) for o in costs.op_costs(costs.preset("SmolLM2-135M"), w)]
    assert ours == theirs
    # the core attention matches the one-prefill arithmetic of costs.attention_flops
    total = sum(o.flops for o in costs.op_costs(config, w) if o.name in ("QK^T", "PV"))
    assert total * 30 == costs.attention_flops(config, 512)["total"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Workload([(4, 5)]), "new <= context"),
        (lambda: Workload([(0, 0)]), "positive int"),
        (lambda: Workload([]), "non-empty"),
        (lambda: Workload([(4, 4)], dtype="int4"), "dtype must be one of"),
        (lambda: Workload([(4, 4)], tp=0), "tp must be a positive int"),
        (lambda: costs.op_costs(small(heads=3, kv=3), Workload([(4, 4)], tp=2)), "tp=2 must divide the 3 query"),
        (lambda: costs.op_costs(small(), Workload([(4, 4)]), pipeline="decode"), "MLA models only"),
        (lambda: costs.layer_totals(small(), Workload([(4, 4)]), "V100"), "unknown accelerator"),
        (lambda: costs.attention_pairs(Workload([(8, 8)]), np.ones((4, 4), dtype=bool)), "covers 4 tokens"),
        (lambda: costs.attention_pairs(Workload([(4, 4)], window=2), np.ones((4, 4), dtype=bool)), "leave window"),
        (lambda: costs.mla_crossover(small(), 8192), "not MLA"),
        (lambda: costs.preset("GPT-5"), "unknown preset"),
    ],
)
def test_bad_input_is_refused_with_what_to_do(make, message):
    with pytest.raises(ValueError, match=message):
        make()
