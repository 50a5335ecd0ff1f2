"""The one staged engine pipeline: text and mask in, a :class:`~attnsparse_widget.result.Comparison` filled in
stage by stage, with progress.

    sparse pass        the dense pass (cached per model and text), the sparse pass and the achieved sparsity: what
                       the main view needs (an encoder's output error too). A long text under a mask known from
                       positions goes view first (:func:`~attnsparse_widget.passes.masked_pass`): the pass runs on
                       the fast kernels and records only the shown layer's maps (``Request.layer``); otherwise the
                       pass records every layer's maps, measuring each against the dense pass's as it runs
    next-token metrics perplexities, next-token KL, top-1 agreement (language models; the LM head over every
                       position, in chunks)
    attention maps     a view-first pass's other layers, recorded one at a time by replay and measured against the
                       dense pass as they are (nothing to do after a pass that recorded them all)
    adapting           with ``train`` (:class:`~attnsparse_widget.adapt.Training`): LoRA adapters trained under the
                       request's mask and sparsity (:func:`~attnsparse_widget.adapt.adaptation_steps`, one step of
                       the stage per training step; read back from the disk cache when made before), then checked
                       against the text (it must be held out)
    adapted pass       with ``adapted=`` or after "adapting" (an :class:`~attnsparse_widget.adapt.Adaptation`): the
                       adapted model under
                       the same mask, measured against the dense pass as the sparse pass is, and the fraction of the
                       perplexity gap it recovers
    attention metrics  mass recall and KL(sparse‖dense) per layer and head, summarised (or, when the dense pass
                       kept no queries, the passes' layers recomputed and measured one at a time)
    continuations      greedy continuations under each regime (language models): dense, sparse, adapted
    attention time     with ``time_attention``: the measured time of the attention, dense against the sparse
                       pass's masks on a block-sparse kernel (:func:`~attnsparse_widget.measure.iter_attention_time`)
    per-layer curve    ΔPPL with the mask at one layer only, then at layers 0..l, one replayed pass at a time

:func:`stages` yields a :class:`Progress` after every step, carrying an immutable snapshot of the comparison: the
stages fill in a working comparison of their own, which no caller holds. :func:`~attnsparse_widget.compare` runs it
to the end; the widget publishes the snapshots as they come and stops iterating when a newer request arrives
(closing the generator abandons the rest: a stage left unfinished leaves its metrics unset);
:func:`~attnsparse_widget.sweep` and the CLI run it through ``compare``. Stage order, cancellation and memory
release live here and nowhere else.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Literal, cast

from transformers import PreTrainedTokenizerBase

from . import masks as mask_library
from .adapt import Adaptation, AdaptProgress, Training, adaptation_steps
from .dense_cache import DENSE_CACHE, DenseCache, release_free_memory
from .introspect import check_supported, layer_stack, n_kv_heads, num_layers, text_config
from .masks import Mask
from .measure import (
    ATTENTION_METRIC_FIELDS,
    adapted_output_metrics,
    compile_flex,
    flex_compile_pending,
    iter_attention_metrics,
    iter_attention_time,
    output_metrics,
    sparsity_metrics,
    timed_layers,
)
from .messages import NOTE_NO_REPLAY, adapted_elsewhere_note, paper_note, truncation_note
from .models import display_name, resolve_model
from .passes import captured_pass, greedy_continuation, masked_pass, model_is_causal, next_token_stats, view_first
from .replay import iter_per_layer
from .result import Comparison
from .tokens import decoder, eos_ids, readable_tokens, text_to_ids

DEFAULT_SPARSITY = 0.5
DENSE_LOGITS_BUDGET = 256 * 2**20  # a dense pass keeps its next-token log-probabilities up to this size

SPARSE_PASS = "sparse pass"
NEXT_TOKEN_METRICS = "next-token metrics"
ATTENTION_MAPS = "attention maps"
ADAPTING = "adapting"
ADAPTED_PASS = "adapted pass"
ATTENTION_METRICS = "attention metrics"
CONTINUATIONS = "continuations"
ATTENTION_TIME = "attention time"
PER_LAYER = "per-layer curve"
STAGES = (
    SPARSE_PASS,
    NEXT_TOKEN_METRICS,
    ATTENTION_MAPS,
    ADAPTING,
    ADAPTED_PASS,
    ATTENTION_METRICS,
    CONTINUATIONS,
    ATTENTION_TIME,
    PER_LAYER,
)  # in this order
# Not a stage of the result: the one-off compilation of the FlexAttention kernel (per process and shape bucket,
# ~20 s at 8K tokens on 2 cores), run as a step of its own before the stage that first needs it, so the wait shows.
COMPILING = "compiling the attention kernel"


@dataclass(frozen=True)
class Progress:
    """Where the pipeline is: ``done`` of ``total`` steps of ``stage`` finished; ``result`` is a snapshot of the
    comparison at that point (:meth:`~attnsparse_widget.result.Comparison.snapshot`), which the later stages never
    change: hand it to another thread, export it, keep it."""

    stage: str
    done: int
    total: int
    result: Comparison
    training: AdaptProgress | None = None  # stage "adapting": the training's own progress (loss, phase)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


Stages = Generator[Progress, None, None]  # what the pipeline yields; close() it to abandon the rest


@dataclass(frozen=True)
class Request:
    """One run of the pipeline, whoever asks for it: :func:`~attnsparse_widget.compare`, the widget, the CLI (and
    through them sweep and the app) each build one, and nothing else carries these settings. Frozen, and
    ``mask_params`` is a read-only mapping: a request handed to a worker thread cannot change under it.

    text, mask, sparsity, mask_params: what to compare (as for :func:`~attnsparse_widget.compare`). per_layer: run
    the per-layer curve stage. continuation_tokens: greedy tokens per regime (0: none; more also makes the passes
    keep their KV cache for them). max_tokens: cut a longer text (None: the model's positions). seed: for random
    patterns. adapted: an adaptation to compare as well. time_attention: run the attention-time stage. notes: what
    the caller says about the run, added to the result's notes (the widget: that it left the per-layer curve out for
    a long text). train: train an adaptation under this request's mask and sparsity (stage "adapting"), then run its
    adapted pass; ``mask`` must then be a mask id. layer: the layer shown first (a view-first pass records its maps
    before the others; None: none first). warm_kernel: end by compiling the FlexAttention kernel for this text's
    length when a view-first pass of it would take that kernel, so that the next mask change does (an interactive
    session: compiled once per process and length bucket, in the time the user reads the view).
    """

    text: str | None = None
    mask: str | Mask = "sink_window"
    sparsity: float | Literal["paper"] | None = None
    mask_params: Mapping[str, Any] = field(default_factory=dict)
    per_layer: bool = True
    continuation_tokens: int = 20
    max_tokens: int | None = None
    seed: int = 0
    adapted: Adaptation | None = None
    time_attention: bool = False
    notes: tuple[str, ...] = ()
    layer: int | None = None
    warm_kernel: bool = False
    train: Training | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_params", MappingProxyType(dict(self.mask_params)))
        if isinstance(self.sparsity, str) and self.sparsity != mask_library.PAPER:
            raise TypeError(
                f"sparsity must be a number in [0, 1) or 'paper' (every parameter, the budget included, from the "
                f"mask's paper), got {self.sparsity!r}"
            )
        if self.sparsity == mask_library.PAPER and self.train is not None:
            raise ValueError("adapting takes a sparsity in [0, 1): pass a number, not 'paper', with train=")


def stages(model: Any, request: Request, *, tokenizer: PreTrainedTokenizerBase | None = None) -> Stages:
    """Run every stage of ``request`` on ``model`` (as for :func:`~attnsparse_widget.compare`), yielding progress
    after each step; the last item's ``result`` is the finished comparison."""
    res = prepare(model, request, tokenizer=tokenizer)
    yield Progress(SPARSE_PASS, 1, 1, res.snapshot())
    yield from later_stages(res, request)


def run_until(
    model: Any, request: Request, stage: str, *, tokenizer: PreTrainedTokenizerBase | None = None
) -> Comparison:
    """The comparison of ``request`` once ``stage`` is done (the stages before it run too; the rest not): e.g.
    :data:`NEXT_TOKEN_METRICS` for the headline metrics without the attention metrics and curves."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    steps = stages(model, request, tokenizer=tokenizer)
    with contextlib.closing(steps):
        for progress in steps:
            if stage in progress.result.done:
                return progress.result
    raise ValueError(f"the stage {stage!r} does not run for this request (its result: {sorted(progress.result.done)})")


def later_stages(res: Comparison, request: Request) -> Stages:
    """The stages after the sparse pass, in order, each skipped once done, filling in the working comparison ``res``
    (from :func:`prepare`; its owner alone may touch it) and yielding snapshots of it. Closing the generator early
    (a newer request) abandons the rest; the KV caches the passes kept for the continuations are released either
    way."""
    per_layer, continuation_tokens, time_attention = (
        request.per_layer,
        request.continuation_tokens,
        request.time_attention,
    )
    try:
        if NEXT_TOKEN_METRICS not in res.done:
            yield Progress(NEXT_TOKEN_METRICS, 0, 1, res.snapshot())
            output_metrics(res.metrics, res.dense, res.sparse)
            if not res.sparse.store.retain:
                release_free_memory()  # the LM head's chunks of a long text (1.7 GB of heap at 8192 tokens)
            res.done = res.done | {NEXT_TOKEN_METRICS}
            yield Progress(NEXT_TOKEN_METRICS, 1, 1, res.snapshot())
        if ATTENTION_MAPS not in res.done:
            pending = [layer for layer, done in enumerate(res.sparse.store.recorded) if not done]
            for step, layer in enumerate(pending):
                yield Progress(ATTENTION_MAPS, step, len(pending), res.snapshot())
                res.sparse.fill(layer)
                release_free_memory()  # each replay's temporaries (a long text's: ~1 GB of heap at 8192 tokens)
            res.done = res.done | {ATTENTION_MAPS}
            yield Progress(ATTENTION_MAPS, len(pending), len(pending), res.snapshot())
        if request.train is not None and res.is_lm and not _trained(res, request):
            yield from _adapting(res, request, request.train)
        if res.adaptation is not None and ADAPTED_PASS not in res.done:
            yield Progress(ADAPTED_PASS, 0, 1, res.snapshot())
            _adapted_pass(res, keep_cache=continuation_tokens > 0)
            # an adaptation trained after them (stage "adapting"): the stages that measure every masked pass run
            # again, with it (the sparse pass's values come back from what it kept: its store, its continuation)
            reopened = res.done & {ATTENTION_METRICS, CONTINUATIONS}
            for name in ATTENTION_METRIC_FIELDS if ATTENTION_METRICS in reopened else ():
                setattr(res.metrics, name, None)
            if CONTINUATIONS in reopened:
                res.continuations = {}
            res.done = (res.done | {ADAPTED_PASS}) - reopened
            yield Progress(ADAPTED_PASS, 1, 1, res.snapshot())
        if ATTENTION_METRICS not in res.done:
            for layer in iter_attention_metrics(res):
                if layer + 1 < res.n_layers:  # the metrics are set after the last layer: its step follows below
                    yield Progress(ATTENTION_METRICS, layer + 1, res.n_layers, res.snapshot())
            res.done = res.done | {ATTENTION_METRICS}
            yield Progress(ATTENTION_METRICS, res.n_layers, res.n_layers, res.snapshot())
            if not res.sparse.store.retain:
                release_free_memory()  # the recomputed full-resolution layers of a long text
        if res.is_lm and continuation_tokens > 0 and CONTINUATIONS not in res.done:
            regimes, continuations = res.passes(), {}
            for step, (name, result) in enumerate(regimes.items()):
                yield Progress(CONTINUATIONS, step, len(regimes), res.snapshot())
                continuation = greedy_continuation(result.the_model(), result, continuation_tokens, res.eos)
                continuations[name] = res._decode(continuation)
            res.continuations = continuations  # all at once: a snapshot has every regime's or none
            res.done = res.done | {CONTINUATIONS}
            yield Progress(CONTINUATIONS, len(regimes), len(regimes), res.snapshot())
        _drop_caches(res)  # the continuations used them (or none was asked for)
        if time_attention and ATTENTION_TIME not in res.done:
            yield from _compiled(res, replays=False)
            total = len(timed_layers(res.n_layers))
            yield Progress(ATTENTION_TIME, 0, total, res.snapshot())
            for done, _ in enumerate(iter_attention_time(res), start=1):
                if done < total:  # the metrics are set after the last timed layer: the final step follows below
                    yield Progress(ATTENTION_TIME, done, total, res.snapshot())
            res.done = res.done | {ATTENTION_TIME}
            yield Progress(ATTENTION_TIME, total, total, res.snapshot())
        if per_layer and res.is_lm and PER_LAYER not in res.done:
            yield from _compiled(res, replays=True)
            yield from _per_layer(res)
        if request.warm_kernel and res.causal:  # the next view-first pass takes flex (the same rule as the replays)
            yield from _compiled(res, replays=True)
    finally:
        _drop_caches(res)


def _compiled(res: Comparison, replays: bool) -> Stages:
    """Compile the flex kernel for this comparison's shapes if the next stage would (:data:`COMPILING`)."""
    if flex_compile_pending(res, replays):
        yield Progress(COMPILING, 0, 1, res.snapshot())
        compile_flex(res)
        yield Progress(COMPILING, 1, 1, res.snapshot())


def _drop_caches(res: Comparison) -> None:
    res.sparse.cache = None
    if res.adapted is not None:
        res.adapted.cache = None


def _adapting(res: Comparison, request: Request, training: Training) -> Stages:
    """Train an adaptation under the request's mask and sparsity, one step of the stage per training step (each
    :class:`Progress` carries the training's own), and set it on the comparison once it is held out of the text."""
    yield Progress(ADAPTING, 0, training.steps, res.snapshot())
    # what the sparse pass was asked; adaptation_steps says what is wrong with a Mask object or a budget parameter
    mask, sparsity = cast(str, request.mask), cast(float, res.metrics.requested_sparsity)
    model = res.sparse.the_model()
    steps = adaptation_steps((model, res._tokenizer), mask, sparsity, training, **request.mask_params)
    last = None
    with contextlib.closing(steps):
        for last in steps:
            if last.result is None:
                yield Progress(
                    ADAPTING, last.done if last.phase == "training" else 0, training.steps, res.snapshot(), last
                )
    assert last is not None and last.result is not None
    last.result.check_held_out(res.text)
    _forget_adapted(res)
    res.adaptation = last.result
    res.done = res.done | {ADAPTING}
    yield Progress(ADAPTING, training.steps, training.steps, res.snapshot(), last)


def _trained(res: Comparison, request: Request) -> bool:
    """Whether the comparison's adaptation is what the request's training makes: the same mask, parameters,
    sparsity, steps and seed. Then the "adapting" stage has nothing to do."""
    adaptation, training, sparsity = res.adaptation, request.train, res.metrics.requested_sparsity
    return (
        adaptation is not None
        and training is not None
        and sparsity is not None
        and adaptation.mask_id == request.mask
        and adaptation.mask_params == dict(request.mask_params)
        and abs(adaptation.sparsity - sparsity) < 1e-9
        and (adaptation.steps, adaptation.seed) == (training.steps, training.seed)
    )


def _forget_adapted(res: Comparison) -> None:
    """Drop an earlier adaptation's pass and metrics from the working comparison (a new one replaces it)."""
    if res.adapted is None:
        return
    res.adapted = res._adapted_model = None
    m = res.metrics
    for name in [f.name for f in fields(m) if f.name.startswith("adapted_")] + ["recovered"]:
        setattr(m, name, None)
    res.continuations = {name: text for name, text in res.continuations.items() if name != "adapted"}
    res.done = res.done - {ADAPTED_PASS}


def _adapted_pass(res: Comparison, keep_cache: bool) -> None:
    """The adapted model under the comparison's mask: sized as the sparse pass was (a score-dependent budget per
    layer on the adapted model's own scores), measured against the dense pass."""
    adaptation = res.adaptation
    assert adaptation is not None
    model = adaptation.model(res.sparse.the_model())
    res._adapted_model = model  # the pass holds a weak reference only
    requested = res.metrics.requested_sparsity
    calibrate = requested is not None and mask_library.calibrated_per_layer(res.mask)
    adapted = captured_pass(
        model,
        res.dense.ids,
        res.mask,
        seed=res.sparse.seed,
        is_lm=True,
        keep_cache=keep_cache,
        target_sparsity=requested if calibrate else None,
        compare_with=res.dense,
    )
    res.adapted = adapted
    m = res.metrics
    m.adapted_achieved_sparsity = sparsity_metrics(adapted.store, requested).achieved_sparsity
    adapted_output_metrics(m, res.dense, adapted)
    if not adapted.store.retain:
        release_free_memory()


def _per_layer(res: Comparison) -> Stages:
    """Fill ``per_layer_delta_ppl`` and ``cumulative_delta_ppl`` one replayed pass at a time (they grow on the
    metrics as they are computed; reset when abandoned half way)."""
    m = res.metrics
    assert m.dense_ppl is not None
    model = res.sparse.the_model()
    if layer_stack(model) is None and NOTE_NO_REPLAY not in m.notes:
        m.notes.append(NOTE_NO_REPLAY)
    isolated: list[float] = []
    cumulative: list[float] = []
    m.per_layer_delta_ppl, m.cumulative_delta_ppl = isolated, cumulative
    finished = False
    try:
        total = 2 * res.n_layers
        for kind, _, value in iter_per_layer(model, res.mask, res.dense, res.sparse, m.dense_ppl, res.sparse.seed):
            (isolated if kind == "isolated" else cumulative).append(value)
            if len(isolated) + len(cumulative) < total:  # the last step follows with the stage marked done
                yield Progress(PER_LAYER, len(isolated) + len(cumulative), total, res.snapshot())
        finished = True
        res.done = res.done | {PER_LAYER}
        yield Progress(PER_LAYER, total, total, res.snapshot())
    finally:
        if not finished:
            m.per_layer_delta_ppl = m.cumulative_delta_ppl = None


def prepare(model: Any, request: Request, *, tokenizer: PreTrainedTokenizerBase | None = None) -> Comparison:
    """The first stage of ``request``: the dense pass (cached), the sparse pass, the achieved sparsity and the
    next-token metrics. :func:`later_stages` adds the rest (``continuation_tokens`` > 0: the passes keep their KV
    cache for it), the adapted pass first."""
    text, mask, sparsity, mask_params = request.text, request.mask, request.sparsity, dict(request.mask_params)
    max_tokens, seed, continuation_tokens, adapted = (
        request.max_tokens,
        request.seed,
        request.continuation_tokens,
        request.adapted,
    )
    model, tok = resolve_model(model, tokenizer)
    check_supported(model)
    ids, full_length = text_to_ids(tok, text, model, max_tokens)
    if adapted is not None:  # before any pass: a wrong adaptation fails fast
        adapted.check_applies(model)
        adapted.check_held_out(text or "")
    n_tokens = ids.shape[1]
    config = text_config(model)
    causal = model_is_causal(model)
    is_lm = getattr(model, "get_output_embeddings", lambda: None)() is not None and causal
    cls = mask_library.get(mask, **mask_params) if not isinstance(mask, Mask) else mask
    if not causal and not cls.supports_encoder:
        raise ValueError(
            f"mask {cls.id!r} is a decoding-time idea and needs a causal model; {type(model).__name__} is an encoder"
        )
    paper = sparsity == mask_library.PAPER  # the paper's own budget: no sparsity is asked, the achieved one reported
    requested = None if paper else cast(float | None, sparsity)
    if requested is None and not paper and not (cls.budget is not None and cls.budget in mask_params):
        requested = None if isinstance(mask, Mask) else DEFAULT_SPARSITY
    # the request is judged on the mask the sparse pass applies (below), not on this estimate
    paper_said: str | None = None  # what sparsity="paper" used, when the paper alone does not say it
    if paper:
        resolved, paper_said = mask_library.at_paper(mask, n_tokens, **mask_params)
    else:
        resolved = mask_library.resolve(mask, n_tokens, requested, causal, warn=False, **mask_params)
    # a score-dependent budget set by the slider is sized again per layer on the layer's real scores
    calibrate = requested is not None and mask_library.calibrated_per_layer(resolved)
    keep_cache = continuation_tokens > 0

    key = DenseCache.key(model, ids, keep_cache)
    dense = DENSE_CACHE.get(key, model)
    if dense is None:
        dense = captured_pass(model, ids, None, seed=seed, is_lm=is_lm, keep_cache=keep_cache)
        if is_lm:
            vocab = dense.last_logits.numel() if dense.last_logits is not None else 0
            next_token_stats(dense, keep_logits=8 * n_tokens * vocab <= DENSE_LOGITS_BUDGET)
        DENSE_CACHE.put(key, model, dense)
    if not dense.store.retain:
        release_free_memory()  # before the sparse pass: freed temporaries (the head's chunks: 1.7 GB at 8192 tokens)
    first = view_first(model, n_tokens)  # a long text: the view first, the other layers' maps as a later stage
    sparse = (masked_pass if first else captured_pass)(
        model,
        ids,
        resolved,
        seed=seed,
        is_lm=is_lm,
        keep_cache=keep_cache,
        target_sparsity=requested if calibrate else None,
        compare_with=dense,
    )
    if first and request.layer is not None:  # the shown layer's maps, before anything else
        sparse.fill(min(max(request.layer, 0), num_layers(model) - 1))

    metrics = sparsity_metrics(sparse.store, requested)
    if requested is not None and (resolved.budget is not None or sparsity is not None):
        shortfall = mask_library.sparsity_shortfall(
            resolved, requested, metrics.achieved_sparsity, n_tokens, causal, budgets=sparse.budgets
        )
        if shortfall is not None:  # more than 0.02 from the request: say what was used and why, here and as a note
            warnings.warn(shortfall, mask_library.SparsityOutOfReach, stacklevel=2)
            metrics.notes.append(shortfall)
    if paper:
        metrics.notes.append(paper_note(resolved, metrics.achieved_sparsity) if paper_said is None else paper_said)
    metrics.notes.extend(request.notes)
    if full_length > n_tokens:
        metrics.notes.append(truncation_note(full_length, n_tokens, max_tokens))
    if adapted is not None and (adapted.mask_id != resolved.id or adapted.sparsity != requested):
        metrics.notes.append(adapted_elsewhere_note(adapted.mask_id, adapted.sparsity, resolved.id, requested))
    if not is_lm:
        assert dense.full_output is not None and sparse.full_output is not None
        metrics.output_relative_error = float(
            (sparse.full_output - dense.full_output).norm() / dense.full_output.norm().clamp_min(1e-30)
        )
    if not sparse.store.retain:
        release_free_memory()  # the passes' temporaries of a long text
    decode = decoder(tok)
    return Comparison(
        model_name=display_name(model),
        text=text or "",
        token_ids=ids[0].tolist(),
        tokens=readable_tokens(decode, ids[0].tolist()),
        mask=resolved,
        causal=causal,
        metrics=metrics,
        continuations={},
        dense=dense,
        sparse=sparse,
        n_layers=num_layers(model),
        n_heads=config.num_attention_heads,
        n_kv_heads=n_kv_heads(config),
        is_lm=is_lm,
        eos=eos_ids(tok, model),
        _decode=decode,
        _model=model,
        _tokenizer=tok,
        done={SPARSE_PASS}
        | ({ATTENTION_MAPS} if sparse.store.complete else set())
        | (set() if is_lm else {NEXT_TOKEN_METRICS}),
        adaptation=adapted,
    )
