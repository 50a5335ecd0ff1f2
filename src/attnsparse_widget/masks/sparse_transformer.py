"""Sparse Transformer factorised patterns (Child et al. 2019, arXiv 1904.10509): strided and fixed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

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
    minimums: ClassVar[dict[str, int]] = {"stride": 1}
    budget = "stride"
    stride: int = 32

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        gap = (q - k).abs()
        return (gap <= self.stride) | (gap % self.stride == 0)

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return max(1, math.ceil(math.sqrt(n_keys / 2))), max(1, n_keys)

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        # causal count ≈ N(l + 1) − l²/2 + (N − l)²/(2l) (local band + every l-th earlier key), increasing on
        # [√(N/2), N]; an encoder keeps about twice as many pairs per row. Solved by a float bisection.
        n = n_keys
        target = (1 - sparsity) * (n * (n + 1) / 2 if causal else n * n / 2)
        lo, hi = max(1.0, math.sqrt(n / 2)), float(max(1, n))
        for _ in range(40):
            mid = (lo + hi) / 2
            if n * (mid + 1) - mid * mid / 2 + (n - mid) ** 2 / (2 * mid) < target:
                lo = mid
            else:
                hi = mid
        return round(lo)


@dataclass(frozen=True)
class Fixed(Mask):
    """keep(i, j) = i // stride == j // stride or j % stride >= stride - summary: the query's own block of
    ``stride`` tokens plus the last ``summary`` tokens of every block ("fixed" pattern, Child et al. 2019 §4.3).

    Defaults: the paper's l = 128, c = 8 (it reports c ∈ {8, 16, 32} working well for l ∈ {128, 256}; spec:
    [not re-verified]). fairseq's ``SparseMultiheadAttention`` defaults, stride=32 and expressivity (summary) = 8,
    keep c/l = 1/4 of every row in summary columns, which caps the sparsity near 0.75 at any length; c/l = 1/16
    reaches ≈ 0.78 at 100 tokens and ≈ 0.91 at 512. Slider: keep the summary/stride ratio (summary =
    max(1, round(ratio · stride))) and bisect ``stride`` from 1/ratio (summary 1) to N (count ≈ N(l+1)/2 +
    c·N²/(2l)); the rounding of the summary width makes the count only approximately monotone in the stride.
    """

    id = "fixed"
    description = "Each token's own block plus the last `summary` tokens of every block (Sparse Transformer, fixed)"
    paper = "Child et al. 2019, Generating Long Sequences with Sparse Transformers (arXiv 1904.10509)"
    minimums: ClassVar[dict[str, int]] = {"stride": 1, "summary": 0}
    budget = "stride"
    stride: int = 128
    summary: int = 8

    def validate(self) -> None:
        if self.summary > self.stride:
            raise ValueError(f"fixed: summary must be in [0, stride={self.stride}], got {self.summary}")

    def with_budget(self, value: int) -> Mask:
        # keep the paper's summary/stride ratio as the stride moves
        ratio = self.summary / self.stride
        stride = max(1, int(value))
        return Fixed(stride=stride, summary=min(stride, max(1, round(ratio * stride))) if ratio > 0 else 0)

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        # causal count ≈ N(l + 1)/2 + c·N²/(2l) with c/l fixed ⇒ l ≈ 2((1 − s)E − (c/l)·N²/2)/N − 1
        n = n_keys
        ratio = self.summary / self.stride
        per_row = (1 - sparsity) * ((n + 1) / 2 if causal else n) - ratio * (n / 2 if causal else n)
        return round(2 * per_row - 1) if causal else round(per_row)

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        # below stride/summary the rounded summary width would swallow the whole block
        low = math.ceil(self.stride / self.summary) if self.summary else 1
        return max(1, low), max(low, n_keys)

    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        same = torch.div(q, self.stride, rounding_mode="floor") == torch.div(k, self.stride, rounding_mode="floor")
        return same | (k % self.stride >= self.stride - self.summary)
