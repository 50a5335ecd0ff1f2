"""The contract every sparse-attention pattern follows.

A pattern is a small frozen dataclass: its fields are its parameters (with the paper's defaults, scaled for short
teaching texts where the paper's value would be a no-op), and its class attributes say what it is. The engine only
ever talks to a pattern through :meth:`Mask.keep`, which returns the *final* keep-mask

    M'(i, j) = (M(i, j) & C(i, j)) | (i == j)

where ``C`` is the allowed set (``j <= i`` for causal models, everything for encoders). The diagonal is always kept
so no query row is ever empty (sparse-patterns.md §4: an empty row is a 0/0 softmax).

Positions: queries are the *last* ``n_queries`` positions of the ``n_keys`` keys (``n_queries == n_keys`` for a full
forward pass, ``1`` when decoding with a KV cache). Masks never see padding: the engine compacts each padded row
to its valid tokens before calling them, and scatters the result back.

The sparsity slider: ``s = 1 - kept / allowed`` over the realised mask (sparse-patterns.md §0). ``with_sparsity``
turns one requested ``s`` into the pattern's budget parameter, by the closed form the spec gives where there is
one, else by bisection of the integer budget on the realised mask (score-dependent patterns are realised on a
surrogate score that prefers the earliest keys: their kept *count* hardly depends on the scores, see spec §3.2).
The achieved value is always measured again on the mask actually applied.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

Tensor = torch.Tensor


class SparsityOutOfReach(UserWarning):
    """The requested sparsity is outside what the pattern can realise at this length; the nearest value is used."""


@dataclass(frozen=True)
class MaskContext:
    """What a pattern may know besides positions and scores."""

    causal: bool = True
    layer: int = 0
    n_heads: int = 1
    kv_groups: int = 1  # query heads per key/value head (GQA); patterns that share a selection per group use it
    seed: int = 0


@dataclass(frozen=True)
class Mask:
    """Base class of every pattern. Subclasses set the class attributes and implement ``pattern`` or ``select``."""

    id: ClassVar[str] = ""
    description: ClassVar[str] = ""  # one line, shown in dropdowns
    paper: ClassVar[str] = ""  # short citation, e.g. "Xiao et al. 2023, StreamingLLM (arXiv 2309.17453)"
    budget: ClassVar[str | None] = None  # the integer field the sparsity slider sets; None: no slider
    score_dependent: ClassVar[bool] = False  # True: `select` reads the layer's attention logits
    row_local: ClassVar[bool] = True  # row i depends only on row i (and positions): exact under KV-cache decoding
    varies_by_layer: ClassVar[bool] = False  # a static pattern that differs between layers (seeded per layer)
    # score-dependent patterns whose rows that lose a pair depend on positions only (they keep min(i + 1, k) keys);
    # static patterns always do
    drops_by_position: ClassVar[bool] = False
    supports_encoder: ClassVar[bool] = True  # False for decode-time ideas (KV eviction) that need causality
    minimums: ClassVar[dict[str, int]] = {}  # parameter -> smallest valid value (checked on construction)

    def __post_init__(self) -> None:
        """Check every parameter: its type (an int field takes ints, integral floats are converted), its minimum,
        then any rule of the pattern's own (:meth:`validate`)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            wants_int = isinstance(f.default, int)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                kind = "an int" if wants_int else "a finite number"
                raise TypeError(f"{self.id}: {f.name} must be {kind}, got {value!r}")
            if wants_int and not isinstance(value, int):
                if not float(value).is_integer():
                    raise TypeError(f"{self.id}: {f.name} must be a whole number, got {value!r}")
                object.__setattr__(self, f.name, int(value))
            low = self.minimums.get(f.name)
            if low is not None and getattr(self, f.name) < low:
                raise ValueError(f"{self.id}: {f.name} must be >= {low}, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Rules beyond per-parameter minimums (override; raise ValueError naming the parameter)."""

    # ----------------------------------------------------------------------------------------------- to implement
    def pattern(self, q: Tensor, k: Tensor, ctx: MaskContext) -> Tensor:
        """Static patterns: the raw rule ``M`` as a bool tensor broadcast from positions.

        ``q`` has shape ``[Tq, 1]`` and ``k`` shape ``[1, Tk]`` (int64 positions). Return a bool tensor of shape
        ``[Tq, Tk]`` or ``[H, Tq, Tk]`` (head-dependent patterns). No need to apply causality or the diagonal.
        """
        raise NotImplementedError

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        """Score-dependent patterns: the raw rule ``M`` from the layer's attention logits.

        ``scores`` is float32 ``[H, Tq, Tk]``: ``q·k * scaling`` (after any logit soft-capping), with ``-inf`` on
        pairs that are not allowed (future keys, keys the model's own mask excludes). Return bool ``[H, Tq, Tk]``
        (or ``[1, Tq, Tk]`` for a selection shared by all heads).
        """
        raise NotImplementedError

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        """Smallest and largest meaningful value of the budget field at this length (denser as it grows)."""
        return 1, max(1, n_keys)

    def closed_form_budget(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        """The spec's closed-form budget for ``sparsity``, or None to bisect on the realised mask."""
        return None

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        """An estimate of the budget (the spec's approximate count formula) that the bisection starts from.

        Only a speed-up: the search gallops out from it and bisects on the realised mask, so a poor guess costs a
        few more evaluations, never a different answer.
        """
        return None

    # ------------------------------------------------------------------------------------------------- provided
    def keep(
        self,
        n_keys: int,
        *,
        n_queries: int | None = None,
        scores: Tensor | None = None,
        ctx: MaskContext | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """The final keep-mask ``(M & C) | diagonal`` as bool ``[H or 1, Tq, Tk]``."""
        ctx = ctx or MaskContext()
        if not ctx.causal and not self.supports_encoder:
            raise ValueError(
                f"mask {self.id!r} is a decoding-time pattern and needs a causal model; for encoders use one of the "
                f"symmetric patterns (sliding_window, global_local, bigbird, strided, topk, ...)"
            )
        n_queries = n_keys if n_queries is None else n_queries
        if scores is not None:
            device = scores.device
        q = torch.arange(n_keys - n_queries, n_keys, device=device).unsqueeze(-1)
        k = torch.arange(n_keys, device=device).unsqueeze(0)
        if self.score_dependent:
            if scores is None:
                raise ValueError(
                    f"mask {self.id!r} is chosen from attention scores: pass scores=[heads, queries, keys] "
                    f"(or [queries, keys])"
                )
            if scores.dim() == 2:
                scores = scores.unsqueeze(0)
            scores = scores.float()
            if ctx.causal:
                scores = scores.masked_fill(k > q, float("-inf"))
            raw = self.select(scores, ctx)
        else:
            raw = self.pattern(q, k, ctx)
        if raw.dim() == 2:
            raw = raw.unsqueeze(0)
        out = raw & (k <= q) if ctx.causal else raw.clone()  # a fresh tensor, finished in place
        out.diagonal(offset=n_keys - n_queries, dim1=-2, dim2=-1).fill_(True)
        return out

    def with_budget(self, value: int) -> Mask:
        """A copy with the budget field set."""
        assert self.budget is not None
        return dataclasses.replace(self, **{self.budget: int(value)})

    def with_sparsity(self, sparsity: float, n_keys: int, causal: bool = True) -> Mask:
        """A copy whose budget realises ``sparsity`` as closely as the pattern can at this length.

        Warns with :class:`SparsityOutOfReach` (and uses the nearest reachable value) when ``sparsity`` is outside
        :meth:`reachable_range`.
        """
        check_sparsity(sparsity)
        if self.budget is None:
            return self
        lo, hi = self.budget_range(n_keys, causal)
        s = self._sparsity_of_budget(n_keys, causal)
        closed = self.closed_form_budget(sparsity, n_keys, causal)
        if closed is not None:
            best = min(max(closed, lo), hi)
        else:
            best = self._bisect_budget(sparsity, n_keys, causal, lo, hi, s)
        achieved = s(best)
        smin, smax = s(hi), s(lo)
        if sparsity > smax + 0.5 / max(1, n_keys) or sparsity < smin - 0.5 / max(1, n_keys):
            warnings.warn(
                f"{self.id}: sparsity {sparsity:.3f} cannot be reached at {n_keys} tokens; this pattern reaches "
                f"{smin:.3f} to {smax:.3f} here, so {achieved:.3f} is used ({self.budget}={best}).",
                SparsityOutOfReach,
                stacklevel=2,
            )
        return self.with_budget(best)

    def reachable_range(self, n_keys: int, causal: bool = True) -> tuple[float, float]:
        """(min, max) sparsity the budget can realise at this length."""
        if self.budget is None:
            s = self.realised_sparsity(n_keys, causal)
            return s, s
        lo, hi = self.budget_range(n_keys, causal)
        return self.with_budget(hi).realised_sparsity(n_keys, causal), self.with_budget(lo).realised_sparsity(
            n_keys, causal
        )

    def realised_sparsity(self, n_keys: int, causal: bool = True) -> float:
        """Sparsity of the mask realised at this length (surrogate scores for score-dependent patterns)."""
        ctx = MaskContext(causal=causal)
        scores = surrogate_scores(n_keys) if self.score_dependent else None
        keep = self.keep(n_keys, scores=scores, ctx=ctx)
        return sparsity_of(keep, causal)

    def _sparsity_of_budget(self, n_keys: int, causal: bool):
        """``budget -> realised sparsity``, memoised (one search evaluates a budget once)."""
        memo: dict[int, float] = {}

        def s(b: int) -> float:
            if b not in memo:
                memo[b] = self.with_budget(b).realised_sparsity(n_keys, causal)
            return memo[b]

        return s

    def _bisect_budget(self, target: float, n_keys: int, causal: bool, lo: int, hi: int, s=None) -> int:
        # Sparsity falls as the budget grows: find the smallest budget whose sparsity is <= target (hi if none),
        # then pick whichever neighbour is nearer the target. The bracket is found by galloping out from the
        # pattern's budget_guess (if any), then bisected.
        s = s or self._sparsity_of_budget(n_keys, causal)
        a, b = lo, hi
        guess = self.budget_guess(target, n_keys, causal)
        if guess is not None and lo < hi:
            g = min(max(int(guess), lo), hi)
            step = 1
            if s(g) <= target:  # the answer is <= g
                b = g
                while b > lo:
                    probe = max(lo, b - step)
                    if s(probe) > target:
                        a = probe + 1
                        break
                    b, step = probe, step * 2
                a = min(a, b)
            else:  # the answer is > g
                a = g + 1
                while a < hi:
                    probe = min(hi, a - 1 + step)
                    if s(probe) <= target:
                        b = probe
                        break
                    a, step = probe + 1, step * 2
                a = min(a, hi)
        while a < b:
            mid = (a + b) // 2
            if s(mid) <= target:
                b = mid
            else:
                a = mid + 1
        if a > lo and abs(s(a - 1) - target) < abs(s(a) - target):
            return a - 1
        return a

    def params(self) -> dict[str, Any]:
        """The pattern's parameters and their current values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def label(self) -> str:
        """A self-describing name, e.g. ``sink_window(sinks=4, window=60)``."""
        inner = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.id}({inner})"


# --------------------------------------------------------------------------------------------------- shared math
def check_sparsity(sparsity: Any) -> float:
    """Validate a sparsity value; raise a message naming the value and the valid range."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a number in [0, 1), got {sparsity!r} ({type(sparsity).__name__})")
    if not math.isfinite(sparsity) or not 0.0 <= sparsity < 1.0:
        raise ValueError(
            f"sparsity must be in [0, 1) (the fraction of allowed query-key pairs dropped), got {sparsity!r}; "
            f"use e.g. 0.5 to drop half"
        )
    return float(sparsity)


def sparsity_of(keep: Tensor, causal: bool) -> float:
    """Achieved sparsity of a final keep-mask ``[..., Tq, Tk]`` for queries at the last Tq positions."""
    n_q, n_k = keep.shape[-2], keep.shape[-1]
    allowed = allowed_pairs(n_q, n_k, causal)
    heads = keep[..., :, :].numel() // (n_q * n_k)
    return 1.0 - float(keep.sum()) / (allowed * heads)


def allowed_pairs(n_queries: int, n_keys: int, causal: bool) -> int:
    """Number of allowed (query, key) pairs for queries at the last ``n_queries`` of ``n_keys`` positions."""
    if not causal:
        return n_queries * n_keys
    first = n_keys - n_queries  # row `first` has first+1 keys, the last row has n_keys
    return (first + 1 + n_keys) * n_queries // 2


def window_count(n: int, w: int) -> int:
    """Kept causal pairs of a window of ``w`` keys including self over ``n`` tokens: Kwin(W) = N·W − W(W−1)/2."""
    w = max(0, min(w, n))
    return n * w - w * (w - 1) // 2


def window_for_sparsity(sparsity: float, n: int) -> int:
    """Winv(s): the window (keys incl. self) whose causal sparsity is closest to ``sparsity`` (spec §1, verified)."""
    raw = ((2 * n + 1) - math.sqrt((2 * n + 1) ** 2 - 4 * (1 - sparsity) * n * (n + 1))) / 2
    w = min(max(1, round(raw)), n)
    # round() on the real root is within one of the best integer; settle ties on the exact count
    total = n * (n + 1) / 2
    candidates = [c for c in (w - 1, w, w + 1) if 1 <= c <= n]
    return min(candidates, key=lambda c: abs(1 - window_count(n, c) / total - sparsity))


def keys_per_row_for_sparsity(sparsity: float, n: int, causal: bool = True) -> int:
    """Keys per row whose "keep min(i + 1, k)" count realises ``sparsity``: Winv(s) causally, (1 − s)·n for an
    encoder. The starting point of most budget guesses (spec §3.2: budgeted selections keep min(i + 1, budget))."""
    if causal:
        return window_for_sparsity(sparsity, n)
    return max(1, round((1 - sparsity) * n))


def diagonal(n_queries: int, n_keys: int, device: torch.device | str | None = None) -> Tensor:
    """Bool ``[Tq, Tk]``: True where key == query, for queries at the last ``n_queries`` positions."""
    q = torch.arange(n_keys - n_queries, n_keys, device=device).unsqueeze(-1)
    return torch.arange(n_keys, device=device).unsqueeze(0) == q


def surrogate_scores(n: int) -> Tensor:
    """Logits ``-j`` that prefer the earliest keys: the stand-in used to size score-dependent budgets.

    Real attention concentrates on the first tokens (sinks) and on recent ones; selections driven by the earliest
    keys overlap least with forced local blocks and windows, so the budget sized here keeps as many pairs as a
    typical real selection (and exactly as many for token-level top-k and DSA, whose counts do not depend on the
    scores).
    """
    j = torch.arange(n).unsqueeze(0)
    return (-j.float()).expand(n, n).unsqueeze(0).clone()
