"""Position-only patterns built from local windows: dense, sliding window, dilated window, chunked, sinks + window,
global + local. Every rule is a pure function of query position ``i`` and key position ``j``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Mask, MaskContext, Tensor, window_for_sparsity


@dataclass(frozen=True)
class Dense(Mask):
    """keep(i, j) = True (every allowed pair). The baseline: the model's own attention."""

    id = "dense"
    description = "No sparsity: the model's own attention (baseline)"
    paper = "Vaswani et al. 2017, Attention Is All You Need"

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        return torch.ones(q.shape[0], k.shape[1], dtype=torch.bool, device=q.device)


@dataclass(frozen=True)
class SlidingWindow(Mask):
    """keep(i, j) = i - j < window (causal: the ``window`` most recent keys, the query included);
    encoder: |i - j| <= window // 2.

    Mistral 7B (Jiang et al. 2023, arXiv 2310.06825) uses W = 4096; the convention here is transformers'
    ``sliding_window_overlay`` (``kv_idx > q_idx - W``: W keys including self), not the paper's W + 1.
    Sparsity: kept = Kwin(W) = N·W − W(W−1)/2 exactly, so W = round(Winv(s)).
    """

    id = "sliding_window"
    description = "Each token sees only the `window` most recent tokens (Mistral / Longformer local window)"
    paper = "Jiang et al. 2023, Mistral 7B (arXiv 2310.06825); Beltagy et al. 2020, Longformer (arXiv 2004.05150)"
    budget = "window"
    window: int = 4096

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"sliding_window: window must be >= 1 key (the query itself counts), got {self.window}")

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        if ctx.causal:
            return (q - k) < self.window
        return (q - k).abs() <= self.window // 2

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 1, max(1, n_keys if causal else 2 * n_keys)

    def closed_form_budget(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return window_for_sparsity(sparsity, n_keys) if causal else None
