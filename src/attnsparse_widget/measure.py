"""The metrics of a comparison, measured from its passes: achieved sparsity, the next-token metrics (perplexity,
KL, top-1 agreement) and the attention metrics per layer and head (mass recall, KL). The formulas are in
:mod:`attnsparse_widget.metrics`."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from . import kernels
from . import metrics as M
from .capture import DenseHead
from .introspect import head_dims, input_device, text_config
from .logits import chunks
from .masks import MaskContext
from .messages import NOTE_ONE_TOKEN, below_dense_note
from .passes import PassResult
from .result import Comparison
from .store import AttentionStore, RowsCompared

Tensor = torch.Tensor
RECOMPUTE_BYTES = 256 * 2**20  # probabilities of one pass recomputed at a time (every head, full width)


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
    """Perplexities, next-token KL(dense‖sparse), top-1 agreement and the logits' relative error of the sparse
    (post-hoc) pass against the dense pass (see :func:`against_dense`)."""
    kl, diff2, norm2 = against_dense(dense, sparse, skip_unchanged=True)
    assert dense.nll is not None and dense.argmax is not None and sparse.nll is not None and sparse.argmax is not None
    n = sparse.ids.shape[1]
    metrics.dense_ppl = M.perplexity(dense.nll)
    metrics.sparse_ppl = M.perplexity(sparse.nll)
    metrics.delta_ppl = metrics.sparse_ppl - metrics.dense_ppl
    metrics.delta_nll = float(sparse.nll.mean() - dense.nll.mean()) if dense.nll.numel() else float("nan")
    metrics.delta_nll_se = M.paired_standard_error(sparse.nll, dense.nll)
    metrics.next_token_kl = kl
    metrics.top1_agreement = M.top1_agreement(dense.argmax, sparse.argmax)
    metrics.output_relative_error = math.sqrt(diff2 / max(norm2, 1e-60))
    if n < 2:
        metrics.notes.append(NOTE_ONE_TOKEN)
    elif metrics.delta_nll < 0 and math.isfinite(metrics.delta_nll_se):
        metrics.notes.append(below_dense_note(metrics.delta_nll, 2 * metrics.delta_nll_se, n - 1))


def adapted_output_metrics(metrics: M.Metrics, dense: PassResult, adapted: PassResult) -> None:
    """The adapted pass's perplexity, next-token KL(dense‖adapted) and top-1 agreement against the dense pass, and
    the fraction of the post-hoc perplexity gap it recovers (after :func:`output_metrics`)."""
    kl, _, _ = against_dense(dense, adapted, skip_unchanged=False)  # other weights: no row is the dense one
    assert dense.argmax is not None and adapted.nll is not None and adapted.argmax is not None
    metrics.adapted_ppl = M.perplexity(adapted.nll)
    metrics.adapted_next_token_kl = kl
    metrics.adapted_top1_agreement = M.top1_agreement(dense.argmax, adapted.argmax)
    if metrics.dense_ppl is not None and metrics.sparse_ppl is not None:
        metrics.recovered = M.recovered_fraction(metrics.dense_ppl, metrics.sparse_ppl, metrics.adapted_ppl)


def against_dense(dense: PassResult, other: PassResult, *, skip_unchanged: bool) -> tuple[float, float, float]:
    """Compare ``other``'s next-token distributions with the dense pass's, over the positions in chunks against the
    dense pass's reference: keeps ``other``'s per-position loss and argmax on it, and returns (mean KL(dense‖other),
    Σ‖logits_o − logits_d‖², Σ‖logits_d‖²).

    ``skip_unchanged`` (a pass of the same model under a mask): positions before the first row any layer's mask
    changed (``first_changed``) come out of a causal model's sparse pass exactly as out of its dense pass, the same
    inputs through the same operations row by row, so chunks wholly before it take the dense pass's loss and argmax,
    with KL and difference 0, instead of running the head again.
    """
    ids = other.ids[0]
    n = ids.shape[0]
    assert dense.nll is not None and dense.argmax is not None
    first = min(other.first_changed.values(), default=n) if skip_unchanged else 0
    nll, argmax, kl = [], [], []
    diff2 = norm2 = 0.0
    for (dense_logits, dense_probs, dense_lse, dense_sumsq), pos in zip(
        dense.reference, chunks(0, n, ids.device), strict=True
    ):
        norm2 += dense_sumsq
        if int(pos[-1]) < first:  # unchanged rows
            nll.append(dense.nll[pos[pos < n - 1].cpu()].to(ids.device))
            argmax.append(dense.argmax[pos.cpu()].to(ids.device))
            kl.append(torch.zeros(pos.shape[0], device=ids.device))
            continue
        if dense_logits is None or dense_probs is None:
            dense_logits = dense.logits(pos)
            dense_probs = torch.softmax(dense_logits, dim=-1)
        logits = other.logits(pos)
        lse = torch.logsumexp(logits, dim=-1)
        chunk_kl, chunk_diff2 = M.next_token_kl(dense_logits, dense_probs, dense_lse, logits, lse)
        kl.append(chunk_kl)
        argmax.append(logits.argmax(-1))
        nll.append(M.next_token_nll_from_logits(logits, lse, ids[pos[pos < n - 1] + 1]))
        diff2 += float(chunk_diff2.sum())
    other.nll, other.argmax = torch.cat(nll).cpu(), torch.cat(argmax).cpu()
    return float(torch.cat(kl).mean()), diff2, norm2


# what iter_attention_metrics sets on the metrics (a stage run again starts from none of them)
ATTENTION_METRIC_FIELDS = (
    "mass_recall_min",
    "mass_recall_p5",
    "mass_recall_per_head",
    "kl_per_head",
    "mass_recall",
    "kl",
    "adapted_mass_recall_per_head",
    "adapted_kl_per_head",
    "adapted_mass_recall",
    "adapted_kl",
)


def iter_attention_metrics(res: Comparison) -> Iterator[int]:
    """Mass recall and KL(sparse‖dense) per layer and head, for the sparse pass and (when the comparison has one)
    the adapted pass, yielding each finished layer; the metrics are set once every layer is done (a caller that
    stops early leaves them unset).

    A pass measured them as it ran when the dense pass had kept its queries and keys (the usual case, see
    :func:`~attnsparse_widget.passes.captured_pass`); otherwise both passes' layers are recomputed at full
    resolution one at a time (memory stays bounded) and measured the same way."""
    passes = [res.sparse] + ([res.adapted] if res.adapted is not None else [])
    rows: list[list[Tensor]] = [[] for _ in passes]
    heads: list[list[list[float]]] = [[] for _ in passes]
    for layer in range(res.n_layers):
        for i, result in enumerate(passes):
            store = result.store
            recall, kl = store.recall_rows[layer], store.kl_per_head[layer]
            if recall is None or kl is None:
                recall, kl = _recomputed(res.dense, result, layer, res.n_heads)
            rows[i].append(recall)
            heads[i].append(kl.tolist())
        yield layer
    m = res.metrics
    m.mass_recall_min, m.mass_recall_p5 = M.summarise_rows(rows[0])
    m.mass_recall_per_head, m.kl_per_head, m.mass_recall, m.kl = _per_layer(rows[0], heads[0])
    if res.adapted is not None:
        m.adapted_mass_recall_per_head, m.adapted_kl_per_head, m.adapted_mass_recall, m.adapted_kl = _per_layer(
            rows[1], heads[1]
        )


def _per_layer(
    recall_rows: list[Tensor], kl_heads: list[list[float]]
) -> tuple[list[list[float]], list[list[float]], list[float], list[float]]:
    """(recall per head, KL per head, recall per layer, KL per layer) from each layer's per-row recall ``[H, T]``
    and per-head KL."""
    recall_heads = [r.mean(-1).tolist() for r in recall_rows]
    return recall_heads, kl_heads, [float(np.mean(h)) for h in recall_heads], [float(np.mean(h)) for h in kl_heads]


def _recomputed(dense: PassResult, other: PassResult, layer: int, n_heads: int) -> tuple[Tensor, Tensor]:
    """Recall per row ``[H, rows]`` and mean row KL per head ``[H]`` of ``other``'s ``layer`` against the dense
    pass's, both recomputed at full resolution a block of rows at a time (a long text's layers are used once here:
    not kept)."""
    n = int(dense.ids.shape[1])
    step = max(1, RECOMPUTE_BYTES // (4 * n_heads * n))
    compared = RowsCompared()
    for a in range(0, n, step):
        span = (a, min(n, a + step))
        dense_probs, _, _ = dense.layer(layer, remember=False, rows=span)
        q, keep, allowed = other.layer(layer, remember=False, rows=span)
        compared.add(q, keep, allowed, _heads_of(dense_probs))
    return compared.result()


def _heads_of(probs: Tensor) -> DenseHead:
    """Head h of full-resolution probabilities ``[1, H, Tq, Tk]``, as :func:`compare_heads` asks for it."""
    return lambda h: probs[:, h]


# ------------------------------------------------------------------------------------------------ measured time
TIMED_LAYERS = 3  # layers timed per comparison (first, middle, last: masks and budgets differ by layer)


def timed_layers(n_layers: int) -> list[int]:
    """The layers :func:`iter_attention_time` times, evenly spread."""
    count = min(TIMED_LAYERS, n_layers)
    return sorted({round(i * (n_layers - 1) / max(1, count - 1)) for i in range(count)})


def iter_attention_time(res: Comparison) -> Iterator[int]:
    """Measure what the sparse pass's masks buy in time on this machine: one attention call per timed layer on
    the model's own shapes (queries, keys and values drawn at random: neither kernel's time depends on the values),
    dense (SDPA) against the layer's keep-mask on a block-sparse kernel (:func:`kernels.time_attention`), yielding
    after each layer. The metrics are seconds for one forward pass, the timed layers' mean times the layer count;
    set once every timed layer is done. The first call of a length bucket compiles the flex kernel (seconds,
    outside the timed calls)."""
    query, key, value = _random_qkv(res)
    heads, d_qk, device = res.n_heads, query.shape[-1], query.device
    causal = res.causal
    timings: dict[int, kernels.Timing] = {}
    same_every_layer = not (res.mask.score_dependent or res.mask.varies_by_layer)
    for layer in timed_layers(res.n_layers):
        if same_every_layer and timings:
            timings[layer] = next(iter(timings.values()))
        else:
            keep = _keep_of_layer(res, layer, causal, heads, device)
            timings[layer] = kernels.time_attention(query, key, value, keep, d_qk**-0.5, causal=causal)
        yield layer
    found = list(timings.values())
    m = res.metrics
    m.attention_time_dense = float(np.mean([t.dense for t in found])) * res.n_layers
    m.attention_time_sparse = float(np.mean([t.sparse for t in found])) * res.n_layers
    m.attention_kernel = found[0].kernel
    m.attention_tiles_skipped = float(np.mean([t.skipped for t in found]))


def _random_qkv(res: Comparison) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values ``[1, heads, T, d]`` of the model's shapes, dtype and device, drawn at random."""
    model = res.sparse.the_model()
    n = len(res.token_ids)
    d_qk, d_v = head_dims(text_config(model))
    param = next(model.parameters())
    g = torch.Generator(device=param.device).manual_seed(0)

    def draw(h: int, d: int) -> Tensor:
        return torch.randn(1, h, n, d, generator=g, device=param.device).to(param.dtype)

    return draw(res.n_heads, d_qk), draw(res.n_kv_heads, d_qk), draw(res.n_kv_heads, d_v)


def flex_compile_pending(res: Comparison, replays: bool) -> bool:
    """Whether the next stage's first flex call would compile (first use of these shapes in this process): the
    attention-time stage (``replays=False``) times flex wherever it runs; the per-layer replays (``replays=True``)
    take it for a positions-only mask on a long enough causal text (:func:`kernels.choose_kernel`)."""
    device = input_device(res.sparse.the_model())
    n = len(res.token_ids)
    if not kernels.flex_usable(device.type):
        return False
    if replays and (res.mask.score_dependent or not res.causal or kernels.choose_kernel(n, n, device) != "flex"):
        return False
    return not kernels.flex_compiled(*_flex_probe(res))


def compile_flex(res: Comparison) -> None:
    """Compile flex for this comparison's shapes now (one untimed call), so that the wait is a step of its own."""
    query, key, value, keep = _flex_probe(res)
    with torch.inference_mode():
        kernels.masked_attention(query, key, value, keep, query.shape[-1] ** -0.5, "flex")


def _flex_probe(res: Comparison) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random queries, keys and values of the model's shapes and a causal keep-mask with as many heads as the
    comparison's masks have: what flex is compiled for."""
    query, key, value = _random_qkv(res)
    n, device = query.shape[-2], query.device
    heads = res.n_heads
    if not res.mask.score_dependent:  # the rule's own head count (1 where every head keeps the same pairs)
        ctx = MaskContext(causal=res.causal, layer=0, n_heads=heads, kv_groups=1, seed=res.sparse.seed)
        heads = res.mask.keep(n, ctx=ctx, device=device).shape[0]
    causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    return query, key, value, causal.expand(heads, n, n)


def _keep_of_layer(res: Comparison, layer: int, causal: bool, heads: int, device: torch.device) -> Tensor:
    """The sparse pass's kept pairs at ``layer`` (bool ``[H|1, T, T]``, causal): a positions-only mask's from its
    rule, a score-dependent mask's as the pass chose them (recomputed for a long text)."""
    mask, n = res.mask, len(res.token_ids)
    if mask.score_dependent:
        return torch.from_numpy(res.keep_mask(layer)).to(device)
    ctx = MaskContext(causal=causal, layer=layer, n_heads=heads, kv_groups=1, seed=res.sparse.seed)
    return mask.keep(n, ctx=ctx, device=device)
