"""Plain-text rendering of a comparison, for the command line and for ``print(res.summary())``."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .messages import CAVEAT

if TYPE_CHECKING:
    from .result import Comparison


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_table(res: Comparison) -> str:
    """Headline metrics, the per-layer curve and both continuations, as aligned text."""
    m = res.metrics
    assert m.mass_recall is not None, "summary_table needs the attention metrics (run compare() to the end)"
    lines = [
        f"model   {res.model_name}  ({res.n_layers} layers x {res.n_heads} heads, {len(res.tokens)} tokens)",
        f"mask    {res.mask_label}",
        f"        {res.mask.description}",
        "",
        f"{'sparsity requested':<26}{_fmt(m.requested_sparsity)}",
        f"{'sparsity achieved':<26}{_fmt(m.achieved_sparsity)}",
        f"{'perplexity dense':<26}{_fmt(m.dense_ppl)}",
        (
            f"{'perplexity sparse':<26}{_fmt(m.sparse_ppl)}"
            f"   (delta {_fmt(m.delta_ppl)}, dNLL {_fmt(m.delta_nll, 4)} nats"
            + ("" if m.delta_nll_se is None else f" ± {_fmt(2 * m.delta_nll_se, 4)}, two standard errors")
            + ")"
        ),
        f"{'next-token KL(d||s)':<26}{_fmt(m.next_token_kl, 4)}",
        f"{'top-1 agreement':<26}{_fmt(m.top1_agreement)}",
        (
            f"{'attention mass recall':<26}{_fmt(sum(m.mass_recall) / len(m.mass_recall))}"
            f"   (min {_fmt(m.mass_recall_min)}, 5th pct {_fmt(m.mass_recall_p5)})"
        ),
        f"{'output relative error':<26}{_fmt(m.output_relative_error, 4)}",
    ]
    if m.adapted_ppl is not None:
        recovered = "n/a" if m.recovered is None else f"{m.recovered:.0%}"
        lines += [
            f"{'perplexity adapted':<26}{_fmt(m.adapted_ppl)}   (recovered {recovered} of the gap)",
            f"{'next-token KL(d||adapted)':<26}{_fmt(m.adapted_next_token_kl, 4)}",
            f"{'top-1 agreement adapted':<26}{_fmt(m.adapted_top1_agreement)}",
        ]
    if m.attention_time_dense is not None and m.attention_time_sparse is not None:
        lines.append(
            f"{'attention time':<26}dense {1000 * m.attention_time_dense:.1f} ms, sparse "
            f"{1000 * m.attention_time_sparse:.1f} ms per forward ({m.attention_kernel}, "
            f"{_fmt(m.attention_tiles_skipped, 2)} of the tiles skipped; measured here)"
        )
    if m.per_layer_delta_ppl is not None:
        assert m.kl is not None  # filled with mass_recall
        lines += ["", f"{'layer':>5}  {'recall':>7}  {'KL(s||d)':>9}  {'dPPL only l':>11}  {'dPPL 0..l':>10}"]
        cumulative: Sequence[float | None] = m.cumulative_delta_ppl or [None] * len(m.per_layer_delta_ppl)
        per_layer = zip(m.mass_recall, m.kl, m.per_layer_delta_ppl, cumulative, strict=True)  # one value per layer
        for layer, (r, kl, iso, cum) in enumerate(per_layer):
            lines.append(f"{layer:>5}  {r:>7.3f}  {kl:>9.4f}  {iso:>11.3f}  {_fmt(cum):>10}")
    if res.continuations:
        lines += ["", "continuation (greedy)"]
        for name, text in res.continuations.items():
            lines.append(f"  {name:<8}{text!r}")
    for note in m.notes:
        lines.append(f"note: {note}")
    lines += ["", *textwrap.wrap(CAVEAT, 110)]
    return "\n".join(lines)
