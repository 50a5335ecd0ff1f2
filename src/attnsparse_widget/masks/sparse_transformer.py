"""Sparse Transformer factorised patterns (Child et al. 2019, arXiv 1904.10509): strided and fixed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Mask, MaskContext, Tensor


@dataclass(frozen=True)
class Strided(Mask):
    """keep(i, j) = |i - j| <= stride or (i - j) % stride == 0: the previous ``stride`` tokens plus every
    ``stride``-th token before them (the "merged" head of A(1) ∪ A(2), Child et al. 2019 §4.2).

    Paper: stride ≈ √N. The count ≈ N·l + N²/(2l) is not monotone in l: sparsity peaks near l ≈ √(N/2)
    (N=1024: s_max ≈ 0.913 at l ≈ 23). The slider moves l over [⌈√(N/2)⌉, N] (denser as l grows) and says so
    when a request lies above the peak.
    """

    id = "strided"
    description = "The last `stride` tokens plus every `stride`-th earlier token (Sparse Transformer, strided)"
    paper = "Child et al. 2019, Generating Long Sequences with Sparse Transformers (arXiv 1904.10509)"
    minimums = {"stride": 1}
    budget = "stride"
    stride: int = 32

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        gap = (q - k).abs()
        return (gap <= self.stride) | (gap % self.stride == 0)

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return max(1, math.ceil(math.sqrt(n_keys / 2))), max(1, n_keys)


@dataclass(frozen=True)
class Fixed(Mask):
    """keep(i, j) = i // stride == j // stride or j % stride >= stride - summary: the query's own block of
    ``stride`` tokens plus the last ``summary`` tokens of every block ("fixed" pattern, Child et al. 2019 §4.3).

    fairseq's ``SparseMultiheadAttention`` defaults: stride=32, expressivity (summary) = 8, i.e. c/l = 1/4;
    the paper used c ∈ {8, 16, 32} with l ∈ {128, 256}. Slider: keep the summary/stride ratio and bisect
    ``stride`` (count ≈ N(l+1)/2 + c·N²/(2l)).
    """

    id = "fixed"
    description = "Each token's own block plus the last `summary` tokens of every block (Sparse Transformer, fixed)"
    paper = "Child et al. 2019, Generating Long Sequences with Sparse Transformers (arXiv 1904.10509)"
    minimums = {"stride": 1, "summary": 0}
    budget = "stride"
    stride: int = 32
    summary: int = 8

    def validate(self) -> None:
        if self.summary > self.stride:
            raise ValueError(f"fixed: summary must be in [0, stride={self.stride}], got {self.summary}")

    def with_budget(self, value: int) -> Mask:
        # keep the paper's summary/stride ratio as the stride moves
        ratio = self.summary / self.stride
        stride = max(1, int(value))
        return Fixed(stride=stride, summary=min(stride, max(1, round(ratio * stride))) if ratio > 0 else 0)

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        # below stride/summary the rounded summary width would swallow the whole block
        low = math.ceil(self.stride / self.summary) if self.summary else 1
        return max(1, low), max(low, n_keys)

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        same = torch.div(q, self.stride, rounding_mode="floor") == torch.div(k, self.stride, rounding_mode="floor")
        return same | (k % self.stride >= self.stride - self.summary)
