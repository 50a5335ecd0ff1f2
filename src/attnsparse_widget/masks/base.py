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
one, else by bisection of the integer budget on the realised mask. Score-dependent patterns are first sized on a
surrogate score that prefers the earliest keys; that is only an estimate (on real attention their choices overlap
their forced parts, windows, local or own blocks, and keep fewer pairs), so a sparse pass calibrates their budget
again per layer on the layer's real scores (:meth:`Mask.budget_for_scores`, :mod:`attnsparse_widget.capture`), and
reports a shortfall beyond :data:`SPARSITY_TOLERANCE` with :func:`sparsity_shortfall`. Every search is the one
:func:`search_budget`. The achieved value is always measured again on the mask actually applied.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
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


# from this length on a mask's paper sizes (masks.paper_sizes, from Mask.paper_params) are its defaults: NSA's
# 512-token window and Quest's pages of 16 are then a small part of a row, and the slider still reaches high
# sparsity (NSA: 0.86 at 8192)
LONG_TEXT_TOKENS = 4096


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
    # what the pattern keeps at any budget (it bounds the sparsity from above), for out-of-reach messages
    fixed_part: ClassVar[str] = "the pairs it always keeps"
    # the paper's published configuration; those of its values that differ from the defaults (shrunk for short
    # texts: NSA's blocks and window, Quest's pages), budget aside, are the defaults from LONG_TEXT_TOKENS on
    # (masks.paper_sizes), and the slider still sets the budget
    paper_params: ClassVar[dict[str, int]] = {}

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

    @property
    def budget_value(self) -> int:
        """The budget parameter's value (the mask must have one)."""
        assert self.budget is not None, f"{self.id} has no budget parameter"
        return int(getattr(self, self.budget))

    def with_budget(self, value: int) -> Mask:
        """A copy with the budget field set."""
        assert self.budget is not None
        return dataclasses.replace(self, **{self.budget: int(value)})

    def with_sparsity(self, sparsity: float, n_keys: int, causal: bool = True, *, warn: bool = True) -> Mask:
        """A copy whose budget realises ``sparsity`` as closely as the pattern can at this length.

        Warns with :class:`SparsityOutOfReach` (:func:`sparsity_shortfall`) when the nearest value it realises is
        more than :data:`SPARSITY_TOLERANCE` from ``sparsity``: outside :meth:`reachable_range`, or between two
        coarse budget steps. ``warn=False``: no warning (a caller that judges the mask actually applied instead, as
        a sparse pass does, whose score-dependent budgets are sized again on the real scores).
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
            best = search_budget(sparsity, s, lo, hi, self.budget_guess(sparsity, n_keys, causal))
        sized = self.with_budget(best)
        message = sparsity_shortfall(sized, sparsity, s(best), n_keys, causal, reach=(s(hi), s(lo)))
        if warn and message is not None:
            warnings.warn(message, SparsityOutOfReach, stacklevel=2)
        return sized

    def budget_for(
        self,
        sparsity: float,
        sparsity_at: Callable[[Mask], float],
        n_keys: int,
        causal: bool = True,
        start: int | None = None,
    ) -> int:
        """The budget whose realised sparsity, as measured by ``sparsity_at(mask with that budget)``, is nearest to
        ``sparsity``: the one search (:func:`search_budget`), memoised, galloping out from ``start`` (default: the
        current budget, e.g. :meth:`with_sparsity`'s estimate) within :meth:`budget_range`."""
        assert self.budget is not None, f"{self.id} has no budget parameter"
        lo, hi = self.budget_range(n_keys, causal)
        s = self._memoised(sparsity_at)
        return search_budget(sparsity, s, lo, hi, self.budget_value if start is None else start)

    def budget_for_scores(
        self,
        sparsity: float,
        scores: Tensor,
        ctx: MaskContext | None = None,
        allowed: Tensor | None = None,
        start: int | None = None,
    ) -> int:
        """The budget whose keep-mask on *these* scores realises the sparsity nearest to ``sparsity``.

        ``scores``: a layer's logits ``[H, Tq, Tk]`` (or ``[Tq, Tk]``) for queries at the last ``Tq`` of ``Tk``
        positions, ``-inf`` on pairs that are not allowed. ``allowed``: bool ``[Tq, Tk]``, the pairs that count
        (default: the causal set, or every pair for an encoder). Sparsity is ``1 - kept / allowed`` over all heads,
        as :func:`sparsity_of` measures it. Score-dependent patterns keep fewer pairs on real attention than on the
        surrogate when their choices overlap their forced parts (a window, local blocks, the own block), so the
        budget that :meth:`with_sparsity` sizes on the surrogate is only the starting point of this search.
        """
        check_sparsity(sparsity)
        ctx = ctx or MaskContext()
        if scores.dim() == 2:
            scores = scores.unsqueeze(0)
        n_q, n_k = scores.shape[-2], scores.shape[-1]
        if allowed is None:
            q = torch.arange(n_k - n_q, n_k, device=scores.device).unsqueeze(-1)
            k = torch.arange(n_k, device=scores.device).unsqueeze(0)
            allowed = (k <= q) if ctx.causal else torch.ones(n_q, n_k, dtype=torch.bool, device=scores.device)
        allowed = allowed.to(scores.device)

        def keep_of(mask: Mask) -> Tensor:
            return mask.keep(n_k, n_queries=n_q, scores=scores, ctx=ctx) & allowed

        return calibrate(self, sparsity, keep_of, allowed.sum(-1), n_k, ctx.causal, start)[0].budget_value

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

    def _sparsity_of_budget(self, n_keys: int, causal: bool) -> Callable[[int], float]:
        """``budget -> realised sparsity`` at this length (surrogate scores), memoised."""
        return self._memoised(lambda mask: mask.realised_sparsity(n_keys, causal))

    def _memoised(self, sparsity_at: Callable[[Mask], float]) -> Callable[[int], float]:
        """``budget -> sparsity_at(this mask with that budget)``, memoised: one search evaluates a budget once."""
        memo: dict[int, float] = {}

        def s(b: int) -> float:
            if b not in memo:
                memo[b] = sparsity_at(self.with_budget(b))
            return memo[b]

        return s

    def params(self) -> dict[str, Any]:
        """The pattern's parameters and their current values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def label(self, budgets: Mapping[int, int] | None = None) -> str:
        """A self-describing name, e.g. ``sink_window(sinks=4, window=60)``; with the per-layer ``budgets`` a
        calibrated pass chose, the budget reads as their range, e.g. ``moba(k=2–3 per layer, block=16)``."""
        values: dict[str, Any] = self.params()
        if budgets and self.budget is not None:
            values[self.budget] = budget_range_text(budgets)
        inner = ", ".join(f"{k}={v}" for k, v in values.items())
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


def by_position_sparsity(mask: Mask, row_allowed: Tensor) -> float:
    """The sparsity of a mask that drops by position (top-k, DSA): row i keeps ``min(its allowed keys, k)`` whatever
    the scores, so it is counted from ``row_allowed`` (the allowed keys of each query row)."""
    return 1.0 - float(row_allowed.clamp(max=mask.budget_value).sum()) / max(1.0, float(row_allowed.sum()))


KEEPS_REMEMBERED = 3  # keep-masks a calibration holds on to (the answer is one of the last few it evaluated)


def calibrate(
    mask: Mask,
    target: float,
    keep_of: Callable[[Mask], Tensor],
    row_allowed: Tensor,
    n_keys: int,
    causal: bool = True,
    start: int | None = None,
) -> tuple[Mask, Tensor]:
    """The one calibration on real scores: ``mask`` with the budget whose keep-mask drops the fraction of the allowed
    pairs nearest ``target`` (the one search, :meth:`Mask.budget_for`, galloping out from ``start``), and that
    keep-mask. :meth:`Mask.budget_for_scores` (and so ``build`` with scores) and the sparse pass
    (``capture.calibration.calibrated``, one layer's real logits) both size budgets here.

    ``keep_of(candidate)``: the candidate's final keep-mask ``[..., H, Tq, Tk]`` within the allowed pairs.
    ``row_allowed``: the allowed keys of each query row ``[..., Tq]``; its sum is the allowed pairs per head.
    Masks that drop by position (top-k, DSA: a row keeps ``min(its allowed keys, k)`` whatever the scores) are
    counted from it, with no keep-mask built until the budget is chosen.
    """
    n_allowed = float(row_allowed.sum())
    keeps: dict[int, Tensor] = {}

    def sparsity_at(candidate: Mask) -> float:
        if mask.drops_by_position:
            return by_position_sparsity(candidate, row_allowed)
        keep = keep_of(candidate)
        keeps[candidate.budget_value] = keep
        while len(keeps) > KEEPS_REMEMBERED:
            keeps.pop(next(iter(keeps)))
        heads = keep.shape[-3] if keep.dim() >= 3 else 1
        return 1.0 - float(keep.sum()) / max(1.0, n_allowed * heads)

    chosen = mask.with_budget(mask.budget_for(target, sparsity_at, n_keys, causal, start))
    keep = keeps.get(chosen.budget_value)
    return chosen, keep_of(chosen) if keep is None else keep


def search_budget(target: float, s: Callable[[int], float], lo: int, hi: int, start: int | None = None) -> int:
    """The integer budget in ``[lo, hi]`` whose sparsity ``s(b)`` is nearest to ``target`` (the one budget search).

    ``s`` falls as the budget grows (non-increasing; memoise it: a budget is evaluated at most once per call
    when it is). Finds the smallest budget whose sparsity is <= target (``hi`` if none), then picks whichever of
    it and its lower neighbour is nearer. The bracket is found by galloping out from ``start`` (an estimate:
    the spec's count formula, or the budget sized on surrogate scores) in steps 1, 2, 4, ..., then bisected, so
    a good estimate costs about three evaluations and a poor one a few more, never a different answer.
    """
    a, b = lo, hi
    if start is not None and lo < hi:
        g = min(max(int(start), lo), hi)
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


def calibrated_per_layer(mask: Mask | None) -> bool:
    """Whether a sparse pass sizes this mask's budget per layer on the layer's real scores: score-dependent
    patterns with a budget (the pairs they keep depend on where the choices fall against their forced parts)."""
    return mask is not None and mask.score_dependent and mask.budget is not None


def budget_range_text(budgets: Mapping[int, int]) -> str:
    """Per-layer budgets in a few characters: ``"3"`` when every layer has the same, else ``"2–5 per layer"``."""
    lo, hi = min(budgets.values()), max(budgets.values())
    return f"{lo}" if lo == hi else f"{lo}–{hi} per layer"


SPARSITY_TOLERANCE = 0.02  # achieved sparsity farther than this from the request is reported as out of reach


def out_of_reach_message(
    mask_id: str, requested: float, achieved: float, used: str, why: str, estimated: bool = False
) -> str:
    """The one wording of a :class:`SparsityOutOfReach` warning: what was asked, what is used, and why.
    ``estimated``: the budget was sized before the real scores were known (a score-dependent mask built without
    a pass), so ``achieved`` is its value on a stand-in score and the real scores will move it."""
    if estimated:
        return (
            f"{mask_id}: sparsity {requested:.3f} cannot be reached: {why}; {used} is used (about {achieved:.3f} "
            "on a stand-in score: the achieved sparsity depends on the real scores)."
        )
    return f"{mask_id}: sparsity {requested:.3f} cannot be reached: {why}; {achieved:.3f} is used ({used})."


def sparsity_shortfall(
    mask: Mask,
    requested: float,
    achieved: float,
    n_keys: int,
    causal: bool = True,
    budgets: Mapping[int, int] | None = None,
    reach: tuple[float, float] | None = None,
) -> str | None:
    """The :class:`SparsityOutOfReach` message when ``achieved`` is more than :data:`SPARSITY_TOLERANCE` from
    ``requested`` (what was asked, what is used, and why), else None. The one judge of a request, for the slider's
    own sizing (:meth:`Mask.with_sparsity`) and for a sparse pass's outcome.

    ``budgets``: the per-layer budgets a pass calibrated on real scores (:mod:`attnsparse_widget.capture`). Why the
    request was missed is then read off them: every layer at the sparsest (densest) end of the budget's range means
    the pattern's fixed part at this length; otherwise steps too coarse for the layers to average out. Without
    them the budget is one value, and ``reach`` (default: :meth:`Mask.reachable_range`) tells a request outside the
    pattern's range at this length from one between two budget steps (block granularity).
    """
    if abs(achieved - requested) <= SPARSITY_TOLERANCE:
        return None
    if mask.budget is None:
        why = "the pattern has no budget, it keeps the same pairs whatever the request"
        return out_of_reach_message(mask.id, requested, achieved, "its fixed pattern", why)
    if budgets:
        lo, hi = mask.budget_range(n_keys, causal)
        used = f"{mask.budget}={budget_range_text(budgets)}, sized per layer on its scores"
        values = set(budgets.values())
        if achieved < requested and values == {lo}:
            why = (
                f"at {n_keys} tokens even its sparsest setting ({mask.budget}={lo}) keeps {mask.fixed_part}, so it "
                f"drops at most {achieved:.3f} here"
            )
        elif achieved > requested and values == {hi}:
            why = f"at {n_keys} tokens even its densest setting ({mask.budget}={hi}) drops pairs"
        else:
            why = (
                f"its budget moves in whole steps ({mask.budget} ± 1 changes a layer's sparsity by more than the "
                f"layers can average out at {n_keys} tokens)"
            )
        return out_of_reach_message(mask.id, requested, achieved, used, why)
    used = f"{mask.budget}={mask.budget_value}"
    smin, smax = reach if reach is not None else mask.reachable_range(n_keys, causal)
    slack = 0.5 / max(1, n_keys)
    if requested > smax + slack or requested < smin - slack:
        why = f"at {n_keys} tokens this pattern reaches {smin:.3f} to {smax:.3f}"
    else:
        why = f"its budget moves in whole steps at {n_keys} tokens, and {used} is the nearest"
    return out_of_reach_message(mask.id, requested, achieved, used, why, estimated=mask.score_dependent)


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
