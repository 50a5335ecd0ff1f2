"""One captured forward pass and what it leaves behind (:class:`PassResult`), its next-token statistics, and
greedy continuations under the pass's mask. Every pass goes through the single capture path in
:mod:`attnsparse_widget.capture`."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from transformers import PreTrainedModel

from . import metrics as M
from .capture import (
    Plan,
    QueryKeys,
    Recomputation,
    attention_active,
    layer_attention,
    layer_inputs,
    record_layer,
)
from .compat import cache_kwarg, cache_of, output_cache, without_cache
from .hooks import LayerOutputs, capture_layer_outputs
from .introspect import head_dims, layer_indexer, layer_stack, n_kv_heads, num_layers, text_config, unsupported
from .logits import chunks, head_can_replay, logits_at, record_base_output, verify_replay
from .masks import Mask
from .store import AttentionStore

Tensor = torch.Tensor
RECOMPUTED_LAYERS = 1  # full-resolution layers recomputed on demand and kept, per pass (overview stores)
# a dense pass of a text longer than the overview keeps every layer's queries and keys up to this size (141 MB of
# queries at 2048 tokens for the default model, 566 MB at 8192; its keys are the KV cache's), so that its sparse
# passes measure their attention metrics as they run (a long text's layers are never recomputed whole for them)
QK_BUDGET = 1024 * 2**20
# ... and keeps them (and its keys and values for replays that skip a prefix) only up to this size of queries
# (3800 tokens): a longer text's are recomputed per layer from the pass's block outputs when a replay needs them
# (:meth:`~attnsparse_widget.capture.QueryKeys.at`), so that its memory is its block outputs
QUERIES_KEPT_BYTES = 256 * 2**20
# ... and keeps the output of every OUTPUTS_EVERY-th block only (19 MB each at 8192 tokens, 566 MB per pass for all
# 30): a replay from block l computes the blocks after the nearest kept one again, each by the route the pass took
# (:func:`~attnsparse_widget.capture.replays.outputs_before`: exact, bit for bit). 1 keeps them all.
OUTPUTS_EVERY = 1


@dataclass
class PassResult:
    """What one captured forward pass leaves behind (batch of one).

    For language models the next-token logits are not kept (``[T, vocab]`` floats): :meth:`logits` recomputes them
    for any positions from the recorded base-model output, by the model's own head (see :mod:`.logits`).
    """

    store: AttentionStore
    layer_outputs: LayerOutputs
    ids: Tensor
    mask: Mask | None
    seed: int
    model: weakref.ref[PreTrainedModel]
    is_lm: bool
    base_output: Any = None  # the base model's output (language models whose head can be replayed)
    full_output: Tensor | None = None  # logits [T, V] (head not replayable) or the encoder's last hidden state
    last_logits: Tensor | None = None  # [V], the pass's own logits at the last position
    nll: Tensor | None = None  # per-position next-token loss [T-1] (language models)
    argmax: Tensor | None = None  # per-position predicted token [T]
    # dense passes, per chunk of positions: (logits, probabilities, log-normaliser, squared norm of the logits);
    # logits and probabilities are kept only while small (else recomputed by the head)
    reference: list[tuple[Tensor | None, Tensor | None, Tensor, float]] = field(default_factory=list)
    cache: Any = None  # the pass's KV cache, kept until its greedy continuation uses it
    kv: list[tuple[Tensor, Tensor]] | None = None  # dense passes: every layer's keys and values (per-layer replays)
    qk: QueryKeys | None = None  # dense passes within QK_BUDGET: every layer's queries and keys (attention metrics)
    # a view-first pass (:func:`masked_pass`), which records its layers after the pass: the dense pass's queries and
    # keys, to measure each layer against as it is recorded (:meth:`fill`)
    dense_qk: QueryKeys | None = None
    first_changed: dict[int, int] = field(default_factory=dict)  # per masked layer, the first row that lost a pair
    # per layer, the budget of a score-dependent mask as the pass sized it on that layer's scores (capture.Plan);
    # every later use of the pass (layer recomputation, replays, continuation) applies exactly these
    budgets: dict[int, int] = field(default_factory=dict)
    continuation: list[int] = field(default_factory=list)
    continuation_steps: int = 0  # tokens asked for (the continuation stops early at an end-of-sequence token)
    # full-resolution layers recomputed on demand (at most RECOMPUTED_LAYERS), read and written under _memo_lock:
    # the notebook's thread and the widget's worker may both read one pass. Each snapshot has its own (init=False).
    _layers: OrderedDict[tuple[int, int, int], tuple[Tensor, Tensor | None, Tensor]] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    # one-layer stores of layers this pass's store has not recorded yet (a view-first pass, read before :meth:`fill`)
    _stores: OrderedDict[int, AttentionStore] = field(
        default_factory=OrderedDict, init=False, repr=False, compare=False
    )

    def snapshot(self) -> PassResult:
        """A copy for a :class:`~attnsparse_widget.result.Comparison` snapshot: what later stages set on this pass
        (the continuation, the KV cache they release) never shows in it. The recorded tensors are shared: nothing
        writes them once the pass has run. The copy holds no KV cache and its own recomputed layers."""
        return replace(
            self,
            store=self.store.snapshot(),
            cache=None,
            budgets=dict(self.budgets),
            first_changed=dict(self.first_changed),
            continuation=list(self.continuation),
            reference=list(self.reference),
        )

    def the_model(self) -> PreTrainedModel:
        model = self.model()
        if model is None:
            raise RuntimeError(
                "the model of this comparison was garbage-collected; keep a reference to it to "
                "recompute full-resolution attention"
            )
        return model

    def logits(self, positions: Tensor) -> Tensor:
        """Float32 next-token logits ``[len(positions), vocab]``."""
        if self.full_output is not None:
            return self.full_output[positions.to(self.full_output.device)].float()
        return logits_at(self.the_model(), self.ids, self.base_output, positions)

    def layer(
        self, layer: int, remember: bool = True, rows: tuple[int, int] | None = None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """(probs ``[1, H, R, T]``, keep ``[1, H|1, R, T]`` or None, allowed ``[1, 1, R, T]``) at full resolution
        for the query rows ``rows`` (half-open; None: all ``T``): from the store when retained, else recomputed by
        replaying that layer (the last one asked for is kept when ``remember``)."""
        store = self.store
        lo, hi = rows or (0, self.ids.shape[1])
        if store.retain:
            probs = store.probs[layer]
            allowed = store.allowed[layer]
            assert probs is not None and allowed is not None
            keep = store.keep[layer]
            return probs[:, :, lo:hi], None if keep is None else keep[:, :, lo:hi], allowed[:, :, lo:hi]
        return self._memoized(
            self._layers,
            (layer, lo, hi),
            lambda: layer_attention(
                self.the_model(),
                self.ids,
                self.mask,
                layer,
                self.layer_outputs,
                self.seed,
                self.budgets,
                rows,
                store.factor,
            ),
            remember,
        )

    def _memoized(self, memo: OrderedDict[Any, Any], key: Any, make: Callable[[], Any], remember: bool = True) -> Any:
        """``memo[key]``, else ``make()`` (computed outside the lock: a reader on another thread is not held up),
        kept when ``remember`` among the last :data:`RECOMPUTED_LAYERS` asked for."""
        with self._memo_lock:
            found = memo.get(key)
            if found is not None:
                memo.move_to_end(key)
                return found
        found = make()
        if remember:
            with self._memo_lock:
                memo[key] = found
                while len(memo) > RECOMPUTED_LAYERS:
                    memo.popitem(last=False)
        return found

    def fill(self, layer: int) -> None:
        """Record ``layer`` into this pass's store, as the pass would have (a view-first pass records its layers
        after the pass, :func:`~attnsparse_widget.capture.record_layer`), measured against the dense pass when it
        kept its queries and keys. Only the pass's owner calls it (the pipeline's worker): a snapshot's store never
        changes (:meth:`store_for` reads an unrecorded layer)."""
        if not self.store.recorded[layer]:
            self._record(layer, self.store, self.dense_qk)

    def _record(self, layer: int, into: AttentionStore, dense_qk: QueryKeys | None) -> None:
        """Replay ``layer`` of this pass into ``into`` (in the pass's own blocks of rows: the same numbers)."""
        record_layer(
            self.the_model(),
            self.ids,
            self.mask,
            layer,
            self.layer_outputs,
            into,
            seed=self.seed,
            budgets=self.budgets,
            cell=self.store.factor,
            dense_qk=None if dense_qk is None else dense_qk.at(layer),
        )

    def store_for(self, layer: int) -> AttentionStore:
        """A store holding ``layer``'s maps: this pass's own once it has recorded the layer, else a store of that one
        layer, recomputed by replay (the last one asked for is kept). The one place that reads a layer of a
        view-first pass before the pipeline recorded it (a layer change while the later stages run)."""
        store = self.store
        if store.recorded[layer]:
            return store

        def recorded() -> AttentionStore:
            one = AttentionStore(len(store.recorded), store.n_heads, store.n_tokens, retain=store.retain, slab=False)
            self._record(layer, one, None)
            return one

        found: AttentionStore = self._memoized(self._stores, layer, recorded)
        return found

    def release(self) -> None:
        """Drop what can be made again: the KV cache kept for a continuation, recomputed layers (a reader holding
        one keeps it: only the memo lets go)."""
        self.cache = None
        with self._memo_lock:
            self._layers.clear()
            self._stores.clear()

    def nbytes(self) -> int:
        """Bytes held (maps, layer outputs, logits), roughly."""
        total = self.store.nbytes()
        for out in self.layer_outputs.outputs:
            t = out if isinstance(out, Tensor) else (out[0] if isinstance(out, tuple) else None)
            if isinstance(t, Tensor):
                total += t.numel() * t.element_size()
        queries = self.qk.queries if self.qk is not None else []
        keys = self.qk.keys if self.qk is not None and self.kv is None else []  # else the KV cache's, counted there
        for t in (
            *queries,
            *keys,
            self.full_output,
            *(t for chunk in self.reference for t in chunk[:3]),
            *(t for pair in self.kv or [] for t in pair),
        ):
            if t is not None:
                total += t.numel() * t.element_size()
        return total


def captured_pass(
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask | None,
    *,
    seed: int,
    is_lm: bool,
    keep_cache: bool = False,
    target_sparsity: float | None = None,
    compare_with: PassResult | None = None,
) -> PassResult:
    """One forward pass with capture: every layer's attention into a store, every block's output, and (language
    models) the base model's output and the last position's logits. ``keep_cache``: also keep the KV cache for a
    later greedy continuation (row-local masks only). ``target_sparsity``: size a score-dependent mask's budget per
    layer on that layer's scores towards it (kept as ``budgets``; see :class:`~attnsparse_widget.capture.Plan`).

    Texts whose maps the store does not retain (longer than the overview): a dense pass (``mask`` None) keeps every
    layer's queries and keys when they fit :data:`QK_BUDGET`, and a pass given such a pass as ``compare_with``
    measures its attention metrics against it layer by layer as it runs (in its store,
    :func:`~attnsparse_widget.store.compare_heads`) instead of recomputing both passes' layers afterwards. Retained
    maps are measured afterwards from the store: that costs no recomputation, and a widget shows the sparse pass
    sooner."""
    n_layers = num_layers(model)
    store = _new_store(model, ids.shape[1])
    plan = Plan(
        layer_of=layer_indexer(model),
        mask=mask,
        recorder=store,
        seed=seed,
        target_sparsity=target_sparsity,
        cell=store.factor,
    )
    if not store.retain:  # retained maps give the attention metrics afterwards, at no recomputation
        if mask is None and qk_bytes(model, ids.shape[1]) <= QK_BUDGET:
            plan.keep_qk = QueryKeys.empty(n_layers, kept=not recomputes_inputs(model, ids.shape[1]))
        if compare_with is not None and compare_with.qk is not None and compare_with.qk.has_all:
            plan.dense_qk = compare_with.qk  # else the attention metrics recompute both passes' layers afterwards
    result = _forward(model, ids, mask, plan, store, seed=seed, is_lm=is_lm, keep_cache=keep_cache)
    if result.qk is not None and not result.qk.kept:
        result.qk.recompute = _query_keys_again(model, ids, result.layer_outputs)
    if not store.complete:
        missing = [i for i, done in enumerate(store.recorded) if not done]
        raise unsupported(model, f"layers {missing} did not call the attention function")
    return result


def view_first(model: PreTrainedModel, n_tokens: int) -> bool:
    """Whether a masked pass over ``n_tokens`` goes view first (:func:`masked_pass`): a text longer than the
    overview (a short one records every layer in one cheap pass)."""
    return not _new_store(model, n_tokens).retain


def _new_store(model: PreTrainedModel, n_tokens: int) -> AttentionStore:
    """An empty store for a pass of ``model`` over ``n_tokens`` (it retains full maps or pools, by its size)."""
    return AttentionStore(num_layers(model), text_config(model).num_attention_heads, n_tokens)


def masked_pass(
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask,
    *,
    seed: int,
    is_lm: bool,
    keep_cache: bool = False,
    target_sparsity: float | None = None,
    compare_with: PassResult | None = None,
) -> PassResult:
    """The view-first masked pass (see :func:`view_first`): the forward with nothing recorded but what the view
    needs, recording every block's output, the kept and allowed pairs per layer (the achieved sparsity) and what
    :func:`captured_pass` records for the next-token metrics. A mask known from positions takes the fast kernels
    (FlexAttention once compiled, :mod:`.kernels`; else the blocked eager path over each block's kept keys); a
    score-dependent one the eager path, sized per layer towards ``target_sparsity`` as in :func:`captured_pass`.
    No layer's maps are recorded: :meth:`PassResult.fill` records one afterwards by replaying it from the recorded
    outputs, as :func:`captured_pass` would have (measured against ``compare_with`` when that dense pass kept its
    queries and keys). A layer whose pairs went uncounted is recorded here."""
    n_layers = num_layers(model)
    store = _new_store(model, ids.shape[1])
    plan = Plan(
        layer_of=layer_indexer(model),
        mask=mask,
        seed=seed,
        cell=store.factor,
        counts={},
        may_compile=False,
        target_sparsity=target_sparsity,
    )
    result = _forward(model, ids, mask, plan, store, seed=seed, is_lm=is_lm, keep_cache=keep_cache)
    result.dense_qk = compare_with.qk if compare_with is not None else None
    assert plan.counts is not None
    for layer, (kept, allowed) in plan.counts.items():
        store.set_counts(layer, kept, allowed)
    for layer in range(n_layers):
        if store.kept[layer] is None:  # it took the eager path (soft-capping, ...): recorded whole
            result.fill(layer)
    return result


def _forward(
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask | None,
    plan: Plan,
    store: AttentionStore,
    *,
    seed: int,
    is_lm: bool,
    keep_cache: bool,
) -> PassResult:
    """The forward pass of :func:`captured_pass` and :func:`masked_pass` under ``plan``: every block's output and,
    for language models, the base output (or the full logits), the last logits and the KV caches they keep."""
    outputs = LayerOutputs()
    replayable = is_lm and head_can_replay(model)
    recorded: dict[str, Any] = {}
    kwargs = {"logits_to_keep": 1} if replayable else {}
    # a dense pass keeps its keys and values (replays that skip a prefix, its continuation); a long text's passes
    # keep none: their continuation rebuilds the cache from the block outputs (cache_from_outputs)
    use_cache = is_lm and (mask is None or (keep_cache and mask.row_local)) and not rebuilds_cache(model, ids.shape[1])
    every = outputs_every(model, ids.shape[1])
    with torch.inference_mode(), attention_active(model, plan), capture_layer_outputs(model, outputs, every):
        with record_base_output(model, recorded) if replayable else contextlib.nullcontext():
            out = model(input_ids=ids, use_cache=use_cache, **kwargs)
    if plan.calls == 0:
        raise unsupported(model, "no attention call went through the registered attention function")
    outputs.recompute = Recomputation.of(plan)
    result = PassResult(
        store=store,
        layer_outputs=outputs,
        ids=ids,
        mask=mask,
        seed=seed,
        model=weakref.ref(model),
        is_lm=is_lm,
        first_changed=dict(plan.first_changed),
        budgets=dict(plan.budgets),
        qk=plan.keep_qk if plan.keep_qk is not None and plan.keep_qk.complete else None,
    )
    if not is_lm:
        result.full_output = out.last_hidden_state[0].float()
        return result
    result.last_logits = out.logits[0, -1].float()
    cache = output_cache(out) if use_cache else None
    result.cache = cache if keep_cache else None
    if (
        mask is None
        and cache is not None
        and full_attention_only(model)
        and all(hasattr(layer, "keys") for layer in getattr(cache, "layers", [None]))
    ):
        # the prefill's keys and values (for replays that skip a prefix), in one allocation (capture_layer_outputs)
        slab = torch.stack([torch.stack([layer.keys, layer.values]) for layer in cache.layers])
        result.kv = [(pair[0], pair[1]) for pair in slab]
        for layer, (keys, values) in zip(cache.layers, result.kv, strict=True):  # the cache reads the same memory
            layer.keys, layer.values = keys, values
        if result.qk is not None:  # the same keys: hold one copy
            result.qk.keys = [keys for keys, _ in result.kv]
    if replayable and verify_replay(model, ids, recorded["base"], out.logits[0, -1]):
        result.base_output = without_cache(recorded["base"])  # the head does not need it; the cache lives on
    else:  # keep the full logits: run again without logits_to_keep if only the last position came back
        if out.logits.shape[1] != ids.shape[1]:
            again = Plan(layer_of=plan.layer_of, mask=mask, seed=seed, budgets=dict(plan.budgets))
            with torch.inference_mode(), attention_active(model, again):
                out = model(input_ids=ids, use_cache=False)
        result.full_output = out.logits[0].float()
    return result


def _query_keys_again(
    model: PreTrainedModel, ids: Tensor, outputs: LayerOutputs
) -> Callable[[int], tuple[Tensor, Tensor]]:
    """A dense pass's queries and keys of any layer, recomputed from its block outputs (:func:`layer_inputs`); it
    holds the model weakly, as the pass does."""
    ref = weakref.ref(model)

    def recompute(layer: int) -> tuple[Tensor, Tensor]:
        model = ref()
        if model is None:
            raise RuntimeError("the model of this pass was garbage-collected; its queries cannot be recomputed")
        query, key, _ = layer_inputs(model, ids, layer, outputs)
        return query, key

    return recompute


def query_bytes(model: PreTrainedModel, n_tokens: int) -> int:
    """Bytes of every layer's float32 queries for a text of ``n_tokens`` (batch of one)."""
    config = text_config(model)
    d_qk, _ = head_dims(config)
    return 4 * num_layers(model) * n_tokens * config.num_attention_heads * d_qk


def qk_bytes(model: PreTrainedModel, n_tokens: int) -> int:
    """Bytes of every layer's float32 queries and keys for a text of ``n_tokens`` (batch of one)."""
    config = text_config(model)
    d_qk, _ = head_dims(config)
    return 4 * num_layers(model) * n_tokens * (config.num_attention_heads + n_kv_heads(config)) * d_qk


def next_token_stats(result: PassResult, keep_logits: bool = False) -> None:
    """Fill a pass's per-position next-token loss and argmax, and its reference for comparing sparse passes with
    (the logits and probabilities too when ``keep_logits``)."""
    ids = result.ids[0]
    n = ids.shape[0]
    nll, argmax = [], []
    result.reference = []
    for pos in chunks(0, n, ids.device):
        logits = result.logits(pos)
        lse = torch.logsumexp(logits, dim=-1)
        argmax.append(logits.argmax(-1))
        nll.append(M.next_token_nll_from_logits(logits, lse, ids[pos[pos < n - 1] + 1]))
        probs = torch.softmax(logits, dim=-1) if keep_logits else None
        sumsq = float(torch.einsum("tv,tv->", logits, logits))
        result.reference.append((logits if keep_logits else None, probs, lse, sumsq))
    result.nll = torch.cat(nll).cpu()
    result.argmax = torch.cat(argmax).cpu()


def greedy_continuation(model: PreTrainedModel, result: PassResult, n: int, eos: set[int]) -> list[int]:
    """Greedy decoding of ``n`` tokens after the pass's text, under the pass's mask (cached on the result).

    With a KV cache for row-local masks (a row's mask depends on that row only, so cached decoding equals
    recomputing the full mask); by full recomputation for the others (H2O, vertical-slash, block top-k), whose
    earlier rows depend on later queries or on history."""
    if result.continuation_steps >= n:
        return result.continuation[:n]
    mask = result.mask
    plan = Plan(layer_of=layer_indexer(model), mask=mask, seed=result.seed, budgets=dict(result.budgets))
    with_cache = mask is None or mask.row_local
    seq = result.ids
    new: list[int] = []
    cache = None
    with torch.inference_mode(), attention_active(model, plan):
        logits = result.last_logits
        if with_cache:
            cache, result.cache = result.cache, None  # the pass's own cache, used once (decoding extends it)
            if cache is None and rebuilds_cache(model, seq.shape[1]):
                cache = cache_from_outputs(model, result)
            if cache is None:  # prefill one (nothing captured: the dense layers take the fast path)
                out = model(input_ids=seq, use_cache=True, **({"logits_to_keep": 1} if head_can_replay(model) else {}))
                cache = output_cache(out)
        for _ in range(n):
            assert logits is not None
            token = int(logits.argmax())
            new.append(token)
            if token in eos:
                break
            step = torch.tensor([[token]], device=seq.device)
            seq = torch.cat([seq, step], dim=1)
            if cache is not None:
                out = model(input_ids=step, use_cache=True, **cache_kwarg(model, cache))
                cache = output_cache(out)
            else:
                out = model(input_ids=seq, use_cache=False)
            logits = out.logits[0, -1].float()
    result.continuation = new
    result.continuation_steps = n
    return new


def recomputes_inputs(model: PreTrainedModel, n_tokens: int) -> bool:
    """Whether a pass over ``n_tokens`` keeps no attention inputs (queries, keys, values) but recomputes them from
    its block outputs when needed (:func:`layer_inputs`): a text above :data:`QUERIES_KEPT_BYTES` of a model whose
    blocks can be replayed."""
    return query_bytes(model, n_tokens) > QUERIES_KEPT_BYTES and layer_stack(model) is not None


def outputs_every(model: PreTrainedModel, n_tokens: int) -> int:
    """Every how many blocks a pass over ``n_tokens`` keeps a block's output (:class:`LayerOutputs`): a text that
    recomputes its attention inputs keeps every :data:`OUTPUTS_EVERY`-th, the others all of them."""
    return OUTPUTS_EVERY if recomputes_inputs(model, n_tokens) else 1


def rebuilds_cache(model: PreTrainedModel, n_tokens: int) -> bool:
    """Whether a pass keeps no KV cache and its continuation rebuilds one from the block outputs: it recomputes its
    attention inputs (377 MB of keys and values per pass at 8192 tokens for the default model) and every layer of
    the model attends over every earlier position (its cache is then one tensor pair per layer)."""
    return recomputes_inputs(model, n_tokens) and full_attention_only(model)


def cache_from_outputs(model: PreTrainedModel, result: PassResult) -> Any:
    """The KV cache of ``result``'s pass, rebuilt from its block outputs (:func:`layer_inputs`, one layer at a time:
    exactly the keys and values its attention calls received, which a cached pass would have kept)."""
    pairs = []
    for layer in range(num_layers(model)):
        _, keys, values = layer_inputs(model, result.ids, layer, result.layer_outputs)
        pairs.append((keys, values))
    return cache_of(pairs)


def model_is_causal(model: PreTrainedModel) -> bool:
    """Whether the model's self-attention is causal, read from its attention modules' ``is_causal``."""
    stack = layer_stack(model)
    for module in (stack or model).modules():
        flag = getattr(module, "is_causal", None)
        if isinstance(flag, bool) and not isinstance(module, PreTrainedModel):
            return flag
    return model.__class__.__name__.endswith(("ForCausalLM", "LMHeadModel"))


def full_attention_only(model: PreTrainedModel) -> bool:
    """Whether every layer attends over all earlier positions (no sliding-window layers, whose caches and masks
    follow rules of their own): then a cache of the prefix's keys and values stands in for the prefix exactly."""
    config = text_config(model)
    types = getattr(config, "layer_types", None)
    if types:
        return all(t == "full_attention" for t in types)
    return getattr(config, "sliding_window", None) is None
