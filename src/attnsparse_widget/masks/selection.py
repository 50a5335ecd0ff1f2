"""Score-dependent, token-level selections: top-k per query, DeepSeek Sparse Attention (DSA), H2O heavy hitters,
MInference vertical-slash. Each reads the layer's own attention logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Mask, MaskContext, Tensor, diagonal, window_for_sparsity


def topk_keep(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the diagonal plus the ``k - 1`` largest other entries of each row (-inf is never chosen).

    The diagonal (the query's own key) counts towards ``k``, so row i keeps exactly min(i + 1, k) keys and the
    count formula of a window applies (the H2O reference does the same: ``topk(acc, H - 1) ∪ {t}``).
    """
    k = max(1, min(k, scores.shape[-1]))
    n_q, n_k = scores.shape[-2], scores.shape[-1]
    diag = diagonal(n_q, n_k, scores.device)
    ranked = scores.masked_fill(diag, float("inf"))
    idx = ranked.topk(k, dim=-1).indices
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, True)
    return keep & torch.isfinite(ranked)


@dataclass(frozen=True)
class TopK(Mask):
    """keep(h, i, j) = j == i, or j is among the ``k - 1`` largest other logits q_i^h·k_j^h (j <= i), per head.

    Generic dynamic sparsity (used as the search target of MInference). Row i keeps min(i+1, k) keys whatever the
    scores, so the count equals a window's: k = round(Winv(s)) (sparse-patterns.md §1, 5a).
    """

    id = "topk"
    description = "Each query keeps its `k` highest-scoring keys, per head (oracle dynamic sparsity)"
    paper = "Generic top-k attention; cf. Gupta et al. 2021 (arXiv 2106.06899), MInference (arXiv 2407.02490)"
    budget = "k"
    score_dependent = True
    k: int = 64

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"topk: k must be >= 1 key per query, got {self.k}")

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        return topk_keep(scores, self.k)

    def closed_form_budget(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        if causal:
            return window_for_sparsity(sparsity, n_keys)
        return max(1, round((1 - sparsity) * n_keys))
