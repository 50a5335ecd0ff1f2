"""Quality metrics of a sparse run against the dense run (sparse-patterns.md §5). Pure functions, float32.

Attention rows (``P`` dense, ``Q`` sparse, ``S_i`` the kept keys of row i):
    mass recall   R_i = Σ_{j∈S_i} P_ij                     (dense probability on kept pairs)
    row KL        KL(Q_i ‖ P_i) = Σ_{j∈S_i} Q_ij log(Q_ij / P_ij)   (forward KL(P‖Q) is infinite whenever R_i < 1)
Next-token distributions (``p`` dense, ``q`` sparse, over the vocabulary, per position t):
    KL_t = Σ_v p_t(v) log(p_t(v) / q_t(v));  top-1 agreement = mean_t [argmax p_t = argmax q_t]
Perplexity:  PPL = exp(mean_t −log p(x_{t+1} | x_≤t));  ΔNLL = log PPL_sparse − log PPL_dense.
Adaptation:  recovered = (PPL_post-hoc − PPL_adapted) / (PPL_post-hoc − PPL_dense).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

Tensor = torch.Tensor
_TINY = 1e-30  # floor for dense probabilities that underflowed to 0 where the sparse row still has mass


def token_nll(logits: Tensor, ids: Tensor) -> Tensor:
    """Negative log-likelihood of each next token: ``logits [T, V]``, ``ids [T]`` → ``[T-1]`` (float32)."""
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)
    return next_token_nll(logp, ids[1:])


def next_token_nll(logp: Tensor, targets: Tensor) -> Tensor:
    """``−log p(target)`` per position: log-probabilities ``[n, V]`` and the next tokens ``[m]`` (m <= n; the last
    position of a text has no next token) → ``[m]``."""
    return -logp[: targets.shape[0]].gather(-1, targets[:, None]).squeeze(-1)


def next_token_nll_from_logits(logits: Tensor, lse: Tensor, targets: Tensor) -> Tensor:
    """The same from logits ``[n, V]`` and their log-normaliser ``[n]``: ``lse − z(target)``."""
    m = targets.shape[0]
    return lse[:m] - logits[:m].gather(-1, targets[:, None]).squeeze(-1)


def perplexity(nll: Tensor) -> float:
    return math.exp(float(nll.mean())) if nll.numel() else float("nan")


def paired_standard_error(nll_a: Tensor, nll_b: Tensor) -> float:
    """Standard error of mean(nll_a − nll_b), the per-token differences taken as a sample: std / √n (nan under two
    tokens). A scale for the noise of ΔNLL on one text, not a confidence interval: neighbouring positions are
    correlated, so it understates the spread over texts."""
    diff = (nll_a.double() - nll_b.double()).flatten()
    n = diff.numel()
    return float(diff.std(unbiased=True)) / math.sqrt(n) if n >= 2 else float("nan")


def next_token_kl(
    dense_logits: Tensor, dense_probs: Tensor, dense_lse: Tensor, sparse_logits: Tensor, sparse_lse: Tensor
) -> tuple[Tensor, Tensor]:
    """KL(p_dense ‖ p_sparse) of the next-token distribution per position, and ``‖logits_s − logits_d‖²`` per
    position, from logits ``[n, V]``, the dense probabilities and both log-normalisers ``[n]``:

        KL_t = Σ_v p(v) (log p(v) − log q(v)) = Σ_v p(v) (z_d(v) − z_s(v)) − lse_d + lse_s

    (``log p = z_d − lse_d``, ``log q = z_s − lse_s``, ``Σ p = 1``): one pass over the logits' difference, exactly 0
    where the logits are equal."""
    diff = dense_logits - sparse_logits
    kl = torch.einsum("tv,tv->t", dense_probs, diff) - dense_lse + sparse_lse
    return kl.clamp_min(0.0), torch.einsum("tv,tv->t", diff, diff)


def top1_agreement(dense_argmax: Tensor, sparse_argmax: Tensor) -> float:
    """Fraction of positions where both regimes predict the same next token."""
    return float((dense_argmax == sparse_argmax).float().mean())


def head_recall(dense: Tensor, keep: Tensor) -> Tensor:
    """One head's mass recall per row: ``dense [Tq, Tk]``, ``keep [Tq, Tk]`` → ``[Tq]``. (Head by head: the
    temporaries stay a head's size, 16 MB at 2048 tokens instead of 150.)"""
    return (dense.float() * keep).sum(-1)


def head_row_kl(sparse: Tensor, dense: Tensor) -> Tensor:
    """One head's KL(sparse ‖ dense) per row over the sparse row's support: ``[Tq, Tk]`` x2 → ``[Tq]``, as
    ``Σ q log(q / p)`` with the ratio set to 1 off the support (pairs there add exactly 0, and one logarithm per
    pair is all it costs)."""
    q, p = sparse.float(), dense.float().clamp_min(_TINY)
    ratio = torch.where(q > 0, q / p, 1.0)
    return (q * torch.log(ratio)).sum(-1).clamp_min(0.0)


def recovered_fraction(dense_ppl: float, sparse_ppl: float, adapted_ppl: float) -> float | None:
    """The fraction of the perplexity gap that adaptation won back: ``(PPL_post-hoc − PPL_adapted) / (PPL_post-hoc
    − PPL_dense)`` (1: back to dense; 0: no better than the mask forced on the dense model; negative: worse; above
    1: better than dense). None when the mask cost nothing to win back (a gap under 1e-6 of the dense perplexity)."""
    gap = sparse_ppl - dense_ppl
    if not math.isfinite(gap) or abs(gap) <= 1e-6 * max(1.0, abs(dense_ppl)):
        return None
    return (sparse_ppl - adapted_ppl) / gap


def achieved_sparsity(kept: Tensor, allowed: Tensor) -> Tensor:
    """Per head: 1 − kept/allowed, from pair counts (``kept [H|1]``, ``allowed`` a scalar count)."""
    return 1.0 - kept.double() / allowed.double().clamp_min(1)


@dataclass
class Metrics:
    """Everything measured for one comparison. Per-layer lists have one value per layer; ``*_per_head`` are
    ``[layers][heads]``. Perplexity fields are None for encoders (no next-token head). Fields computed in a later
    stage (attention metrics, per-layer curves) are None until they are filled in."""

    requested_sparsity: float | None
    achieved_sparsity: float
    achieved_sparsity_per_head: list[list[float]]
    mass_recall: list[float] | None = None
    mass_recall_per_head: list[list[float]] | None = None
    mass_recall_min: float | None = None
    mass_recall_p5: float | None = None
    kl: list[float] | None = None
    kl_per_head: list[list[float]] | None = None
    output_relative_error: float | None = None
    dense_ppl: float | None = None
    sparse_ppl: float | None = None
    delta_ppl: float | None = None
    delta_nll: float | None = None
    delta_nll_se: float | None = None  # standard error of delta_nll over the scored tokens (paired_standard_error)
    next_token_kl: float | None = None
    top1_agreement: float | None = None
    per_layer_delta_ppl: list[float] | None = None
    cumulative_delta_ppl: list[float] | None = None
    # the adapted pass (``compare(..., adapted=...)``): the adapted model under the same mask, measured against the
    # dense pass exactly as the sparse (post-hoc) pass is; None without an adaptation
    adapted_ppl: float | None = None
    recovered: float | None = None  # (sparse_ppl − adapted_ppl) / (sparse_ppl − dense_ppl), see recovered_fraction
    adapted_next_token_kl: float | None = None
    adapted_top1_agreement: float | None = None
    adapted_achieved_sparsity: float | None = None
    adapted_mass_recall: list[float] | None = None
    adapted_mass_recall_per_head: list[list[float]] | None = None
    adapted_kl: list[float] | None = None
    adapted_kl_per_head: list[list[float]] | None = None
    # measured, with ``compare(..., time_attention=True)`` (measure.attention_time): seconds of one forward pass's
    # attention over every layer on this machine, dense (causal SDPA) and under the sparse pass's keep-masks on a
    # block-sparse kernel, the kernel's name and the fraction of the allowed tiles it skipped
    attention_time_dense: float | None = None
    attention_time_sparse: float | None = None
    attention_kernel: str | None = None
    attention_tiles_skipped: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_rows(values: list[Tensor]) -> tuple[float, float]:
    """(min, 5th percentile) over all rows of all heads of all layers."""
    flat = torch.cat([v.flatten() for v in values]).numpy() if values else np.zeros(1)
    return float(flat.min()), float(np.percentile(flat, 5))
