"""The metrics of a comparison, measured from its passes: achieved sparsity, the next-token metrics (perplexity,
KL, top-1 agreement) and the attention metrics per layer and head (mass recall, KL). The formulas are in
:mod:`attnsparse_widget.metrics`."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from . import metrics as M
from .logits import chunks
from .messages import NOTE_ONE_TOKEN
from .passes import PassResult
from .result import Comparison
from .store import AttentionStore


def sparsity_metrics(store: AttentionStore, requested: float | None) -> M.Metrics:
    """Achieved sparsity, overall and per layer and head, from the kept and allowed counts of the sparse pass."""
    per_head, kept_total, allowed_total = [], 0.0, 0.0
    heads = store.n_heads
    for kept, allowed in zip(store.kept, store.allowed_count, strict=True):
        assert kept is not None and allowed is not None
        k, a = kept[0], allowed[0, 0]
        per_head.append(M.achieved_sparsity(k, a).expand(heads).tolist())
        kept_total += float(k.double().sum()) * (heads // k.numel())
        allowed_total += float(a) * heads
    return M.Metrics(
        requested_sparsity=requested,
        achieved_sparsity=1.0 - kept_total / max(1.0, allowed_total),
        achieved_sparsity_per_head=per_head,
    )


def output_metrics(metrics: M.Metrics, dense: PassResult, sparse: PassResult) -> None:
    """Perplexities, next-token KL(dense‖sparse), top-1 agreement and the logits' relative error, computed over
    the positions in chunks against the dense pass's reference (the sparse pass's per-position loss and argmax are
    kept on it)."""
    ids = sparse.ids[0]
    n = ids.shape[0]
    nll, argmax, kl = [], [], []
    diff2 = norm2 = 0.0
    for (dense_logits, dense_probs, dense_lse, dense_sumsq), pos in zip(
        dense.reference, chunks(0, n, ids.device), strict=True
    ):
        if dense_logits is None or dense_probs is None:
            dense_logits = dense.logits(pos)
            dense_probs = torch.softmax(dense_logits, dim=-1)
        logits = sparse.logits(pos)
        lse = torch.logsumexp(logits, dim=-1)
        chunk_kl, chunk_diff2 = M.next_token_kl(dense_logits, dense_probs, dense_lse, logits, lse)
        kl.append(chunk_kl)
        argmax.append(logits.argmax(-1))
        nll.append(M.next_token_nll_from_logits(logits, lse, ids[pos[pos < n - 1] + 1]))
        diff2 += float(chunk_diff2.sum())
        norm2 += dense_sumsq
    sparse.nll, sparse.argmax = torch.cat(nll).cpu(), torch.cat(argmax).cpu()
    assert dense.nll is not None and dense.argmax is not None
    metrics.dense_ppl = M.perplexity(dense.nll)
    metrics.sparse_ppl = M.perplexity(sparse.nll)
    metrics.delta_ppl = metrics.sparse_ppl - metrics.dense_ppl
    metrics.delta_nll = float(sparse.nll.mean() - dense.nll.mean()) if dense.nll.numel() else float("nan")
    metrics.next_token_kl = float(torch.cat(kl).mean())
    metrics.top1_agreement = M.top1_agreement(dense.argmax, sparse.argmax)
    metrics.output_relative_error = math.sqrt(diff2 / max(norm2, 1e-60))
    if n < 2:
        metrics.notes.append(NOTE_ONE_TOKEN)


def iter_attention_metrics(res: Comparison) -> Iterator[int]:
    """Compute mass recall and KL(sparse‖dense) per layer and head, one layer at a time (a long text's layers are
    recomputed at full resolution one by one, so memory stays bounded), yielding each finished layer; the metrics
    are set once every layer is done (a caller that stops early leaves them unset)."""
    recall_rows, recall_heads, kl_heads = [], [], []
    for layer in range(res.n_layers):
        p, _, _ = res.dense.layer(layer, remember=False)  # a long text's layers are used once here: not kept
        q, keep, allowed = res.sparse.layer(layer, remember=False)
        keep = allowed if keep is None else keep
        rows = allowed[0, 0].any(-1)  # queries the model lets attend anywhere
        recall = M.mass_recall(p[0], keep[0])[:, rows]
        kl = M.row_kl(q[0], p[0])[:, rows]
        recall_rows.append(recall)
        recall_heads.append(recall.mean(-1).tolist())
        kl_heads.append(kl.mean(-1).tolist())
        yield layer
    m = res.metrics
    m.mass_recall_min, m.mass_recall_p5 = M.summarise_rows(recall_rows)
    m.mass_recall_per_head = recall_heads
    m.kl_per_head = kl_heads
    m.kl = [float(np.mean(h)) for h in kl_heads]
    m.mass_recall = [float(np.mean(h)) for h in recall_heads]
