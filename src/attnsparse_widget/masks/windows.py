"""Position-only patterns built from local windows: dense, sliding window, dilated window, chunked, sinks + window,
global + local. Every rule is a pure function of query position ``i`` and key position ``j``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Mask, MaskContext, Tensor, keys_per_row_for_sparsity, window_for_sparsity


def local_window(q: Tensor, k: Tensor, window: int, causal: bool) -> Tensor:
    """The local part every window pattern shares: ``i - j < window`` (causal, ``window`` keys including the
    query), ``|i - j| <= window // 2`` (encoder)."""
    return (q - k) < window if causal else (q - k).abs() <= window // 2


def window_budget_range(n_keys: int, causal: bool) -> tuple[int, int]:
    """A window of 1 key up to the whole text (both sides of the query for an encoder)."""
    return 1, max(1, n_keys if causal else 2 * n_keys)


@dataclass(frozen=True)
class Dense(Mask):
    """keep(i, j) = True (every allowed pair). The baseline: the model's own attention."""

    id = "dense"
    description = "No sparsity: the model's own attention (baseline)"
    paper = "Vaswani et al. 2017, Attention Is All You Need (arXiv 1706.03762)"

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
    minimums: ClassVar[dict[str, int]] = {"window": 1}
    budget = "window"
    window: int = 4096

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        return local_window(q, k, self.window, ctx.causal)

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return window_budget_range(n_keys, causal)

    def closed_form_budget(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return window_for_sparsity(sparsity, n_keys) if causal else None

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return keys_per_row_for_sparsity(sparsity, n_keys, causal)  # encoder: |i − j| <= window // 2


@dataclass(frozen=True)
class DilatedWindow(Mask):
    """keep(i, j) = (i - j) % dilation == 0 and (i - j) < window * dilation (causal);
    encoder: |i - j| % dilation == 0 and |i - j| <= (window // 2) * dilation.

    Longformer's dilated sliding window (Beltagy et al. 2020, §3.1): ``window`` keys (the query included) spaced
    ``dilation`` apart, receptive field ``window * dilation``. The paper used it on a few heads of upper layers
    and found post-hoc dilation on RoBERTa weights hurt (footnote 6). Slider: fix ``dilation``, bisect ``window``
    (kept per row = min(i // d + 1, W)).
    """

    id = "dilated_window"
    description = "A window of `window` keys spaced `dilation` apart (Longformer dilated window)"
    paper = "Beltagy et al. 2020, Longformer (arXiv 2004.05150)"
    minimums: ClassVar[dict[str, int]] = {"window": 1, "dilation": 1}
    budget = "window"
    window: int = 512
    dilation: int = 2

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        d = self.dilation
        if ctx.causal:
            gap = q - k
            return (gap % d == 0) & (gap < self.window * d)
        gap = (q - k).abs()
        return (gap % d == 0) & (gap <= (self.window // 2) * d)

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 1, max(1, (n_keys if causal else 2 * n_keys) // self.dilation + 1)

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        # causal count ≈ N·W − d·W²/2 (rows before (W−1)·d keep i // d + 1)
        kept = (1 - sparsity) * n_keys * ((n_keys + 1) / 2 if causal else n_keys)
        d = self.dilation
        if not causal:  # about window + 1 keys per row
            return round(kept / n_keys)
        disc = n_keys**2 - 2 * d * kept
        return round((n_keys - math.sqrt(disc)) / d) if disc >= 0 else n_keys // d + 1


@dataclass(frozen=True)
class Chunked(Mask):
    """keep(i, j) = i // chunk == j // chunk: each token sees only its own chunk (block-local attention).

    transformers' ``chunked_overlay`` (Llama-4's ``attention_chunk_size``). Causal count ≈ N(chunk + 1)/2, so
    chunk ≈ 2(1 − s)E/N − 1; the library bisects ``chunk`` on the realised mask.
    """

    id = "chunked"
    description = "Tokens see only their own chunk of `chunk` tokens (block-local, Llama-4 style)"
    paper = "transformers chunked_overlay / Llama 4 attention_chunk_size"
    minimums: ClassVar[dict[str, int]] = {"chunk": 1}
    budget = "chunk"
    chunk: int = 8192

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        return torch.div(q, self.chunk, rounding_mode="floor") == torch.div(k, self.chunk, rounding_mode="floor")

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        # causal count ≈ N(chunk + 1)/2 ⇒ chunk ≈ 2(1 − s)E/N − 1; encoder count ≈ N·chunk
        if causal:
            return round((1 - sparsity) * (n_keys + 1) - 1)
        return round((1 - sparsity) * n_keys)


@dataclass(frozen=True)
class SinkWindow(Mask):
    """keep(i, j) = j < sinks or i - j < window: the first ``sinks`` tokens plus the ``window`` most recent.

    StreamingLLM (Xiao et al. 2023, arXiv 2309.17453): "attention sinks", with 4 initial tokens sufficing
    (``start_size=4``; ``recent_size`` 512 or 2000 in the reference scripts); MInference calls it "A-shape".
    Kept = Kwin(sinks + window) exactly, so window = round(Winv(s)) − sinks. Positions are not re-indexed as
    StreamingLLM's cache does (sparse-patterns.md §2.2): within the training length this is harmless.
    Encoder: the first ``sinks`` tokens as global columns and |i − j| <= window // 2.
    """

    id = "sink_window"
    description = "The first `sinks` tokens plus the `window` most recent (StreamingLLM attention sinks)"
    paper = "Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks (arXiv 2309.17453)"
    minimums: ClassVar[dict[str, int]] = {"sinks": 0, "window": 1}
    budget = "window"
    sinks: int = 4
    window: int = 512
    paper_params: ClassVar[dict[str, int]] = {"sinks": 4, "window": 2044}  # 4 sinks in a 2048-token cache

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        local = local_window(q, k, self.window, ctx.causal)
        return (k < self.sinks) | local

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return window_budget_range(n_keys, causal)

    def closed_form_budget(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        if not causal:
            return None
        return max(1, window_for_sparsity(sparsity, n_keys) - self.sinks)

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return keys_per_row_for_sparsity(sparsity, n_keys, causal) - self.sinks


@dataclass(frozen=True)
class GlobalLocal(Mask):
    """keep(i, j) = i - j < window or G[j] or G[i], with G = the first ``n_global`` tokens (causal);
    encoder: |i - j| <= window // 2 or G[i] or G[j].

    Longformer's global + sliding-window attention (Beltagy et al. 2020, §3.1): global attention is symmetric, "a
    token with a global attention attends to all tokens across the sequence, and all tokens in the sequence
    attend to it"; [CLS] for classification, question tokens for QA. A dense-trained model has one set of
    projections, so the global tokens use the shared ones. Slider: bisect ``window`` with the global set fixed.
    """

    id = "global_local"
    description = "A local window plus `n_global` global tokens that see and are seen by all (Longformer)"
    paper = "Beltagy et al. 2020, Longformer (arXiv 2004.05150)"
    minimums: ClassVar[dict[str, int]] = {"window": 1, "n_global": 0}
    budget = "window"
    window: int = 512
    n_global: int = 1

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        local = local_window(q, k, self.window, ctx.causal)
        return local | (k < self.n_global) | (q < self.n_global)

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return window_budget_range(n_keys, causal)

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        # the global columns take about n_global keys of every row's share
        keys = keys_per_row_for_sparsity(sparsity, n_keys, causal) - self.n_global
        return keys if causal else 2 * keys
