"""BigBird (Zaheer et al. 2020, arXiv 2007.14062): global + window + random blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Mask, MaskContext, Tensor


@dataclass(frozen=True)
class BigBird(Mask):
    """Blocks of ``block`` tokens, ``qb = i // block``, ``kb = j // block``.

    Causal adaptation (the paper's pattern is bidirectional; DeepSpeed's ``attention='unidirectional'`` does the
    same): keep(i, j) = kb < n_global or kb in {qb − 1, qb} or kb in R[qb], where R[qb] is ``n_random`` blocks
    drawn without replacement from n_global <= kb < qb − 1, seeded per (seed, layer, head, qb).
    Encoder (ITC): keep = kb or qb in the global blocks (first and last) or |qb − kb| <= 1 or kb in R[qb], R drawn
    from all other blocks.

    Paper Table 8 (ITC, MLM base): block 64, 2 global blocks, window 3 blocks, 3 random blocks; transformers:
    ``block_size=64, num_random_blocks=3``. Defaults here: block 8, 1 global block (teaching texts are short).
    Slider: fix block and globals, bisect ``n_random`` (kept/row ≈ (g + 2 + r)·b).
    """

    id = "bigbird"
    description = "Global blocks + neighbouring blocks + `n_random` random blocks per query block (BigBird)"
    paper = "Zaheer et al. 2020, Big Bird: Transformers for Longer Sequences (arXiv 2007.14062)"
    minimums = {"block": 1, "n_global": 0, "n_random": 0}
    budget = "n_random"
    block: int = 8
    n_global: int = 1
    n_random: int = 3

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 0, max(0, -(-n_keys // self.block))

    def random_blocks(self, n_blocks: int, ctx: MaskContext) -> Tensor:
        """Bool ``[H, n_blocks, n_blocks]``: the random key blocks of every query block, for every head."""
        heads = max(1, ctx.n_heads)
        gen = torch.Generator().manual_seed(hash((ctx.seed, ctx.layer, "bigbird")) % 2**63)
        ranks = torch.rand(heads, n_blocks, n_blocks, generator=gen)
        qb = torch.arange(n_blocks).unsqueeze(-1)
        kb = torch.arange(n_blocks).unsqueeze(0)
        if ctx.causal:
            eligible = (kb >= self.n_global) & (kb < qb - 1)
        else:
            eligible = (kb >= self.n_global) & (kb < n_blocks - 1) & ((qb - kb).abs() > 1)
        ranks = ranks.masked_fill(~eligible, 2.0)  # ineligible blocks sort last
        order = ranks.argsort(dim=-1)
        chosen = torch.zeros(heads, n_blocks, n_blocks, dtype=torch.bool)
        r = min(self.n_random, n_blocks)
        if r > 0:
            chosen.scatter_(-1, order[..., :r], True)
        return chosen & eligible

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        b = self.block
        n_blocks = -(-int(k.shape[-1]) // b)
        qb = torch.div(q, b, rounding_mode="floor")
        kb = torch.div(k, b, rounding_mode="floor")
        rand = self.random_blocks(n_blocks, ctx).to(q.device)
        random_hit = rand[:, qb.squeeze(-1)][:, :, kb.squeeze(0)]  # [H, Tq, Tk]
        if ctx.causal:
            fixed = (kb < self.n_global) | (kb == qb) | (kb == qb - 1)
        else:
            last = n_blocks - 1
            glob = (kb < self.n_global) | (qb < self.n_global) | (kb == last) | (qb == last)
            fixed = glob | ((qb - kb).abs() <= 1)
        return fixed.unsqueeze(0) | random_hit
