"""Block selections: each query (or query block) keeps whole key blocks chosen from pooled logits.

NSA (DeepSeek), MoBA (Kimi), MInference block-sparse and Quest. Mean-pooling keys is linear, so a query's score
against a pooled key block, q·mean(k_B), is the mean of its logits over the block: these patterns can be computed
exactly from the layer's logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Mask, MaskContext, Tensor, keys_per_row_for_sparsity


def _per_key_block(x: Tensor, block: int, reduce) -> Tensor:
    """``reduce(view, -1)`` over key blocks of ``x [..., Tk]`` → ``[..., nb]``, without copying ``x``: the complete
    blocks as one strided view, the ragged last block (if any) on its own."""
    n_k = x.shape[-1]
    full = n_k // block
    parts = []
    if full:
        parts.append(reduce(x[..., : full * block].unfold(-1, block, block), -1))
    if full * block < n_k:
        parts.append(reduce(x[..., full * block :], -1).unsqueeze(-1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def _block_sums(scores: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Per row and key block: the sum of the allowed (finite) logits and their count, ``[H, Tq, nb]`` each."""
    total = _per_key_block(scores.nan_to_num(neginf=0.0), block, torch.sum)
    count = _per_key_block(scores > float("-inf"), block, lambda v, d: v.sum(d, dtype=torch.int32))
    return total, count.to(total.dtype)


def _mean(total: Tensor, count: Tensor) -> Tensor:
    return (total / count.clamp_min(1.0)).masked_fill_(count == 0, float("-inf"))


def block_means(scores: Tensor, block: int) -> Tensor:
    """Mean logit of each row over each key block's allowed keys (``[H, Tq, nb]``), -inf where the block has none.

    Mean-pooling keys is linear, so this is exactly the pooled score q·mean(k_B) over the block's allowed keys.
    """
    return _mean(*_block_sums(scores, block))


def block_pair_means(scores: Tensor, block: int, q_block: Tensor) -> Tensor:
    """Mean logit over the allowed pairs of each (query block, key block): ``[H, nqb, nkb]``, query blocks numbered
    from ``q_block[0]`` (``q_block``: each query row's block, non-decreasing). By bilinearity this is exactly
    mean(Q_qb)·mean(K_kb) when every pair of the two blocks is allowed."""
    total, count = _block_sums(scores, block)
    rows = q_block - q_block[0]
    shape = (scores.shape[0], int(rows[-1]) + 1, total.shape[-1])
    total = torch.zeros(shape, dtype=total.dtype, device=scores.device).index_add_(1, rows, total)
    count = torch.zeros(shape, dtype=count.dtype, device=scores.device).index_add_(1, rows, count)
    return _mean(total, count)


def block_max(scores: Tensor, block: int) -> Tensor:
    """Largest logit of each row in each key block (``[H, Tq, nb]``, -inf where the block has no allowed key)."""
    return _per_key_block(scores, block, lambda v, d: v.amax(d))


def expand_blocks(chosen: Tensor, block: int, n_keys: int) -> Tensor:
    """``[..., nb]`` block choice → ``[..., Tk]`` token choice."""
    shape = chosen.shape
    out = chosen.unsqueeze(-1).expand(*shape, block).reshape(*shape[:-1], shape[-1] * block)
    return out[..., :n_keys]


def top_blocks(block_scores: Tensor, n: int) -> Tensor:
    """Bool choice of the ``n`` best finite blocks of each row."""
    n = max(0, min(n, block_scores.shape[-1]))
    chosen = torch.zeros_like(block_scores, dtype=torch.bool)
    if n:
        chosen.scatter_(-1, block_scores.topk(n, dim=-1).indices, True)
    return chosen & (block_scores > float("-inf"))


def _positions(n_q: int, n_k: int, device: torch.device) -> Tensor:
    return torch.arange(n_k - n_q, n_k, device=device)


@dataclass(frozen=True)
class NSA(Mask):
    """keep(t, s) = s // block in I_t or t − s < window, where I_t = the first block, the 2 local blocks
    (the query's own and the previous one) and the top of the rest by selection importance, n blocks in all.

    Native Sparse Attention (Yuan et al. 2025, arXiv 2502.11089), selection ∪ sliding-window branches as one
    mask (the compressed branch is not a token mask; the trained gates are absent, so one softmax is taken over
    the union). Importance: compressed keys are mean-pooled complete blocks (as fla-org's implementation,
    compression block = stride = selection block), p_cmp = softmax over complete blocks of q·mean(k) per head,
    summed over the heads of a GQA group (Eq. 10): one selection per key/value head. Paper: l = 32, d = 16,
    l' = 64, n = 16 (1 initial + 2 local), w = 512; defaults here scaled for short texts: block 8, window 16,
    n = 8, and from 4096 tokens on (``LONG_TEXT_TOKENS``) the paper's block 64 and window 512. Slider: bisect n
    (kept/row ≈ (n − 2)·block + window).
    """

    id = "nsa"
    description = "Native Sparse Attention: top-`n` key blocks per query (shared per KV group) + a sliding window"
    paper = "Yuan et al. 2025, Native Sparse Attention (DeepSeek) (arXiv 2502.11089)"
    # n counts the forced first block and 2 local blocks
    minimums: ClassVar[dict[str, int]] = {"n": 3, "block": 1, "window": 1}
    budget = "n"
    fixed_part = "the window, the first block and the 2 local blocks"
    score_dependent = True
    supports_encoder = False  # complete-block compression and local blocks are causal ideas
    n: int = 8
    block: int = 8
    window: int = 16
    paper_params: ClassVar[dict[str, int]] = {"n": 16, "block": 64, "window": 512}

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 3, max(3, -(-n_keys // self.block))

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        # spec §1: n ≈ 2 + ((1 − s)·avg_row − w) / l' (the 2 local blocks sit inside the window)
        avg_row = (1 - sparsity) * (n_keys + 1) / 2
        return round(2 + (avg_row - self.window) / self.block)

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        heads, n_q, n_k = scores.shape
        device = scores.device
        b = self.block
        q = _positions(n_q, n_k, device)
        qb = torch.div(q, b, rounding_mode="floor")
        n_blocks = -(-n_k // b)
        kb = torch.arange(n_blocks, device=device)
        means = block_means(scores, b)
        complete = (kb + 1) * b <= q.unsqueeze(-1) + 1  # [Tq, nb]: compression sees complete blocks only
        means = means.masked_fill(~complete, float("-inf"))
        p_cmp = torch.softmax(means, dim=-1).nan_to_num_(0.0)  # rows with no complete block: all zero
        groups = max(1, ctx.kv_groups) if heads % max(1, ctx.kv_groups) == 0 else 1
        shared = p_cmp.view(heads // groups, groups, n_q, n_blocks).sum(1)  # one importance per KV group
        forced = (kb == 0) | (kb == qb.unsqueeze(-1)) | (kb == qb.unsqueeze(-1) - 1)
        visible = kb <= qb.unsqueeze(-1)
        ranked = shared.masked_fill(forced, float("inf")).masked_fill(~visible, float("-inf"))
        chosen = top_blocks(ranked, self.n).repeat_interleave(groups, dim=0)
        k = torch.arange(n_k, device=device)
        return expand_blocks(chosen, b, n_k) | ((q.unsqueeze(-1) - k) < self.window)


@dataclass(frozen=True)
class MoBA(Mask):
    """keep(i, j) = j // block in the top-``k`` blocks of g[i, :], where g[i, b] = q_i·mean(K_b) (the mean logit
    over key block b), the query's own block has g = +∞ and future blocks −∞; per head. Encoder: the same gate
    without the future exclusion (every block competes, the own block is still always selected).

    Mixture of Block Attention (Lu et al. / Kimi 2025, arXiv 2502.13189), the parameter-free gate of
    ``moba_attn_varlen_naive``. Repo example: block 4096, top-k 12; paper speed test 64 blocks, top-3. Defaults
    here: block 16, k 3. Slider: bisection of k on the realised mask, from the spec's estimate k ≈ Winv(s) / block.
    MoBA "requires continue training": expect degradation post hoc.
    """

    id = "moba"
    description = "Mixture of Block Attention: own block + top-`k` key blocks by mean-pooled key score (Kimi)"
    paper = "Lu et al. 2025, MoBA: Mixture of Block Attention (arXiv 2502.13189)"
    minimums: ClassVar[dict[str, int]] = {"k": 1, "block": 1}  # k counts the query's own block
    budget = "k"
    fixed_part = "each query's own block"
    score_dependent = True
    k: int = 3
    block: int = 16

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 1, max(1, -(-n_keys // self.block))

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return round(keys_per_row_for_sparsity(sparsity, n_keys, causal) / self.block)  # spec: Winv(s) / block

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        _, n_q, n_k = scores.shape
        q = _positions(n_q, n_k, scores.device)
        own = torch.div(q, self.block, rounding_mode="floor").unsqueeze(-1)
        kb = torch.arange(-(-n_k // self.block), device=scores.device)
        gate = block_means(scores, self.block)
        if ctx.causal:
            gate = gate.masked_fill(kb > own, float("-inf"))
        gate = gate.masked_fill(kb == own, float("inf"))
        return expand_blocks(top_blocks(gate, self.k), self.block, n_k)


@dataclass(frozen=True)
class BlockTopK(Mask):
    """keep(i, j) = j // block in TB[i // block]: each query block keeps its top ``top_k`` key blocks by the
    pooled score mean(Q_qb)·mean(K_kb) = the mean logit over the block pair; causal blocks only.

    MInference's block-sparse pattern (Jiang et al. 2024, arXiv 2407.02490, ``_build_block_index``): 64 x 64
    blocks, top_k = 100. Defaults here: block 16. In the diagonal block only the causal pairs enter the mean
    (the logits of future pairs are not given to masks). Slider: bisection of top_k on the realised mask (the spec
    estimates top_k ≈ Winv(s) / block). Not row-local: a row's choice depends on the other queries of its block.
    """

    id = "block_topk"
    description = "Each query block keeps its top-`top_k` key blocks by pooled Q·K score (MInference block-sparse)"
    paper = "Jiang et al. 2024, MInference 1.0 (arXiv 2407.02490)"
    minimums: ClassVar[dict[str, int]] = {"top_k": 1, "block": 1}
    budget = "top_k"
    fixed_part = "one key block per query block (at least the diagonal block's pairs)"
    score_dependent = True
    row_local = False
    top_k: int = 100
    block: int = 16

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 1, max(1, -(-n_keys // self.block))

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return round(keys_per_row_for_sparsity(sparsity, n_keys, causal) / self.block)  # spec: Winv(s) / block

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        _, n_q, n_k = scores.shape
        b = self.block
        qb = torch.div(_positions(n_q, n_k, scores.device), b, rounding_mode="floor")
        pooled = block_pair_means(scores, b, qb)  # [H, nqb, nkb]
        chosen = top_blocks(pooled, self.top_k)[:, qb - qb[0]]  # back to rows
        return expand_blocks(chosen, b, n_k)


@dataclass(frozen=True)
class Quest(Mask):
    """keep(i, j) = j // page in P_i, where P_i = the max(3, token_budget // page) pages with the highest
    page score for query i; per head.

    Quest (Tang et al. 2024, arXiv 2406.10774) scores a page by an upper bound of q·k over it, Σ_d max(q_d·min_p
    k_d, q_d·max_p k_d), from per-page min/max keys. Masks receive logits, not keys, so this uses the exact page
    maximum max_{j∈p} q·k_j, the quantity the bound approximates (an oracle Quest). Quest's defaults: page 16 (8
    here for short texts, 16 from 4096 tokens on), token budget 1024 (MInference port), at least 3 pages, the
    first two layers left dense and decoding only; here every layer of a full pass is sparsified. Slider: the
    spec's closed form round(Winv(s)) ignores the rounding to whole pages, so the budget is bisected on the
    realised mask instead.
    """

    id = "quest"
    description = (
        "Query-aware page selection: top pages of `page` tokens by max key score, `token_budget` tokens (Quest)"
    )
    paper = "Tang et al. 2024, Quest: Query-Aware Sparsity (arXiv 2406.10774)"
    minimums: ClassVar[dict[str, int]] = {"token_budget": 1, "page": 1}
    budget = "token_budget"
    fixed_part = "at least 3 pages per query"
    score_dependent = True
    supports_encoder = False
    token_budget: int = 1024
    page: int = 8
    paper_params: ClassVar[dict[str, int]] = {"token_budget": 1024, "page": 16}

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        # any budget below 3 pages selects 3 pages: the smallest meaningful one is 3 pages
        return 3 * self.page, max(3 * self.page, n_keys + 3 * self.page)

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return keys_per_row_for_sparsity(sparsity, n_keys, causal)  # spec §1: T = round(Winv(s))

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        pages = max(3, self.token_budget // self.page)
        return expand_blocks(top_blocks(block_max(scores, self.page), pages), self.page, scores.shape[-1])
