"""Degradation sweeps: every (text, mask, sparsity) combination, as a table, and its curve.

    >>> table = aw.sweep(None, aw.sample_texts(), masks=["sliding_window", "sink_window", "topk"],
    ...                  sparsities=[0.3, 0.5, 0.7, 0.8, 0.9])
    >>> table.to_pandas()                  # a DataFrame (pandas installed), else use the records: list(table)
    >>> aw.plot_sweep(table)               # perplexity against achieved sparsity, one line per mask
    >>> aw.sweep(None, masks=["sliding_window"], sparsities=[0.5, 0.8], adapt_steps=100)   # + adapted columns

Work is grouped per text: one group runs the dense pass once (it is cached) and then every (mask, sparsity) of
that text. With ``executor=`` (any ``concurrent.futures.Executor``: a ``ProcessPoolExecutor``, a Dask
``client.get_executor()``) the groups run where the executor puts them; each worker loads the model itself,
so pass the model as None (the embedded default) or a hub id / path, not a loaded object.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .masks import PAPER, SparsityOutOfReach

COLUMNS = (
    "text",
    "mask",
    "mask_label",
    "requested_sparsity",
    "achieved_sparsity",
    "n_tokens",
    "dense_ppl",
    "sparse_ppl",
    "delta_ppl",
    "delta_nll",
    "mass_recall",
    "top1_agreement",
    "next_token_kl",
    "out_of_reach",
    "adapted_ppl",  # with adapt_steps: the model adapted under the mask (aw.adapt), else None
    "recovered",
    "adapted_next_token_kl",
)


class SweepTable(list):
    """The records of a sweep (one dict per text x mask x sparsity, keys :data:`COLUMNS`), in a stable order."""

    def to_pandas(self) -> Any:
        """The records as a pandas DataFrame (needs pandas: ``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("to_pandas() needs pandas: pip install pandas (the records are the list itself)") from err
        return pd.DataFrame(list(self), columns=list(COLUMNS))

    def summary(self, value: str = "sparse_ppl") -> list[dict[str, Any]]:
        """Mean of ``value`` and of the achieved sparsity over the texts, per (mask, requested sparsity)."""
        groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
        for r in self:
            groups.setdefault((r["mask"], r["requested_sparsity"]), []).append(r)
        return [
            {
                "mask": mask,
                "requested_sparsity": s,
                "achieved_sparsity": float(np.mean([r["achieved_sparsity"] for r in rs])),
                value: float(np.mean([r[value] for r in rs])),
                "texts": len(rs),
            }
            for (mask, s), rs in groups.items()
        ]


@dataclass(frozen=True)
class _Group:
    """One unit of work: every (mask, sparsity) on one text."""

    model: Any
    text_index: int
    text: str
    cells: tuple[tuple[str, float | Literal["paper"]], ...]
    max_tokens: int | None
    mask_params: dict[str, dict[str, Any]]
    adapt_steps: int | None = None


def _run_group(group: _Group) -> list[dict[str, Any]]:
    """Run one group in this process (a worker's entry point: module-level, so it pickles)."""
    from .adapt import Training
    from .pipeline import Request, stages

    records = []
    for mask, sparsity in group.cells:
        # the paper's budget is run as it is, not adapted to (adapting takes a sparsity)
        adapting = group.adapt_steps is not None and sparsity != PAPER and sparsity > 0 and mask != "dense"
        # one training per (mask, sparsity) (the pipeline's "adapting" stage): the texts after the first read it
        # from the disk cache
        request = Request(
            text=group.text,
            mask=mask,
            sparsity=sparsity,
            mask_params=group.mask_params.get(mask, {}),
            per_layer=False,
            continuation_tokens=0,
            max_tokens=group.max_tokens,
            train=Training(steps=group.adapt_steps) if adapting and group.adapt_steps is not None else None,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SparsityOutOfReach)
            *_, last = stages(group.model, request)
        res = last.result
        m = res.metrics
        assert m.mass_recall is not None  # the pipeline's last stage has run: the attention metrics are in
        records.append(
            {
                "text": group.text_index,
                "mask": mask,
                "mask_label": res.mask_label,
                "requested_sparsity": sparsity,
                "achieved_sparsity": m.achieved_sparsity,
                "n_tokens": len(res.tokens),
                "dense_ppl": m.dense_ppl,
                "sparse_ppl": m.sparse_ppl,
                "delta_ppl": m.delta_ppl,
                "delta_nll": m.delta_nll,
                "mass_recall": float(np.mean(m.mass_recall)),
                "top1_agreement": m.top1_agreement,
                "next_token_kl": m.next_token_kl,
                "out_of_reach": any(issubclass(w.category, SparsityOutOfReach) for w in caught),
                "adapted_ppl": m.adapted_ppl,
                "recovered": m.recovered,
                "adapted_next_token_kl": m.adapted_next_token_kl,
            }
        )
    return records


def _check(masks: Sequence[str], sparsities: Sequence[float | str], texts: Sequence[str]) -> None:
    from . import masks as library
    from .masks.base import check_sparsity

    if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError("texts must be a non-empty list of non-empty strings (one text: pass [text])")
    if isinstance(masks, str) or not masks:
        raise ValueError("masks must be a non-empty list of mask ids, e.g. ['sliding_window', 'topk']")
    for mask in masks:
        library.get(mask)  # unknown ids raise with the list of valid ones
    if not sparsities:
        raise ValueError("sparsities must be a non-empty list of values in [0, 1)")
    for s in sparsities:
        if s != PAPER:
            check_sparsity(s)


def sweep(
    model: Any = None,
    texts: Sequence[str] | None = None,
    masks: Sequence[str] = ("sliding_window", "sink_window", "topk"),
    sparsities: Sequence[float | Literal["paper"]] = (0.3, 0.5, 0.7, 0.8, 0.9),
    *,
    executor: Executor | None = None,
    max_tokens: int | None = None,
    mask_params: dict[str, dict[str, Any]] | None = None,
    progress: bool = True,
    adapt_steps: int | None = None,
) -> SweepTable:
    """Run every (text, mask, sparsity) and return a :class:`SweepTable` of dense/sparse perplexity and its delta,
    mass recall, top-1 agreement, next-token KL and the achieved sparsity (``out_of_reach`` marks requests the mask
    cannot realise at that length; the nearest reachable value was used).

    Args:
        model: as for :func:`~attnsparse_widget.compare` (None: the embedded default). With a process-based
            ``executor`` pass None or a hub id / path: every worker loads it itself.
        texts: the texts (default: :func:`~attnsparse_widget.sample_texts`).
        sparsities: fractions of the allowed pairs to drop; ``"paper"`` among them runs each mask as its paper
            ships it (its ``requested_sparsity`` is "paper", never adapted to: adapting takes a number).
        executor: a ``concurrent.futures.Executor`` to run the per-text groups on (default: this process).
        mask_params: per mask id, its own parameters, e.g. ``{"sink_window": {"sinks": 1}}``.
        progress: show a tqdm progress bar (one step per finished combination).
        adapt_steps: also adapt the model to every (mask, sparsity) for this many steps
            (:func:`~attnsparse_widget.adapt`, on the model's own samples, cached on disk) and fill the adapted
            columns (``adapted_ppl``, ``recovered``, ``adapted_next_token_kl``); None leaves them None.
    """
    from .texts import sample_texts

    texts = list(sample_texts() if texts is None else texts)
    masks, sparsities = list(masks), [s if s == PAPER else float(s) for s in sparsities]
    _check(masks, sparsities, texts)
    if adapt_steps is not None and (
        isinstance(adapt_steps, bool) or not isinstance(adapt_steps, int) or adapt_steps < 1
    ):
        raise ValueError(f"adapt_steps must be None or an int >= 1, got {adapt_steps!r}")
    cells = tuple((m, s) for m in masks for s in sparsities)
    groups = [_Group(model, i, t, cells, max_tokens, dict(mask_params or {}), adapt_steps) for i, t in enumerate(texts)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(groups) * len(cells), desc="sweep", unit="run")
    results: dict[int, list[dict[str, Any]]] = {}
    try:
        if executor is None:
            for g in groups:
                results[g.text_index] = _run_group(g)
                if bar is not None:
                    bar.update(len(cells))
        else:
            futures = {executor.submit(_run_group, g): g.text_index for g in groups}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if bar is not None:
                    bar.update(len(cells))
    finally:
        if bar is not None:
            bar.close()
    return SweepTable(r for i in range(len(groups)) for r in results[i])


def plot_sweep(table: Iterable[dict[str, Any]], y: str = "sparse_ppl", log_y: bool | None = None) -> Any:
    """The degradation curve: ``y`` (default sparse perplexity; also "delta_ppl", "delta_nll", "mass_recall",
    "top1_agreement", "next_token_kl") against the *achieved* sparsity, one line per mask, each point the mean over
    the texts, with error bars from the lowest to the highest text (hover: the same in numbers). The dense
    perplexity is drawn as a dashed reference line."""
    import plotly.graph_objects as go

    records = list(table)
    if not records:
        raise ValueError("the sweep table is empty")
    if y not in COLUMNS:
        raise ValueError(f"y must be one of the table's numeric columns, e.g. sparse_ppl or delta_ppl; got {y!r}")
    fig = go.Figure()
    for mask in dict.fromkeys(r["mask"] for r in records):
        rows = [r for r in records if r["mask"] == mask]
        xs, ys, lo, hi, text = [], [], [], [], []
        cells = [[r for r in rows if r["requested_sparsity"] == s] for s in {r["requested_sparsity"]: 0 for r in rows}]
        for cell in sorted(cells, key=lambda c: float(np.mean([r["achieved_sparsity"] for r in c]))):
            s = cell[0]["requested_sparsity"]
            values = [r[y] for r in cell]
            xs.append(float(np.mean([r["achieved_sparsity"] for r in cell])))
            ys.append(float(np.mean(values)))
            lo.append(min(values))
            hi.append(max(values))
            asked = "the paper's budget" if s == PAPER else f"requested {s:.0%}"
            text.append(
                f"{asked}, {len(cell)} text(s), range {min(values):.3g} – {max(values):.3g}"
                + (" (out of reach: nearest used)" if any(r["out_of_reach"] for r in cell) else "")
            )
        spread = {
            "type": "data",
            "symmetric": False,
            "array": [h - v for h, v in zip(hi, ys, strict=True)],
            "arrayminus": [v - lo_ for v, lo_ in zip(ys, lo, strict=True)],
            "thickness": 1,
            "width": 3,
        }
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers",
                name=mask,
                text=text,
                error_y=spread,
                hovertemplate=f"{mask}<br>achieved %{{x:.1%}}<br>{y} %{{y:.4g}}<br>%{{text}}<extra></extra>",
            )
        )
    adapted_rows = [r for r in records if r.get("adapted_ppl") is not None]
    if y == "sparse_ppl" and adapted_rows:  # the adapted model under each mask: the same colour order, dotted
        for mask in dict.fromkeys(r["mask"] for r in adapted_rows):
            rows = sorted((r for r in adapted_rows if r["mask"] == mask), key=lambda r: r["requested_sparsity"])
            points: dict[float, list[dict[str, Any]]] = {}
            for r in rows:
                points.setdefault(r["requested_sparsity"], []).append(r)
            fig.add_trace(
                go.Scatter(
                    x=[float(np.mean([r["achieved_sparsity"] for r in c])) for c in points.values()],
                    y=[float(np.mean([r["adapted_ppl"] for r in c])) for c in points.values()],
                    mode="lines+markers",
                    name=f"{mask}, adapted",
                    line={"dash": "dot"},
                    hovertemplate=f"{mask}, adapted<br>achieved %{{x:.1%}}<br>adapted ppl %{{y:.4g}}<extra></extra>",
                )
            )
    if y == "sparse_ppl":
        # a trace, not add_hline: on a log axis an hline's annotation is placed in log units and wrecks the range
        dense = float(np.mean([r["dense_ppl"] for r in {r["text"]: r for r in records}.values()]))
        xs_all = [r["achieved_sparsity"] for r in records]
        fig.add_trace(
            go.Scatter(
                x=[min(xs_all), max(xs_all)],
                y=[dense, dense],
                mode="lines",
                name=f"dense {dense:.2f}",
                line={"dash": "dash", "color": "#666"},
                hoverinfo="skip",
            )
        )
    values = [r[y] for r in records if r[y] is not None and math.isfinite(r[y])]
    if log_y is None:
        log_y = y == "sparse_ppl" and bool(values) and max(values) / max(min(values), 1e-9) > 20
    yaxis: dict[str, Any] = {"title": {"text": y.replace("_", " ")}, "type": "log" if log_y else "linear"}
    shown = values + [v for trace in fig.data for v in trace.y if v is not None and math.isfinite(v)]
    if log_y and shown and min(shown) > 0:  # plotly's log autorange can cut the error bars' ends: show every text
        lo_, hi_ = math.log10(min(shown)), math.log10(max(shown))
        pad = 0.05 * max(hi_ - lo_, 0.1)
        yaxis["range"] = [lo_ - pad, hi_ + pad]
    fig.update_layout(
        xaxis={"title": {"text": "achieved sparsity (fraction of allowed pairs dropped)"}, "tickformat": ".0%"},
        yaxis=yaxis,
        title={
            "text": f"{y.replace('_', ' ')} against sparsity, mean over {len({r['text'] for r in records})} text(s)"
        },
        legend={"title": {"text": "mask"}},
        template="plotly_white",
        width=800,
        height=480,
    )
    return fig


__all__ = ["COLUMNS", "SweepTable", "plot_sweep", "sweep"]
