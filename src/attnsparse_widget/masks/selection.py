"""Score-dependent, token-level selections: top-k per query, DeepSeek Sparse Attention (DSA), H2O heavy hitters,
MInference vertical-slash. Each reads the layer's own attention logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Mask, MaskContext, Tensor, keys_per_row_for_sparsity, sparsity_of, window_for_sparsity


def topk_keep(scores: Tensor, k: int) -> Tensor:
    """Bool mask of the diagonal plus the ``k - 1`` largest other entries of each row (-inf is never chosen).

    The diagonal (the query's own key) counts towards ``k``, so row i keeps exactly min(i + 1, k) keys and the
    count formula of a window applies (the H2O reference does the same: ``topk(acc, H - 1) ∪ {t}``).
    One unsorted ``topk`` of size k: if the diagonal is among the k picks they are exactly the diagonal plus the
    k − 1 best others; if not, the smallest pick gives its place to the diagonal.
    """
    n_q, n_k = scores.shape[-2], scores.shape[-1]
    k = max(1, min(k, n_k))
    first = n_k - n_q
    values, idx = scores.topk(k, dim=-1, sorted=False)
    q = torch.arange(first, n_k, device=scores.device).unsqueeze(-1)
    has_diag = (idx == q).any(-1, keepdim=True)
    take = values > float("-inf")
    smallest = values.argmin(-1, keepdim=True)
    take.scatter_(-1, smallest, take.gather(-1, smallest) & has_diag)
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, idx, take)
    keep.diagonal(offset=first, dim1=-2, dim2=-1).fill_(True)
    return keep


@dataclass(frozen=True)
class TopK(Mask):
    """keep(h, i, j) = j == i, or j is among the ``k - 1`` largest other logits q_i^h·k_j^h (j <= i), per head.

    Generic dynamic sparsity (used as the search target of MInference). Row i keeps min(i+1, k) keys whatever the
    scores, so the count equals a window's: k = round(Winv(s)) (sparse-patterns.md §1, 5a).
    """

    id = "topk"
    description = "Each query keeps its `k` highest-scoring keys, per head (oracle dynamic sparsity)"
    paper = "Generic top-k attention; cf. Gupta et al. 2021 (arXiv 2106.06899), MInference (arXiv 2407.02490)"
    minimums: ClassVar[dict[str, int]] = {"k": 1}
    budget = "k"
    score_dependent = True
    drops_by_position = True  # row i keeps min(i + 1, k): the rows that lose a pair do not depend on the scores
    k: int = 64

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        return topk_keep(scores, self.k)

    def closed_form_budget(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        if causal:
            return window_for_sparsity(sparsity, n_keys)
        return max(1, round((1 - sparsity) * n_keys))


@dataclass(frozen=True)
class DSA(Mask):
    """keep(i, j) = j == i, or j is among the ``k - 1`` other keys with the highest index score
    I[i, j] = Σ_h softmax(q_i^h·K^h)[j]; one set per query, shared by every head of the layer.

    DeepSeek Sparse Attention (DeepSeek-V3.2-Exp; adopted by GLM-5): a lightning indexer
    I[t,s] = Σ_j w[t,j]·ReLU(q^I[t,j]·k^I[s]) picks k = 2048 keys per query, applied as an additive -inf mask
    shared by all heads. A dense-trained model has no indexer weights, so this is the *oracle* indexer: the
    layer's own dense attention summed over heads, exactly the target the real indexer is trained to match
    (its warm-up loss is KL(p_t ‖ softmax(I_t)) with p_t that sum). k = 2048 is a no-op below 2048 tokens; the
    slider sets k = round(Winv(s)).
    """

    id = "dsa"
    description = "DeepSeek Sparse Attention: top-`k` keys per query, one set shared by all heads (oracle indexer)"
    paper = "DeepSeek-AI 2025, DeepSeek-V3.2 (DSA) (arXiv 2512.02556); GLM-5"
    minimums: ClassVar[dict[str, int]] = {"k": 1}
    budget = "k"
    score_dependent = True
    drops_by_position = True  # row i keeps min(i + 1, k): the rows that lose a pair do not depend on the scores
    k: int = 2048
    paper_params: ClassVar[dict[str, int]] = {"k": 2048}

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        index = torch.softmax(scores, dim=-1).sum(0, keepdim=True).nan_to_num_(0.0)  # rows with no key: 0
        index = index.masked_fill_(scores[:1] == float("-inf"), float("-inf"))
        return topk_keep(index, self.k)

    def closed_form_budget(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return TopK.closed_form_budget(self, sparsity, n_keys, causal)  # type: ignore[arg-type]


@dataclass(frozen=True)
class H2O(Mask):
    """Greedy heavy hitters plus a recent window, per head (H2O's ``local_heavy_hitter_mask``).

    With H = kv_budget // 2 heavy and R = kv_budget − H recent keys: rows t < H keep all keys; the running score
    acc[j] starts as the summed (unmasked) softmax of rows 0..H−1; each later row t keeps {t} ∪ topk(acc, H − 1)
    and then adds its own unmasked softmax to acc, zeroing keys it evicted (they never return). Finally
    keep(t, j) |= t − j < R. Zhang et al. 2023 (arXiv 2306.14048); paper: heavy ratio = recent ratio = 0.1
    ("20 % KV"), which drops ≈ 64 % of causal pairs, not 80 % (sparse-patterns.md §2.8). The slider sets the
    total per-row budget (bisection from the spec's guess H + R = round(Winv(s))). A decode-time idea: causal
    models only, and not row-local (row t depends on the rows before it); called with fewer query rows than keys,
    the missing earlier rows count as zero attention. Each row's running score is non-zero on exactly the H keys
    the previous row kept, so the greedy loop carries those H (key, score) pairs: O(T·H) per head instead of O(T²).
    """

    id = "h2o"
    description = "Heavy hitters: keep the keys with the most accumulated attention plus a recent window (H2O)"
    paper = "Zhang et al. 2023, H2O: Heavy-Hitter Oracle (arXiv 2306.14048)"
    minimums: ClassVar[dict[str, int]] = {"kv_budget": 2}  # one heavy hitter (the query itself) and one recent key
    budget = "kv_budget"
    fixed_part = "the query and its most recent key"
    score_dependent = True
    row_local = False
    supports_encoder = False
    kv_budget: int = 64

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 2, max(2, 2 * n_keys)

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return keys_per_row_for_sparsity(sparsity, n_keys, causal)  # spec §1: H + R = round(Winv(s))

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        heads, n_q, n_k = scores.shape
        device = scores.device
        heavy = self.kv_budget // 2
        recent = self.kv_budget - heavy
        first = n_k - n_q  # key position of query row 0
        q = torch.arange(first, n_k, device=device).unsqueeze(-1)
        k = torch.arange(n_k, device=device).unsqueeze(0)
        keep = ((q - k) < recent).expand(heads, n_q, n_k).clone()  # the recent band
        dense_rows = max(0, min(heavy - first, n_q))  # rows t < heavy keep every key
        keep[:, :dense_rows] = True
        if dense_rows == n_q:
            return keep
        probs = torch.softmax(scores, dim=-1)  # each row's unmasked attention (NaN only on rows with no key)
        # After any row the running score is non-zero only on the `heavy` keys that row kept, so it is carried as
        # (ids, vals) pairs: the greedy step "topk(acc, H - 1) ∪ {t}" evicts the smallest pair and puts t there.
        ids = torch.arange(heavy, device=device).expand(heads, heavy).contiguous()
        if dense_rows:  # summed softmax of the dense rows 0..H-1 over keys 0..H-1 (zero beyond, as in H2O)
            vals = probs[:, :dense_rows, :heavy].sum(1).nan_to_num_(0.0)
        else:  # decoding rows only: the earlier rows are unknown and count as zero attention
            vals = torch.zeros(heads, heavy, device=device)
        picks = torch.empty(heads, n_q - dense_rows, heavy, dtype=torch.long, device=device)
        for r in range(dense_rows, n_q):  # inherently sequential: each row evicts from what the last one kept
            slot = vals.argmin(-1, keepdim=True)
            ids.scatter_(-1, slot, first + r)
            vals.scatter_(-1, slot, 0.0)
            vals.add_(probs[:, r].gather(-1, ids).nan_to_num_(0.0))
            picks[:, r - dense_rows] = ids
        keep[:, dense_rows:].scatter_(-1, picks, True)
        return keep


_FORCED = 1e6


@dataclass(frozen=True)
class VerticalSlash(Mask):
    """keep(i, j) = j in V or (i − j) in S: a set V of key columns and a set S of diagonals, per head.

    MInference's vertical-slash pattern (Jiang et al. 2024, arXiv 2407.02490): from the softmax of the last
    ``last_q`` queries, V = the top-v columns by summed attention and S = the top-s diagonal offsets by summed
    attention; the first ``sink_columns`` columns and the ``local_diagonals`` nearest diagonals are forced
    (MInference forces 30 and 30-100; here 4 and 4 for short texts; when the budget is smaller than the
    forced set, the first columns and nearest diagonals win), and v : s is fixed by
    ``vertical_fraction`` (MInference's default (1000, 6096) ≈ 0.14; search grid up to 0.97). Budget = v + s
    ("size"), first sized on the canonical realisation (first v columns, nearest s diagonals: count Kwin(v + s),
    see ``realised_sparsity``); on real attention the chosen far columns/diagonals are shorter and keep fewer
    pairs, so a sparse pass sizes it again per layer on the layer's own scores. Not row-local: every row uses the
    last queries' statistics. Causal models only (the "last queries" are a prefill-then-decode idea).
    """

    id = "vertical_slash"
    description = "Top columns plus top diagonals chosen from the last queries' attention (MInference)"
    paper = "Jiang et al. 2024, MInference 1.0 (arXiv 2407.02490)"
    minimums: ClassVar[dict[str, int]] = {"size": 1, "last_q": 1, "sink_columns": 0, "local_diagonals": 0}
    budget = "size"
    fixed_part = "one column or diagonal (the diagonal itself)"
    score_dependent = True
    row_local = False
    supports_encoder = False  # "the last queries" is a prefill-then-decode idea
    size: int = 7096
    paper_params: ClassVar[dict[str, int]] = {"size": 7096, "last_q": 64}
    vertical_fraction: float = 0.14
    last_q: int = 64
    sink_columns: int = 4
    local_diagonals: int = 4

    def validate(self) -> None:
        if not 0.0 <= self.vertical_fraction <= 1.0:
            raise ValueError(f"vertical_slash: vertical_fraction must be in [0, 1], got {self.vertical_fraction}")

    def budget_range(self, n_keys: int, causal: bool) -> tuple[int, int]:
        return 1, max(1, 2 * n_keys)

    def budget_guess(self, sparsity: float, n_keys: int, causal: bool) -> int | None:
        return keys_per_row_for_sparsity(sparsity, n_keys, causal)  # kept/row ≈ v + s

    def select(self, scores: Tensor, ctx: MaskContext) -> Tensor:
        heads, n_q, n_k = scores.shape
        device = scores.device
        last = torch.softmax(scores[:, -min(self.last_q, n_q) :], dim=-1).nan_to_num(0.0)  # [H, Lq, Tk]
        q_last = torch.arange(n_k - last.shape[1], n_k, device=device).unsqueeze(-1)
        k = torch.arange(n_k, device=device).unsqueeze(0)
        offset = (q_last - k).clamp_min(0)  # diagonal index of each entry (future entries carry zero mass)
        vertical = last.sum(1)  # [H, Tk]
        slash = torch.zeros(heads, n_k, dtype=last.dtype, device=device).scatter_add_(
            -1, offset.flatten().expand(heads, -1), last.flatten(1)
        )
        return self._keep_from_stats(vertical, slash, n_q)

    def _keep_from_stats(self, vertical: Tensor, slash: Tensor, n_q: int) -> Tensor:
        """The mask from column scores ``vertical [H, Tk]`` and diagonal scores ``slash [H, Tk]`` (offset i − j)."""
        heads, n_k = vertical.shape
        device = vertical.device
        # forced entries rank first, the first columns and the nearest diagonals first (attention sums are <= last_q,
        # so these priorities sit above every real value and stay distinct in float32)
        vertical[:, : self.sink_columns] = _FORCED - torch.arange(min(self.sink_columns, n_k), device=device)
        slash[:, : self.local_diagonals] = _FORCED - torch.arange(min(self.local_diagonals, n_k), device=device)
        n_v = min(n_k, round(self.size * self.vertical_fraction))
        n_s = min(n_k, self.size - n_v)
        cols = torch.zeros(heads, n_k, dtype=torch.bool, device=device)
        diags = torch.zeros(heads, n_k, dtype=torch.bool, device=device)
        if n_v > 0:
            cols.scatter_(-1, vertical.topk(n_v, dim=-1).indices, True)
        if n_s > 0:
            diags.scatter_(-1, slash.topk(n_s, dim=-1).indices, True)
        return cols[:, None, :] | toeplitz_lower(diags, n_q)

    def realised_sparsity(self, n_keys: int, causal: bool = True) -> float:
        """Sparsity of the pattern's canonical realisation: the first v columns and the nearest s diagonals.

        That is the shape vertical-slash is built for (sink columns + local diagonals), and row i then keeps exactly
        min(i + 1, v + s) keys, the spec's "kept/row ≈ v + s" (count Kwin(v + s)). No score matrix can stand in
        for it: within one query row a column j is the diagonal i − j, so scores that favour the first columns
        favour the farthest, shortest diagonals (sizing on them made real masks ~3x denser than asked).
        """
        ramp = -torch.arange(n_keys, dtype=torch.float32).unsqueeze(0)
        keep = (
            self._keep_from_stats(ramp.clone(), ramp.clone(), n_keys)
            & torch.ones(n_keys, n_keys, dtype=torch.bool).tril()
        )
        keep.diagonal(dim1=-2, dim2=-1).fill_(True)
        return sparsity_of(keep, causal)


def toeplitz_lower(diags: Tensor, n_queries: int) -> Tensor:
    """``[H, Tq, Tk]`` bool with ``out[h, r, j] = diags[h, i - j]`` for ``j <= i`` (``i = Tk - Tq + r``), else False.

    Built as a strided view of one padded row (no per-element gather): with ``w = [reversed(diags), False * Tk]``,
    ``w[Tk - 1 - i + j] = diags[i - j]``; rows of the view ``v[a, j] = w[a + j]`` are taken at ``a = Tk - 1 - i``.
    """
    heads, n_k = diags.shape
    w = torch.cat([diags.flip(-1), torch.zeros_like(diags)], dim=-1).contiguous()  # [H, 2 Tk]
    view = w.as_strided((heads, n_k, n_k), (w.stride(0), 1, 1))  # view[h, a, j] = w[h, a + j]
    rows = torch.arange(n_queries - 1, -1, -1, device=diags.device)  # a = Tk - 1 - i for i = Tk - Tq .. Tk - 1
    return view[:, rows]
