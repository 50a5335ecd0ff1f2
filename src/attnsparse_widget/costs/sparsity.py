"""What sparsity buys, on paper: attention FLOPs and KV-cache bytes from a model's config. Pure arithmetic.

No model runs here: every function reads a ``transformers`` config (the text config of a multimodal one) and
counts. Conventions (the same as the rest of the library, sparse-patterns.md §0):

* ``T`` = sequence length; a causal model allows ``T(T+1)/2`` (query, key) pairs per head per layer, an encoder
  ``T²``; ``sparsity`` is the fraction of those allowed pairs that are dropped.
* One multiply-add counts as 2 FLOPs.
* ``H`` = query heads (``num_attention_heads``), ``H_kv`` = key/value heads (``num_key_value_heads``, = ``H``
  when absent), ``L`` = layers (``num_hidden_layers``), ``d`` = hidden size,
  ``d_h`` = ``head_dim`` (``hidden_size // num_attention_heads`` when absent).
* MLA configs (those with ``kv_lora_rank``, e.g. DeepSeek-V2/V3, GLM-5) score queries and keys of
  ``qk_nope_head_dim + qk_rope_head_dim`` dims and read values of ``v_head_dim`` dims, and cache one latent of
  ``kv_lora_rank`` values plus one shared RoPE key of ``qk_rope_head_dim`` values per token and layer.

Assumptions: every layer is a full (causal) attention layer (a model's own sliding-window layers are not
modelled); the numbers describe one forward pass over ``T`` tokens (a prefill) and the cache it leaves behind;
"sparse" FLOPs assume a kernel that skips the dropped pairs (a dense kernel with a mask does the dense work).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..introspect import head_dim, head_dims, is_mla, n_heads, n_kv_heads, text_config
from ..masks.base import allowed_pairs as _allowed_pairs
from ..masks.base import window_count, window_for_sparsity
from .hardware import ACCELERATORS, Accelerator


def _check_len(seq_len: Any) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    return seq_len


def _check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be a number in [0, 1) (fraction of allowed pairs dropped), got {sparsity!r}")
    return float(sparsity)


# -------------------------------------------------------------------------------------------------------- pairs
def allowed_pairs(seq_len: int, causal: bool = True) -> int:
    """(query, key) pairs one head may score: ``T(T+1)/2`` for a causal model, ``T²`` for an encoder (the mask
    library's count, :func:`attnsparse_widget.masks.base.allowed_pairs`, for a full pass of ``T`` queries)."""
    t = _check_len(seq_len)
    return _allowed_pairs(t, t, causal)


def budget_sparsity(seq_len: int, keys_per_row: int) -> float:
    """Causal sparsity of any mask that keeps ``min(i + 1, k)`` keys in row ``i`` (a window of ``k`` keys, top-k,
    DSA with ``k``, a KV cache of ``k`` tokens):

        s = 1 − Kwin(k) / (T(T+1)/2),   Kwin(k) = T·k − k(k−1)/2   (k clipped to [1, T]; sparse-patterns.md §1)

    E.g. DSA's k = 2048 drops nothing at T ≤ 2048 and about 96.9 % of the causal pairs at T = 131072.
    """
    t = _check_len(seq_len)
    if isinstance(keys_per_row, bool) or not isinstance(keys_per_row, int) or keys_per_row < 1:
        raise ValueError(f"keys_per_row must be a positive int, got {keys_per_row!r}")
    return 1.0 - window_count(t, keys_per_row) / allowed_pairs(t)


def budget_for_sparsity(seq_len: int, sparsity: float) -> int:
    """The inverse of :func:`budget_sparsity`: the keys per row ``k`` in [1, T] whose causal sparsity is nearest to
    ``sparsity``, from the closed form (sparse-patterns.md §1)

        Winv(s) = ((2T + 1) − sqrt((2T + 1)² − 4(1 − s)·T(T + 1))) / 2

    rounded, then settled on the exact count. E.g. s = 0.9 keeps 13 keys per row at T = 260 but 6726 at T = 131072.
    (The mask library's :func:`attnsparse_widget.masks.base.window_for_sparsity`, with the arguments checked.)
    """
    return window_for_sparsity(_check_sparsity(sparsity), _check_len(seq_len))


# -------------------------------------------------------------------------------------------------------- FLOPs
def attention_flops(config: Any, seq_len: int, sparsity: float = 0.0, *, causal: bool = True) -> dict[str, float]:
    """FLOPs of the two attention matrix products, QKᵀ and PV, over the kept pairs of a forward pass of ``T`` tokens.

        pairs = (1 − s) · T(T+1)/2            kept pairs per head per layer (causal; T² for an encoder)
        qk    = 2 · d_qk · pairs · H · L      one d_qk-long dot product per kept pair and query head
        pv    = 2 · d_v  · pairs · H · L      one d_v-long weighted sum per kept pair and query head
        total = qk + pv

    Counted: only these two products, linear in the kept pairs (so the sparse value is exactly (1 − s) times the
    dense one). Not counted: softmax, scaling and masking; choosing the pairs (top-k scores, DSA's lightning
    indexer, NSA's compressed branch); the Q/K/V/O projections and the MLP (see
    :func:`projection_and_mlp_flops`). Grouped-query attention does not change these numbers (every query head
    still scores every kept pair), only the KV cache. MLA is counted in its plain form (``d_qk`` = nope + rope
    dims, ``d_v`` = ``v_head_dim``), not the weight-absorbed form used for decoding.

    Returns a dict with ``pairs`` (kept pairs per head per layer), ``qk``, ``pv`` and ``total``, as floats.
    """
    config = text_config(config)
    s = _check_sparsity(sparsity)
    pairs = (1.0 - s) * allowed_pairs(seq_len, causal)
    d_qk, d_v = head_dims(config)
    heads_layers = n_heads(config) * int(config.num_hidden_layers)
    qk = 2.0 * d_qk * pairs * heads_layers
    pv = 2.0 * d_v * pairs * heads_layers
    return {"pairs": pairs, "qk": qk, "pv": pv, "total": qk + pv}


def projection_and_mlp_flops(config: Any, seq_len: int, *, gated_mlp: bool = True) -> dict[str, int]:
    """FLOPs of the weight matrix products of a forward pass of ``T`` tokens (dense models without MLA/MoE):

        qkvo    = 2 · T · L · (d·H·d_h + 2·d·H_kv·d_h + H·d_h·d)    Q, K, V and output projections
        mlp     = 2 · T · L · 3·d·d_ff    (gated MLP: gate, up, down; 2·d·d_ff when ``gated_mlp=False``)
        lm_head = 2 · T · d · vocab_size
        total   = qkvo + mlp + lm_head

    with ``d_ff = intermediate_size``. Linear in ``T`` and untouched by attention sparsity. Not counted: norms,
    activations, residual additions, embeddings lookup, biases.
    Raises ValueError for MLA or mixture-of-experts configs (their projections and experts are not modelled).
    """
    config = text_config(config)
    t = _check_len(seq_len)
    moe_keys = ("n_routed_experts", "num_local_experts", "num_experts")
    if is_mla(config) or any(getattr(config, key, None) for key in moe_keys):
        raise ValueError("projection_and_mlp_flops models dense standard-attention decoders only (no MLA, no MoE)")
    d, h, h_kv, d_h = int(config.hidden_size), n_heads(config), n_kv_heads(config), head_dim(config)
    layers = int(config.num_hidden_layers)
    d_ff = int(config.intermediate_size)
    qkvo = 2 * t * layers * (d * h * d_h + 2 * d * h_kv * d_h + h * d_h * d)
    mlp = 2 * t * layers * (3 if gated_mlp else 2) * d * d_ff
    lm_head = 2 * t * d * int(config.vocab_size)
    return {"qkvo": qkvo, "mlp": mlp, "lm_head": lm_head, "total": qkvo + mlp + lm_head}


# ----------------------------------------------------------------------------------------------------- KV cache
def kv_values_per_token_per_layer(config: Any) -> int:
    """Values cached per token and layer:

        standard / GQA / MQA:  2 · H_kv · d_h                    (one key and one value per KV head)
        MLA (kv_lora_rank):    kv_lora_rank + qk_rope_head_dim   (the latent c_KV and the shared RoPE key)

    E.g. SmolLM2-135M: 2 · 3 · 64 = 384; DeepSeek-V3 and GLM-5: 512 + 64 = 576 (vs 2 · 128 · 128 = 32768 for
    128 plain heads of 128 dims).
    """
    config = text_config(config)
    if is_mla(config):
        return int(config.kv_lora_rank) + int(config.qk_rope_head_dim)
    return 2 * n_kv_heads(config) * head_dim(config)


def kv_cache_bytes(config: Any, seq_len: int, dtype_bytes: float = 2, *, cached_tokens: int | None = None) -> int:
    """Bytes of the KV cache after ``T`` tokens, all layers:

        bytes = min(T, cached_tokens) · L · kv_values_per_token_per_layer(config) · dtype_bytes

    ``dtype_bytes``: 2 for bf16/fp16 (default), 4 for fp32, 1 for fp8. ``cached_tokens`` (default: all ``T``) models
    KV *eviction* that keeps a fixed number of tokens (StreamingLLM's sinks + window, H2O's budget). Pair
    *selection* (top-k, DSA, NSA) keeps every token, since a later query may select any of them: leave it None.
    Not counted: DSA's indexer keys, quantisation scales, paging overhead.
    """
    config = text_config(config)
    t = _check_len(seq_len)
    if isinstance(dtype_bytes, bool) or not isinstance(dtype_bytes, (int, float)) or dtype_bytes <= 0:
        raise ValueError(f"dtype_bytes must be a positive number, got {dtype_bytes!r}")
    if cached_tokens is not None:
        if isinstance(cached_tokens, bool) or not isinstance(cached_tokens, int) or cached_tokens < 1:
            raise ValueError(f"cached_tokens must be a positive int or None, got {cached_tokens!r}")
        t = min(t, cached_tokens)
    values = t * int(config.num_hidden_layers) * kv_values_per_token_per_layer(config)
    return int(math.ceil(values * dtype_bytes))


# ------------------------------------------------------------------------------------------------ kernel tiles
def skippable_tiles(keep: Any, allowed: Any = None, tile: int = 64) -> float:
    """The fraction of work tiles that a block-sparse kernel could skip: the third sparsity number (spec §7.5),
    next to edge sparsity (pairs dropped) and KV budget (tokens cached).

    Kernels such as FlashAttention or FlexAttention work on ``tile x tile`` blocks of (query, key) pairs. A tile
    can be skipped only when *none* of its pairs is kept, so

        skippable = #{tiles with an allowed pair and no kept pair} / #{tiles with an allowed pair}

    ``keep`` is a bool ``[T, T]`` or ``[H, T, T]`` keep-mask (heads averaged: each head is its own kernel launch),
    ``allowed`` the model's allowed pairs (default: causal, key ≤ query). Scattered selections (top-k, DSA) reach
    high edge sparsity while touching nearly every tile; windows and block selections skip whole tiles.
    (PyTorch's ``BlockMask.sparsity()`` counts over the full rectangle instead, so plain causal attention there
    already reads about 50 %; spec §0.)
    """
    keep = np.asarray(keep, dtype=bool)
    if keep.ndim == 2:
        keep = keep[None]
    if keep.ndim != 3 or keep.shape[-1] != keep.shape[-2]:
        raise ValueError(f"keep must be a bool [T, T] or [H, T, T] array, got shape {keep.shape}")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"tile must be a positive int, got {tile!r}")
    t = keep.shape[-1]
    allowed = np.tril(np.ones((t, t), dtype=bool)) if allowed is None else np.asarray(allowed, dtype=bool)
    n = -(-t // tile)
    pad = n * tile - t

    def any_per_tile(m: np.ndarray) -> np.ndarray:
        m = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(0, pad), (0, pad)])
        return np.asarray(m.reshape(*m.shape[:-2], n, tile, n, tile).any(axis=(-3, -1)))

    live = any_per_tile(allowed)
    touched = any_per_tile(keep & allowed) & live
    return float(1.0 - touched.sum(axis=(-2, -1)).mean() / max(1, int(live.sum())))


# ------------------------------------------------------------------------------------------------------ roofline
ATTENTION_OPS = ("QK^T", "softmax", "PV", "KV-cache read")
SOFTMAX_FLOPS_PER_PAIR = 5  # max, subtract, exp, sum, divide


def attention_roofline(
    config: Any, seq_len: int, phase: str = "prefill", sparsity: float = 0.0, dtype_bytes: float = 2
) -> dict[str, dict[str, float]]:
    """FLOPs, bytes moved and arithmetic intensity (FLOPs/byte) of each attention operation of one layer (all its
    heads), for a ``"prefill"`` of ``T`` tokens or one ``"decode"`` step over ``T`` cached tokens.

    Each operation is counted as an unfused kernel that reads its inputs from and writes its outputs to HBM (the
    eager path), with ``P`` kept pairs per query head (prefill: ``(1 − s)·T(T+1)/2``; decode: ``(1 − s)·T``),
    ``H`` query heads, ``H_kv`` key/value heads, ``T_kv`` = tokens whose keys and values are read (prefill ``T``;
    decode ``(1 − s)·T``: a sparse decode kernel reads only the kept keys) and ``b`` bytes per value:

        QK^T           2·d_qk·P·H FLOPs;  b·(H·T_q·d_qk + H_kv·T_kv·d_qk + H·P) bytes   (Q, K in; scores out)
        softmax        5·P·H FLOPs;       b·2·H·P bytes                                  (scores in; probs out)
        PV             2·d_v·P·H FLOPs;   b·(H·P + H_kv·T_kv·d_v + H·T_q·d_v) bytes      (probs, V in; out)
        KV-cache read  the QK^T + PV FLOPs over b·H_kv·T_kv·(d_qk + d_v) bytes (MLA decode: b·T_kv·d_qk, the
                       latent being the values too): a fused kernel (FlashAttention)
                       that keeps scores on chip and reads the cache once; its intensity is attention's best case

    ``T_q`` = T (prefill) or 1 (decode). MHA, GQA and MQA differ in ``H_kv`` only. MLA (``kv_lora_rank``): prefill
    in its plain form (per-head keys and values of d_qk and d_v dims, ``H_kv = H``); decode in the weight-absorbed
    form DeepSeek uses, every head scoring the one shared latent of ``kv_lora_rank + qk_rope_head_dim`` values per
    token (``H_kv = 1``, d_qk = that, d_v = ``kv_lora_rank``): many heads per byte read, hence its high intensity.
    Not counted: the projections, the indexer or selection of sparse patterns, masking.
    """
    config = text_config(config)
    t = _check_len(seq_len)
    s = _check_sparsity(sparsity)
    if phase not in ("prefill", "decode"):
        raise ValueError(f"phase must be 'prefill' or 'decode', got {phase!r}")
    if isinstance(dtype_bytes, bool) or not isinstance(dtype_bytes, (int, float)) or dtype_bytes <= 0:
        raise ValueError(f"dtype_bytes must be a positive number, got {dtype_bytes!r}")
    h = n_heads(config)
    d_qk, d_v = head_dims(config)
    h_kv = h if is_mla(config) else n_kv_heads(config)
    cached = d_qk + d_v  # values per token and key/value head that the cache holds
    if phase == "prefill":
        t_q, pairs, t_kv = t, (1.0 - s) * allowed_pairs(t), float(t)
    else:
        t_q, pairs, t_kv = 1, (1.0 - s) * t, (1.0 - s) * t
        if is_mla(config):  # the values are the latent itself: the cache holds latent + RoPE key only
            h_kv, d_qk, d_v = 1, int(config.kv_lora_rank) + int(config.qk_rope_head_dim), int(config.kv_lora_rank)
            cached = d_qk
    b = float(dtype_bytes)
    qk = 2.0 * d_qk * pairs * h
    pv = 2.0 * d_v * pairs * h
    ops = {
        "QK^T": (qk, b * (h * t_q * d_qk + h_kv * t_kv * d_qk + h * pairs)),
        "softmax": (SOFTMAX_FLOPS_PER_PAIR * pairs * h, b * 2 * h * pairs),
        "PV": (pv, b * (h * pairs + h_kv * t_kv * d_v + h * t_q * d_v)),
        "KV-cache read": (qk + pv, b * h_kv * t_kv * cached),
    }
    return {name: {"flops": f, "bytes": m, "intensity": f / m} for name, (f, m) in ops.items()}


def bound_by(intensity: float, accelerator: Accelerator) -> str:
    """``"memory"`` below the accelerator's ridge point, else ``"compute"``."""
    return "memory" if intensity < accelerator.ridge else "compute"


def ridge_crossings(
    config: Any, seq_len: int, phase: str, sparsity: float, dtype_bytes: float = 2
) -> list[tuple[str, str, str, str]]:
    """Where a mask of this ``sparsity`` moves an attention operation across an accelerator's ridge point:
    ``(operation, accelerator, bound when dense, bound when sparse)`` for each one whose bound changes.

    A mask cuts FLOPs and score bytes in proportion, so the unfused operations keep their intensity; what moves is
    the fused kernel of a prefill ("KV-cache read"): its FLOPs fall with the kept pairs while it still reads every
    key and value once, so a sparse prefill drops towards memory-bound. A sparse decode that reads only the kept
    keys keeps its (low) intensity and saves bytes instead."""
    dense = attention_roofline(config, seq_len, phase, 0.0, dtype_bytes)
    sparse = attention_roofline(config, seq_len, phase, sparsity, dtype_bytes)
    out = []
    for op in ATTENTION_OPS:
        for key, acc in ACCELERATORS.items():
            before, after = bound_by(dense[op]["intensity"], acc), bound_by(sparse[op]["intensity"], acc)
            if before != after:
                out.append((op, key, before, after))
    return out
