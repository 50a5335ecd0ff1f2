"""BigBird (Zaheer et al. 2020, arXiv 2007.14062): global + window + random blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Mask, MaskContext, Tensor

_MASK32 = 0xFFFFFFFF
_MIX = 0x45D9F3B  # < 2**27, so every product of a 32-bit value stays inside int64


def mix32(x):
    """A 32-bit integer mixing function (two multiply-xorshift rounds), on Python ints or int64 tensors alike.

    ``x -> ((x >> 16) ^ x) * 0x45d9f3b`` twice, then ``(x >> 16) ^ x``, all modulo 2**32. Used instead of a random
    generator so that a block's random choice depends only on its own (seed, layer, head, query block), never on
    the text length or on Python's per-process ``hash`` randomisation.
    """
    x = ((x >> 16) ^ x) * _MIX & _MASK32
    x = ((x >> 16) ^ x) * _MIX & _MASK32
    return (x >> 16) ^ x


def random_block_rank(seed: int, layer: int, head, qb, kb):
    """The random rank of key block ``kb`` for query block ``qb``: mix32 folded over (seed, layer, head, qb, kb).

    ``h = mix32(seed mod 2**32); h = mix32(h ^ layer); h = mix32(h ^ head); h = mix32(h ^ qb); h = mix32(h ^ kb)``.
    Works on Python ints (the test's reference) and on broadcast int64 tensors (the library).
    """
    h = mix32(seed & _MASK32)
    h = mix32(h ^ (layer & _MASK32))
    h = mix32(h ^ head)
    h = mix32(h ^ qb)
    return mix32(h ^ kb)


@dataclass(frozen=True)
class BigBird(Mask):
    """Blocks of ``block`` tokens, ``qb = i // block``, ``kb = j // block``.

    Causal adaptation (the paper's pattern is bidirectional; DeepSpeed's ``attention='unidirectional'`` does the
    same): keep(i, j) = kb < n_global or kb in {qb − 1, qb} or kb in R[qb], where R[qb] is ``n_random`` blocks
    drawn without replacement from n_global <= kb < qb − 1.
    Encoder (ITC): keep(i, j) = kb or qb in the global blocks (the first ``n_global`` and the last) or
    |qb − kb| <= 1 or kb in R[qb], R drawn from the blocks that are neither global nor neighbours.

    The draw: R[qb] = the ``n_random`` eligible blocks with the smallest
    ``random_block_rank(seed, layer, head, qb, kb)`` (ties by kb), a fixed integer hash, so the choice is seeded per
    (seed, layer, head, query block), reproducible across runs and, causally, independent of the text length
    (a decoding row equals the same row of a longer prefill).

    Paper Table 8 (ITC, MLM base): block 64, 2 global blocks (first and last), window 3 blocks, 3 random blocks;
    transformers: ``block_size=64, num_random_blocks=3``. Defaults here: block 8, 1 global block, 3 random blocks
    (64-token blocks would make every teaching text of a few hundred tokens dense). Slider: fix block and globals,
    bisect ``n_random`` (kept/row ≈ (g + 2 + r)·b); the spec's last resort "shrink b" is not automated, so the
    densest-to-sparsest range is bounded by the fixed part (e.g. ≈ 0.63 at 100 tokens, 0.92 at 512).
    """

    id = "bigbird"
    description = "Global blocks + neighbouring blocks + `n_random` random blocks per query block (BigBird)"
    paper = "Zaheer et al. 2020, Big Bird: Transformers for Longer Sequences (arXiv 2007.14062)"
    varies_by_layer = True  # the random blocks are drawn per layer
    minimums: ClassVar[dict[str, int]] = {"block": 1, "n_global": 0, "n_random": 0}
    budget = "n_random"
    block: int = 8
    n_global: int = 1
    n_random: int = 3

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 0, max(0, -(-n_keys // self.block))

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        # spec §1: r = round((1 − s)·avg_row / b) − g − 2 (the encoder's window is 3 blocks and globals 2 sides)
        avg_row = (n_keys + 1) / 2 if causal else n_keys
        fixed = self.n_global + 2 if causal else 2 * self.n_global + 3
        return round((1 - sparsity) * avg_row / self.block) - fixed

    def random_blocks(self, q_blocks: Tensor, n_blocks: int, ctx: MaskContext) -> Tensor:
        """Bool ``[H, len(q_blocks), n_blocks]``: the random key blocks of the given query blocks, per head."""
        device = q_blocks.device
        heads = torch.arange(max(1, ctx.n_heads), device=device).view(-1, 1, 1)
        qb = q_blocks.view(1, -1, 1)
        kb = torch.arange(n_blocks, device=device).view(1, 1, -1)
        if ctx.causal:
            eligible = (kb >= self.n_global) & (kb < qb - 1)
        else:
            eligible = (kb >= self.n_global) & (kb < n_blocks - 1) & ((qb - kb).abs() > 1)
        r = min(self.n_random, n_blocks)
        chosen = torch.zeros(heads.shape[0], qb.shape[1], n_blocks, dtype=torch.bool, device=device)
        if r == 0:
            return chosen
        rank = random_block_rank(ctx.seed, ctx.layer, heads, qb, kb) * n_blocks + kb  # unique keys: ties by kb
        rank = rank.masked_fill(~eligible, torch.iinfo(torch.int64).max)
        chosen.scatter_(-1, rank.topk(r, dim=-1, largest=False).indices, True)
        return chosen & eligible

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        b = self.block
        n_keys = int(k.shape[-1])
        n_blocks = -(-n_keys // b)
        qb = torch.div(q, b, rounding_mode="floor")  # [Tq, 1]
        kb = torch.div(k, b, rounding_mode="floor")  # [1, Tk]
        first = int(qb[0, 0]) if qb.numel() else 0
        q_blocks = torch.arange(first, int(qb[-1, 0]) + 1 if qb.numel() else first, device=q.device)
        rand = self.random_blocks(q_blocks, n_blocks, ctx)  # [H, nqb, nb]
        row_block = qb.squeeze(-1) - first  # index of each query row's block in q_blocks
        random_hit = rand[:, row_block].unsqueeze(-1).expand(-1, -1, -1, b).reshape(rand.shape[0], -1, n_blocks * b)
        random_hit = random_hit[..., :n_keys]
        if ctx.causal:
            fixed = (kb < self.n_global) | (kb == qb) | (kb == qb - 1)
        else:
            last = n_blocks - 1
            glob = (kb < self.n_global) | (qb < self.n_global) | (kb == last) | (qb == last)
            fixed = glob | ((qb - kb).abs() <= 1)
        return random_hit | fixed
