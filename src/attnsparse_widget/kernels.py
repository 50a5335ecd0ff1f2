"""Attention kernels that skip the work a mask drops, and what they take in measured time.

A mask forced on a dense model is computed by :mod:`.capture` in eager form (scores, the mask, a float32 softmax,
``·v``): that is what gives the probabilities to look at. A layer whose probabilities nobody reads (the other layers
of a per-layer replay, a prefill for a continuation, a plain sparse forward) needs only the output. There the mask
goes to a kernel that never materialises the scores:

``flex``  FlexAttention (``torch.nn.attention.flex_attention``, compiled by ``torch.compile``; on a CPU that needs a
          C++ compiler) with a :class:`BlockMask` built from the keep-mask: tiles of ``BLOCK x BLOCK`` pairs with no
          kept pair are skipped, tiles with every pair kept run without the mask, the others read the keep-mask.
          Scattered masks (top-k) touch nearly every tile and save little; windows and block selections skip
          whole tiles. Compiled once per process and shape bucket (lengths padded up to a multiple of ``BUCKET``).
``sdpa``  ``scaled_dot_product_attention`` with the boolean mask: no tile skipped, no compilation, and no
          ``[H, T, T]`` float32 probabilities either.

Which one: measured (``benchmarks/bench_kernels.py`` on a 2-core CPU, ``benchmarks/bench_gpu.py`` on an H200; the
default model's 9 query and 3 key-value heads of 64 dims; tables in benchmarks/README.md). ``flex`` for a prefill
(queries = keys) of at least :data:`FLEX_MIN_TOKENS` tokens on a CPU, :data:`FLEX_MIN_TOKENS_CUDA` on a CUDA device,
``sdpa`` otherwise: below it the compilation (seconds) and the tile bookkeeping cost more than they save (on the
H200 the whole model at 90 % sparsity ran at 0.52x dense speed on flex at 2048 tokens, 0.89x at 4096, 3.6x at
8192), and decoding steps (one query) have nothing to skip.

Both are exact: the same softmax over the same kept pairs (tests/test_kernels.py checks them against the eager
masked path, to 1e-5 on the outputs).
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .costs import skippable_tiles
from .masks import Mask, MaskContext

Tensor = torch.Tensor
log = logging.getLogger(__name__)

BLOCK = 128  # FlexAttention's tile (its default BLOCK_SIZE)
BUCKET = 512  # lengths are padded up to a multiple of this: one compilation serves every length of a bucket
FLEX_MIN_TOKENS = 2048  # the measured crossover on a CPU (see the module docstring)
FLEX_MIN_TOKENS_CUDA = 8192  # and on a CUDA device (an H200; 4096 was still slower than dense)
KERNELS = ("flex", "sdpa")
RECOMPILE_LIMIT = 256  # shapes the flex kernel may be compiled for in one process


@functools.cache
def flex_available(device_type: str = "cpu") -> bool:
    """Whether FlexAttention can be compiled here: a CUDA device, or a CPU with a C++ compiler for inductor."""
    if device_type == "cuda":
        return torch.cuda.is_available()
    return device_type == "cpu" and any(shutil.which(cxx) for cxx in ("g++", "c++", "clang++"))


def flex_usable(device_type: str = "cpu") -> bool:
    """Whether flex runs here: available (:func:`flex_available`) and not failed to compile in this process."""
    return flex_available(device_type) and not _flex_failed


def choose_kernel(n_queries: int, n_keys: int, device: torch.device) -> str:
    """The kernel for one masked attention call of this shape (see the module docstring)."""
    least = FLEX_MIN_TOKENS_CUDA if device.type == "cuda" else FLEX_MIN_TOKENS
    if n_queries == n_keys >= least and flex_usable(device.type):
        return "flex"
    return "sdpa"


def bucket(n_tokens: int) -> int:
    """The padded length ``n_tokens`` is compiled for."""
    return -(-n_tokens // BUCKET) * BUCKET


# ------------------------------------------------------------------------------------------------ the block mask
@dataclass(frozen=True)
class Tiles:
    """How a keep-mask ``[H|1, Tq, Tk]`` falls on ``BLOCK x BLOCK`` tiles: per head and tile row, whether a tile
    holds a kept pair (``live``) and whether every one of its pairs is kept (``full``), both bool ``[H|1, nq, nk]``."""

    live: Tensor
    full: Tensor


def tiles(keep: Tensor, block: int = BLOCK) -> Tiles:
    """:class:`Tiles` of a bool keep-mask ``[H|1, Tq, Tk]`` (both lengths multiples of ``block``)."""
    h, n_q, n_k = keep.shape
    grid = keep.view(h, n_q // block, block, n_k // block, block)
    return Tiles(live=grid.any(dim=4).any(dim=2), full=grid.all(dim=4).all(dim=2))


def _indices(flags: Tensor) -> tuple[Tensor, Tensor]:
    """(count ``[1, H, nq]``, tile columns ``[1, H, nq, nk]`` with the flagged ones first) as int32."""
    count = flags.sum(dim=-1, dtype=torch.int32)
    order = torch.argsort(flags.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return count[None], order[None]


def block_mask(keep: Tensor) -> object:
    """A FlexAttention ``BlockMask`` for a bool keep-mask ``[H|1, Tq, Tk]`` (lengths multiples of :data:`BLOCK`):
    tiles without a kept pair are skipped, tiles with every pair kept run unmasked, the rest read ``keep``."""
    from torch.nn.attention.flex_attention import BlockMask

    found = tiles(keep)
    partial = found.live & ~found.full
    count, order = _indices(partial)
    full_count, full_order = _indices(found.full)
    bits = keep

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
        return bits[h % bits.shape[0], q, k]

    return BlockMask.from_kv_blocks(
        count,
        order,
        full_count,
        full_order,
        BLOCK_SIZE=BLOCK,
        mask_mod=mask_mod,
        seq_lengths=(keep.shape[1], keep.shape[2]),
    )


# ------------------------------------------------------------------------------------------------ the kernels
_flex_failed = False
# the shapes flex has run on in this process, each with its keep-mask's heads (the mask function reads it)
_flex_compiled: set[tuple[tuple[object, ...], int]] = set()


def _flex_shape(query: Tensor, key: Tensor, value: Tensor) -> tuple[object, ...]:
    """What a flex compilation is specialised on, but the keep-mask's heads: device, dtype, head counts and sizes,
    the length bucket."""
    _, heads, n, d_qk = query.shape
    return (query.device.type, query.dtype, heads, key.shape[1], d_qk, value.shape[-1], bucket(n))


def flex_compiled(query: Tensor, key: Tensor, value: Tensor, keep: Tensor) -> bool:
    """Whether flex has already run on these shapes in this process: its next call will not compile."""
    return (_flex_shape(query, key, value), keep.shape[0]) in _flex_compiled


def flex_compiled_for_any_mask(query: Tensor, key: Tensor, value: Tensor) -> bool:
    """Whether flex has run on these query, key and value shapes with a keep-mask of any head count: False means
    no keep-mask can avoid a compilation (known before the keep-mask is made)."""
    shape = _flex_shape(query, key, value)
    return any(known == shape for known, _ in _flex_compiled)


@functools.cache
def _compiled_flex() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _padded(x: Tensor, length: int, dim: int) -> Tensor:
    pad = length - x.shape[dim]
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def flex(query: Tensor, key: Tensor, value: Tensor, keep: Tensor, scale: float) -> Tensor:
    """FlexAttention of ``query [1, H, T, D]`` over ``key``/``value [1, H_kv, T, D]`` with the bool ``keep``
    ``[H|1, T, T]`` (no row empty), padded to the length bucket (padded keys kept by no row, padded rows cut off):
    ``[1, H, T, D]``."""
    n = query.shape[-2]
    length = bucket(n)
    mask = block_mask(_padded(_padded(keep, length, -1), length, -2))
    # contiguous: compilations are specialised on strides too, and a model's transposed heads have their own
    q, k, v = (_padded(x, length, -2).contiguous() for x in (query, key, value))
    # dynamo compiles flex_attention's frame once per shape; past its default limit of 8 shapes (heads x dims x
    # buckets) it would silently run the uncompiled reference, which materialises every score
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        out = _compiled_flex()(q, k, v, block_mask=mask, scale=scale, enable_gqa=query.shape[1] != key.shape[1])
    _flex_compiled.add((_flex_shape(query, key, value), keep.shape[0]))
    return out[:, :, :n]


def sdpa(query: Tensor, key: Tensor, value: Tensor, keep: Tensor, scale: float) -> Tensor:
    """``scaled_dot_product_attention`` with the bool ``keep`` ``[H|1, Tq, Tk]`` (no row empty): ``[1, H, Tq, D]``."""
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=keep[None], scale=scale, enable_gqa=query.shape[1] != key.shape[1]
    )


def masked_attention(query: Tensor, key: Tensor, value: Tensor, keep: Tensor, scale: float, kernel: str) -> Tensor:
    """The attention output ``[1, H, Tq, D]`` of the kept pairs ``keep`` (bool ``[H|1, Tq, Tk]``, the model's own
    mask included, no row empty) by ``kernel`` (:data:`KERNELS`). A flex kernel that fails to compile here (no
    working compiler) is reported once and replaced by sdpa for the rest of the process."""
    global _flex_failed
    if kernel == "flex" and not _flex_failed:
        try:
            return flex(query, key, value, keep, scale)
        except Exception as err:  # inductor raises many kinds (a missing compiler, a missing Python.h, ...)
            _flex_failed = True
            log.warning("FlexAttention could not be compiled here (%s); using SDPA with the mask instead", err)
    return sdpa(query, key, value, keep, scale)


# ------------------------------------------------------------------------------------------------ measured time
TIMING_REPEATS = 3  # timed calls per kernel (after one untimed warm-up call); the median is reported


def _median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@dataclass(frozen=True)
class Timing:
    """Measured seconds of one attention call: ``dense`` (causal SDPA, the fused kernel a dense model runs) and
    ``sparse`` (``kernel`` with the keep-mask), and the fraction of the allowed tiles the sparse kernel skipped."""

    dense: float
    sparse: float
    kernel: str
    skipped: float  # the fraction of the allowed tiles the sparse kernel skipped (costs.skippable_tiles)


def time_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    keep: Tensor,
    scale: float,
    *,
    causal: bool = True,
    repeats: int = TIMING_REPEATS,
) -> Timing:
    """Time one attention call of these shapes: dense (SDPA, causal or not) against sparse (flex with ``keep``, or
    sdpa with it where flex is not available), each the median of ``repeats`` calls after a warm-up call (which
    also compiles). Flex runs at its bucket's padded length (:func:`bucket`): on short texts that counts against
    it. ``keep``: bool ``[H|1, T, T]`` within the model's allowed pairs, no row empty."""
    n = query.shape[-2]
    kernel = "flex" if flex_usable(query.device.type) else "sdpa"
    gqa = query.shape[1] != key.shape[1]
    with torch.inference_mode():
        dense = _median_seconds(
            lambda: F.scaled_dot_product_attention(query, key, value, is_causal=causal, scale=scale, enable_gqa=gqa),
            repeats,
        )
        sparse = _median_seconds(lambda: masked_attention(query, key, value, keep, scale, kernel), repeats)
    allowed = None if causal else np.ones((n, n), dtype=bool)  # None: causal
    skipped = skippable_tiles(keep.cpu().numpy(), allowed, tile=BLOCK)
    return Timing(dense=dense, sparse=sparse, kernel="sdpa" if _flex_failed else kernel, skipped=skipped)


def keep_on_random_scores(mask: Mask, n_tokens: int, heads: int, dim: int, seed: int = 0) -> Tensor:
    """The causal keep-mask bool ``[H|1, T, T]`` of ``mask`` at ``n_tokens``: a positions-only mask's from its rule,
    a score-dependent mask's chosen on random queries and keys (``heads`` of ``dim``), a block of rows at a time
    (masks that read other rows' scores, H2O or vertical-slash, choose on the whole at once). For timing: what a
    block-sparse kernel skips depends on where the kept pairs fall, not on the values."""
    ctx = MaskContext(causal=True, n_heads=heads, seed=seed)
    if not mask.score_dependent:
        return mask.keep(n_tokens, ctx=ctx)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(heads, n_tokens, dim, generator=g)
    k = torch.randn(heads, n_tokens, dim, generator=g)
    if not mask.row_local:
        return mask.keep(n_tokens, scores=q @ k.transpose(-1, -2) * dim**-0.5, ctx=ctx)
    keep = torch.zeros(heads, n_tokens, n_tokens, dtype=torch.bool)
    step = max(1, 2**26 // (4 * heads * n_tokens))
    for a in range(0, n_tokens, step):
        b = min(n_tokens, a + step)
        scores = q[:, a:b] @ k[:, :b].transpose(-1, -2) * dim**-0.5
        keep[:, a:b, :b] = mask.keep(b, n_queries=b - a, scores=scores, ctx=ctx)
    return keep
