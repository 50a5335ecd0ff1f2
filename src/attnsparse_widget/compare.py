"""``compare(model, text, mask)``: run a model dense and sparse, and measure what the mask did.

One call runs (1) the dense pass, cached per (model, text), (2) the sparse pass with the mask on every layer and the
headline metrics from both passes' next-token distributions, (3) the attention metrics per layer and head (mass
recall, KL), (4) optionally the per-layer curves, and (5) greedy continuations under each regime. Every pass goes
through the single capture path in :mod:`attnsparse_widget.capture`. The widget runs (1)-(2) first, shows them,
and fills in (3)-(5) progressively (:func:`sparse_comparison`, then :meth:`Comparison.complete`).

Per-layer curves reuse the recorded block outputs instead of recomputing them: "mask only at layer l" replays the
dense outputs of blocks 0..l-1 and computes from block l; "mask at layers 0..l" replays the sparse pass's blocks
0..l and runs the rest dense. The dense blocks of a replay run through SDPA (nothing of them is captured), and the
next-token losses are recomputed only from the first position where the mask dropped a pair: the earlier
positions of a causal model cannot have changed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import inspect
import math
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import ModelOutput

from . import masks as mask_library
from . import metrics as M
from .capture import (
    LayerOutputs,
    Plan,
    attention_active,
    capture_layer_outputs,
    check_supported,
    input_device,
    layer_attention,
    layer_indexer,
    layer_stack,
    num_layers,
    start_at_layer,
    text_config,
    unsupported,
)
from .logits import chunks, head_can_replay, logits_at, record_base_output, verify_replay
from .masks import Mask
from .models import display_name, resolve_model
from .pooling import MAX_SIDE, block_mean, factor_for, repool_mean
from .store import AttentionStore

Tensor = torch.Tensor
DEFAULT_SPARSITY = 0.5
DENSE_CACHE_BYTES = 768 * 2**20  # the cached dense passes together (the most recent one is always kept)
DENSE_LOGITS_BUDGET = 256 * 2**20  # a dense pass keeps its next-token log-probabilities up to this size
RECOMPUTED_LAYERS = 1  # full-resolution layers recomputed on demand and kept, per pass (overview stores)


# ------------------------------------------------------------------------------------------------------- passes
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
    first_changed: dict[int, int] = field(default_factory=dict)  # per masked layer, the first row that lost a pair
    continuation: list[int] = field(default_factory=list)
    continuation_steps: int = 0  # tokens asked for (the continuation stops early at an end-of-sequence token)
    _layers: OrderedDict[int, tuple[Tensor, Tensor | None, Tensor]] = field(default_factory=OrderedDict)

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

    def layer(self, layer: int, remember: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
        """(probs ``[1, H, T, T]``, keep ``[1, H|1, T, T]`` or None, allowed ``[1, 1, T, T]``) at full resolution:
        from the store when retained, else recomputed by replaying that layer (the last one is kept when
        ``remember``)."""
        store = self.store
        if store.retain:
            probs = store.probs[layer]
            allowed = store.allowed[layer]
            assert probs is not None and allowed is not None
            return probs, store.keep[layer], allowed
        found = self._layers.get(layer)
        if found is None:
            found = layer_attention(self.the_model(), self.ids, self.mask, layer, self.layer_outputs, self.seed)
            if not remember:
                return found
            self._layers[layer] = found
            while len(self._layers) > RECOMPUTED_LAYERS:
                self._layers.popitem(last=False)
        else:
            self._layers.move_to_end(layer)
        return found

    def release(self) -> None:
        """Drop what can be made again: the KV cache kept for a continuation, recomputed layers."""
        self.cache = None
        self._layers.clear()

    def nbytes(self) -> int:
        """Bytes held (maps, layer outputs, logits), roughly."""
        total = self.store.nbytes()
        for out in self.layer_outputs.outputs:
            t = out if isinstance(out, Tensor) else (out[0] if isinstance(out, tuple) else None)
            if isinstance(t, Tensor):
                total += t.numel() * t.element_size()
        for t in (
            self.full_output,
            *(t for chunk in self.reference for t in chunk[:3]),
            *(t for pair in self.kv or [] for t in pair),
        ):
            if t is not None:
                total += t.numel() * t.element_size()
        return total


def captured_pass(
    model: PreTrainedModel, ids: Tensor, mask: Mask | None, *, seed: int, is_lm: bool, keep_cache: bool = False
) -> PassResult:
    """One forward pass with capture: every layer's attention into a store, every block's output, and (language
    models) the base model's output and the last position's logits. ``keep_cache``: also keep the KV cache for a
    later greedy continuation (row-local masks only)."""
    n_layers = num_layers(model)
    store = AttentionStore(n_layers, text_config(model).num_attention_heads, ids.shape[1])
    plan = Plan(layer_of=layer_indexer(model), mask=mask, recorder=store, seed=seed)
    outputs = LayerOutputs()
    replayable = is_lm and head_can_replay(model)
    recorded: dict[str, Any] = {}
    kwargs = {"logits_to_keep": 1} if replayable else {}
    use_cache = is_lm and (mask is None or (keep_cache and mask.row_local))  # a dense pass keeps its keys/values
    with torch.inference_mode(), attention_active(model, plan), capture_layer_outputs(model, outputs):
        with record_base_output(model, recorded) if replayable else contextlib.nullcontext():
            out = model(input_ids=ids, use_cache=use_cache, **kwargs)
    if plan.calls == 0:
        raise unsupported(model, "no attention call went through the registered attention function")
    if not store.complete:
        missing = [i for i, done in enumerate(store.recorded) if not done]
        raise unsupported(model, f"layers {missing} did not call the attention function")
    result = PassResult(
        store=store,
        layer_outputs=outputs,
        ids=ids,
        mask=mask,
        seed=seed,
        model=weakref.ref(model),
        is_lm=is_lm,
        first_changed=dict(plan.first_changed),
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
        and _full_attention_only(model)
        and all(hasattr(layer, "keys") for layer in getattr(cache, "layers", [None]))
    ):
        # the prefill's keys and values (for replays that skip a prefix), in one allocation (capture_layer_outputs)
        slab = torch.stack([torch.stack([layer.keys, layer.values]) for layer in cache.layers])
        result.kv = [(pair[0], pair[1]) for pair in slab]
        for layer, (keys, values) in zip(cache.layers, result.kv, strict=True):  # the cache reads the same memory
            layer.keys, layer.values = keys, values
    if replayable and verify_replay(model, ids, recorded["base"], out.logits[0, -1]):
        result.base_output = _without_cache(recorded["base"])  # the head does not need it; the cache lives on
    else:  # keep the full logits: run again without logits_to_keep if only the last position came back
        if out.logits.shape[1] != ids.shape[1]:
            with torch.inference_mode(), attention_active(model, Plan(layer_of=plan.layer_of, mask=mask, seed=seed)):
                out = model(input_ids=ids, use_cache=False)
        result.full_output = out.logits[0].float()
    return result


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
    plan = Plan(layer_of=layer_indexer(model), mask=mask, seed=result.seed)
    with_cache = mask is None or mask.row_local
    seq = result.ids
    new: list[int] = []
    cache = None
    with torch.inference_mode(), attention_active(model, plan):
        logits = result.last_logits
        if with_cache:
            cache, result.cache = result.cache, None  # the pass's own cache, used once (decoding extends it)
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


def replay_nll(
    model: PreTrainedModel,
    dense: PassResult,
    mask: Mask | None,
    sparse_layers: frozenset[int],
    start: int,
    outputs: LayerOutputs,
    seed: int,
    prefix: int = 0,
) -> Tensor:
    """Per-token NLL of a pass whose blocks ``0..start-1`` replay ``outputs`` and whose ``sparse_layers`` use
    ``mask`` (the rest dense).

    ``prefix``: positions known to come out exactly as in the dense pass (no mask drops a pair in any earlier row:
    a causal model's earlier positions cannot have changed). They are not computed at all: the blocks see only the
    later positions, with the dense pass's keys and values of the prefix as their cache, and the prefix keeps the
    dense pass's losses. Positions before the first row this pass's own masks change are not scored again either.
    """
    ids = dense.ids
    n = ids.shape[1]
    assert dense.nll is not None
    nll = dense.nll.clone()
    if prefix >= n - 1:
        return nll
    cache = None
    if (
        prefix > 0
        and dense.kv is not None
        and _full_attention_only(model)
        and (sliced := _sliced_outputs(outputs, start, prefix)) is not None
    ):
        cache = DynamicCache(ddp_cache_data=[(k[:, :, :prefix], v[:, :, :prefix]) for k, v in dense.kv])
        outputs = sliced
    else:
        prefix = 0
    sub_ids = ids[:, prefix:]
    plan = Plan(layer_of=layer_indexer(model), mask=mask, sparse_layers=sparse_layers, seed=seed)
    replayable = dense.base_output is not None
    recorded: dict[str, Any] = {}
    with torch.inference_mode(), attention_active(model, plan), start_at_layer(model, start, outputs):
        with record_base_output(model, recorded) if replayable else contextlib.nullcontext():
            out = model(
                input_ids=sub_ids,
                use_cache=cache is not None,
                **cache_kwarg(model, cache),
                **({"logits_to_keep": 1} if replayable else {}),
            )
    first = max(prefix, min(plan.first_changed.values(), default=prefix))
    if prefix == 0 and not plan.first_changed and start == 0:
        return nll  # nothing was dropped and nothing replayed: the dense pass itself
    targets = ids[0]
    with torch.inference_mode():
        for pos in chunks(first, n - 1, ids.device):
            local = pos - prefix
            logits = logits_at(model, sub_ids, recorded["base"], local) if replayable else out.logits[0, local].float()
            lse = torch.logsumexp(logits, dim=-1)
            nll[pos.cpu()] = M.next_token_nll_from_logits(logits, lse, targets[pos + 1]).cpu()
    return nll


CACHE_NAMES = ("cache", "past_key_values")  # later transformers 5.x name the KV cache `cache`


def cache_kwarg(model: PreTrainedModel, cache: Any) -> dict[str, Any]:
    """``{"cache": cache}`` or ``{"past_key_values": cache}``, whichever the model's forward takes."""
    cls: type = type(model)  # plain `type`: mypy wrongly finds type[PreTrainedModel] unhashable (lru_cache key)
    return {_cache_name(cls): cache}


@functools.cache
def _cache_name(cls: type[PreTrainedModel]) -> str:
    params = inspect.signature(cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache a forward pass returned (under either name). Read through the output's own keys: in later
    transformers 5.x, reading the old name ``past_key_values`` in any way logs a deprecation warning."""
    for name in out.keys():
        if name in CACHE_NAMES:
            return out[name]
    return None


def _without_cache(out: ModelOutput) -> ModelOutput:
    """A copy of a model output without its KV cache (a ``ModelOutput`` keeps a field set to None in its dict)."""
    return type(out)(**{name: value for name, value in out.items() if name not in CACHE_NAMES})


def _full_attention_only(model: PreTrainedModel) -> bool:
    """Whether every layer attends over all earlier positions (no sliding-window layers, whose caches and masks
    follow rules of their own): then a cache of the prefix's keys and values stands in for the prefix exactly."""
    config = text_config(model)
    types = getattr(config, "layer_types", None)
    if types:
        return all(t == "full_attention" for t in types)
    return getattr(config, "sliding_window", None) is None


def _sliced_outputs(outputs: LayerOutputs, blocks: int, prefix: int) -> LayerOutputs | None:
    """The recorded outputs of blocks ``0..blocks-1`` without their first ``prefix`` positions (None when a block's
    output is not a ``[batch, positions, ...]`` tensor or a tuple that starts with one)."""
    sliced: list[Any] = []
    for out in outputs.outputs[:blocks]:
        if isinstance(out, Tensor):
            sliced.append(out[:, prefix:])
        elif isinstance(out, tuple) and out and isinstance(out[0], Tensor):
            sliced.append((out[0][:, prefix:], *out[1:]))
        else:
            return None
    return LayerOutputs(outputs=sliced)


# --------------------------------------------------------------------------------------------------- dense cache
class DenseCache:
    """The last few dense passes, keyed by model identity, weights version and token ids; bounded in bytes (the
    most recent pass is always kept)."""

    def __init__(self, max_bytes: int = DENSE_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Any, ...], tuple[weakref.ref[PreTrainedModel], PassResult, int]] = (
            OrderedDict()
        )

    @staticmethod
    def key(model: PreTrainedModel, ids: Tensor, keep_cache: bool) -> tuple[Any, ...]:
        version = sum(p._version for p in model.parameters())
        return (id(model), version, str(model.dtype), str(ids.device), tuple(ids[0].tolist()), keep_cache)

    def get(self, key: tuple[Any, ...], model: PreTrainedModel) -> PassResult | None:
        entry = self._entries.get(key)
        if entry is None or entry[0]() is not model:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[Any, ...], model: PreTrainedModel, result: PassResult) -> None:
        self._entries[key] = (weakref.ref(model), result, result.nbytes())
        self._entries.move_to_end(key)
        while len(self._entries) > 1 and sum(e[2] for e in self._entries.values()) > self.max_bytes:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


DENSE_CACHE = DenseCache()


def clear_cache() -> None:
    """Forget cached dense passes (they are also dropped when their model is garbage-collected)."""
    DENSE_CACHE.clear()


def release_free_memory() -> None:
    """Hand the memory freed by a long text's passes back to the operating system (glibc's ``malloc_trim``; a no-op
    elsewhere). Between passes, hundreds of MB of freed temporaries would otherwise stay in the process."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


# ---------------------------------------------------------------------------------------------------- result
@dataclass
class Comparison:
    """The result of :func:`compare`: dense and sparse attention for every layer and head, and the metrics.

    ``attention(layer)`` and ``keep_mask(layer)`` return ``[heads, T, T]`` arrays; ``tokens`` are readable
    strings; ``metrics`` is a :class:`~attnsparse_widget.metrics.Metrics`.
    """

    model_name: str
    text: str
    token_ids: list[int]
    tokens: list[str]
    mask: Mask
    causal: bool
    metrics: M.Metrics
    continuations: dict[str, str]
    dense: PassResult
    sparse: PassResult
    n_layers: int
    n_heads: int
    n_kv_heads: int  # key/value heads (fewer than n_heads under grouped-query attention)
    is_lm: bool = False
    eos: set[int] = field(default_factory=set)
    _decode: Callable[[list[int]], str] = field(repr=False, default=lambda ids: "")
    # the model itself: long texts recompute full-resolution layers and logits from it (the passes and the dense
    # cache only hold weak references, so a cached pass never keeps a model alive)
    _model: Any = field(repr=False, default=None)

    def attention(self, layer: int, which: str = "dense") -> np.ndarray:
        """Post-softmax attention of ``layer`` as float32 ``[heads, T, T]``; ``which`` is "dense" or "sparse"."""
        self._check_layer(layer)
        if which not in ("dense", "sparse"):
            raise ValueError(f"which must be 'dense' or 'sparse', got {which!r}")
        probs, _, _ = (self.dense if which == "dense" else self.sparse).layer(layer)
        return probs[0].numpy()

    def keep_mask(self, layer: int) -> np.ndarray:
        """The keep-mask the sparse pass applied at ``layer``, bool ``[heads, T, T]`` (within the model's mask)."""
        self._check_layer(layer)
        _, keep, allowed = self.sparse.layer(layer)
        if keep is None:  # the dense pattern: everything the model allows
            keep = allowed
        return keep[0].expand(self.n_heads, -1, -1).numpy().copy()

    def allowed_mask(self, layer: int) -> np.ndarray:
        """The model's own allowed pairs at ``layer`` (causal, padding, its own sliding window), bool ``[T, T]``."""
        self._check_layer(layer)
        allowed = self.sparse.store.allowed[layer]
        assert allowed is not None
        return allowed[0, 0].numpy().copy()

    def maps(
        self, layer: int, head: int = -1, region: tuple[int, int, int, int] | None = None, max_side: int = MAX_SIDE
    ) -> tuple[dict[str, np.ndarray], int]:
        """Means over cells of at most ``max_side`` per axis of the dense and sparse probabilities, the keep-mask
        and the allowed set of ``layer`` and ``head`` (-1: the mean over heads) over ``region`` (half-open
        [q0, q1, k0, k1]; None: everything). Returns the four maps (float32) and the tokens per cell.

        The whole map of a long text comes from the stores' pooled overview; a region, or any map of a retained
        store, from full resolution (recomputed for that layer when needed)."""
        self._check_layer(layer)
        n = len(self.tokens)
        q0, q1, k0, k1 = region or (0, n, 0, n)
        store = self.sparse.store
        if (q0, q1, k0, k1) == (0, n, 0, n) and not store.retain:
            keep = store.pooled_keep[layer]
            sums = {
                "dense": self.dense.store.pooled_probs[layer],
                "sparse": store.pooled_probs[layer],
                "keep": store.pooled_allowed[layer] if keep is None else keep,
                "allowed": store.pooled_allowed[layer],
            }
            outer = factor_for(math.ceil(n / store.factor), max_side)
            out = {}
            for name, value in sums.items():
                assert value is not None
                out[name] = repool_mean(_select_head(value.numpy(), head), n, n, store.factor, outer)
            return out, store.factor * outer
        factor = factor_for(max(q1 - q0, k1 - k0), max_side)
        cut = (slice(q0, q1), slice(k0, k1))
        full = {}
        for name, (probs, keep, allowed) in (("dense", self.dense.layer(layer)), ("sparse", self.sparse.layer(layer))):
            full[name] = _select_head(probs[0].numpy(), head)[cut]
            if name == "sparse":
                full["keep"] = _select_head((allowed if keep is None else keep)[0].numpy(), head)[cut]
                full["allowed"] = allowed[0, 0].numpy()[cut].astype(np.float32)
        return {name: block_mean(value, factor) for name, value in full.items()}, factor

    def head_maps(self, layer: int, max_side: int) -> tuple[np.ndarray, np.ndarray]:
        """Every head's dense and sparse map of ``layer``: ``[H, n, n]`` cell means with ``n <= max_side``."""
        self._check_layer(layer)
        n = len(self.tokens)
        out = []
        for result in (self.dense, self.sparse):
            store = result.store
            if store.retain:
                probs = store.probs[layer]
                assert probs is not None
                out.append(block_mean(probs[0].numpy(), factor_for(n, max_side)))
            else:
                sums = store.pooled_probs[layer]
                assert sums is not None
                outer = factor_for(math.ceil(n / store.factor), max_side)
                out.append(repool_mean(sums.numpy(), n, n, store.factor, outer))
        return out[0], out[1]

    def release(self) -> None:
        """Drop the caches that can be made again (a continuation then prefills its own KV cache)."""
        self.sparse.release()
        release_free_memory()

    def _check_layer(self, layer: int) -> None:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be an int in [0, {self.n_layers - 1}], got {layer!r}")

    def next_token_top(self, position: int = -1, k: int = 5) -> dict[str, list[tuple[str, float]]]:
        """Top-``k`` next tokens after ``position`` under each regime, as (token, probability) pairs."""
        if not self.is_lm:
            raise ValueError("next-token distributions exist only for causal language models")
        n = len(self.tokens)
        if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not -n <= position < n:
            raise ValueError(f"position must be an int in [{-n}, {n - 1}], got {position!r}")
        pos = torch.tensor([int(position) % n], device=self.dense.ids.device)
        out = {}
        for name, result in (("dense", self.dense), ("sparse", self.sparse)):
            last = result.last_logits if int(pos) == n - 1 else None  # the pass's own last logits: at hand
            top = torch.softmax(last if last is not None else result.logits(pos)[0], dim=-1).topk(k)
            out[name] = [(self._decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices, strict=True)]
        return out

    # ------------------------------------------------------------------------------------- the later stages
    def fill_attention_metrics(self) -> None:
        """Mass recall and KL(sparse‖dense) per layer and head (no-op once filled)."""
        if self.metrics.mass_recall is None:
            fill_attention_metrics(self)

    def fill_continuations(self, n: int) -> dict[str, str]:
        """Greedy continuations of ``n`` tokens under each regime (language models; the dense one is cached)."""
        if not self.is_lm or n <= 0:
            return self.continuations
        model = self.sparse.the_model()
        for name, result in (("dense", self.dense), ("sparse", self.sparse)):
            self.continuations[name] = self._decode(greedy_continuation(model, result, n, self.eos))
        return self.continuations

    def continuation_tokens(self) -> dict[str, list[str]]:
        """Each continuation as decoded tokens (for the widget's highlighting of the first divergence)."""
        if not self.continuations:
            return {}
        return {name: readable_tokens(self._decode, getattr(self, name).continuation) for name in ("dense", "sparse")}

    def fill_per_layer(self) -> None:
        """The per-layer and cumulative perplexity curves (about L replayed passes; no-op once filled)."""
        m = self.metrics
        if m.per_layer_delta_ppl is None and m.dense_ppl is not None:
            per_layer_curves(m, self.sparse.the_model(), self.mask, self.dense, self.sparse)

    def complete(self, per_layer: bool = True, continuation_tokens: int = 20) -> Comparison:
        """Everything :func:`compare` computes beyond the headline metrics; returns self."""
        self.fill_continuations(continuation_tokens)  # first: it uses up (and frees) the passes' KV caches
        self.fill_attention_metrics()
        if per_layer and self.is_lm:
            self.fill_per_layer()
        return self

    # ------------------------------------------------------------------------------------------------ exports
    def export_gif(
        self,
        path: Any,
        view: str = "side_by_side",
        head: int | None = None,
        layers: Any = None,
        duration_ms: int = 700,
        size: tuple[int, int] | None = None,
        overwrite: bool = False,
    ) -> Any:
        """Write an animated GIF stepping through the layers (see :func:`attnsparse_widget.export.export_gif`);
        returns a report with the path, the frame count and the seconds it took. An existing file is replaced
        only with ``overwrite=True``."""
        from .export import export_gif

        return export_gif(
            self, path, view=view, head=head, layers=layers, duration_ms=duration_ms, size=size, overwrite=overwrite
        )

    def export_png(
        self, path: Any, layer: int = 0, head: int | None = None, view: str = "side_by_side", overwrite: bool = False
    ) -> Any:
        """Write a PNG of one layer's view (see :func:`attnsparse_widget.export.export_png`)."""
        from .export import export_png

        return export_png(self, path, layer=layer, head=head, view=view, overwrite=overwrite)

    def to_html(self, path: Any = None, head: int | None = None, overwrite: bool = False) -> str:
        """A self-contained offline HTML page of this comparison (see :func:`attnsparse_widget.export.to_html`)."""
        from .export import to_html

        return to_html(self, path, head=head, overwrite=overwrite)

    def summary(self) -> str:
        """A readable table of the headline metrics and the continuations."""
        from .report import summary_table

        return summary_table(self)


def _select_head(values: np.ndarray, head: int) -> np.ndarray:
    """``[H|1, ...]`` → one head's map, or the mean over heads for ``head = -1`` (float32)."""
    if values.shape[0] == 1:
        return values[0].astype(np.float32, copy=False)
    if head < 0:
        return values.mean(0, dtype=np.float32)
    return values[head].astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------------- compare
def compare(
    model: Any = None,
    text: str | None = None,
    mask: str | Mask = "sink_window",
    sparsity: float | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    per_layer: bool = True,
    continuation_tokens: int = 20,
    max_tokens: int | None = None,
    seed: int = 0,
    **mask_params: Any,
) -> Comparison:
    """Run ``model`` on ``text`` densely and with the sparse ``mask``, and measure the difference.

    Args:
        model: None (the embedded SmolLM2-135M-Instruct), a hub id or local path, a loaded ``PreTrainedModel``
            (pass ``tokenizer=`` or a ``(model, tokenizer)`` tuple).
        text: the input text.
        mask: a mask id (see ``masks.available()``) or a ``Mask`` instance.
        sparsity: fraction of the allowed query-key pairs to drop, in [0, 1). None: 0.5, unless the mask's budget
            parameter is given explicitly (e.g. ``window=64``).
        per_layer: also compute the per-layer and cumulative perplexity curves (about L extra forward passes).
        continuation_tokens: greedy tokens to generate under each regime (0 to skip).
        max_tokens: truncate the text to this many tokens (otherwise a text longer than the model's positions
            raises).
        seed: seed of randomised patterns (BigBird).
        **mask_params: the mask's own parameters.
    """
    res = sparse_comparison(
        model,
        text,
        mask,
        sparsity,
        tokenizer=tokenizer,
        max_tokens=max_tokens,
        seed=seed,
        continuation_tokens=continuation_tokens,
        **mask_params,
    )
    return res.complete(per_layer=per_layer, continuation_tokens=continuation_tokens)


def sparse_comparison(
    model: Any = None,
    text: str | None = None,
    mask: str | Mask = "sink_window",
    sparsity: float | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    max_tokens: int | None = None,
    seed: int = 0,
    continuation_tokens: int = 20,
    **mask_params: Any,
) -> Comparison:
    """The first stage of :func:`compare` (same arguments): the dense pass (cached), the sparse pass, the achieved
    sparsity and the next-token metrics. :meth:`Comparison.complete` adds the rest (``continuation_tokens`` > 0:
    the passes keep their KV cache for it)."""
    model, tok = resolve_model(model, tokenizer)
    check_supported(model)
    ids, full_length = encode(tok, text, model, max_tokens)
    n_tokens = ids.shape[1]
    config = text_config(model)
    causal = _is_causal(model)
    is_lm = getattr(model, "get_output_embeddings", lambda: None)() is not None and causal
    cls = mask_library.get(mask, **mask_params) if not isinstance(mask, Mask) else mask
    if not causal and not cls.supports_encoder:
        raise ValueError(
            f"mask {cls.id!r} is a decoding-time idea and needs a causal model; {type(model).__name__} is an encoder"
        )
    requested = sparsity
    if requested is None and not (cls.budget is not None and cls.budget in mask_params) and not isinstance(mask, Mask):
        requested = DEFAULT_SPARSITY
    resolved = mask_library.resolve(mask, n_tokens, requested, causal, **mask_params)
    keep_cache = continuation_tokens > 0

    key = DenseCache.key(model, ids, keep_cache)
    dense = DENSE_CACHE.get(key, model)
    if dense is None:
        dense = captured_pass(model, ids, None, seed=seed, is_lm=is_lm, keep_cache=keep_cache)
        if is_lm:
            vocab = dense.last_logits.numel() if dense.last_logits is not None else 0
            next_token_stats(dense, keep_logits=8 * n_tokens * vocab <= DENSE_LOGITS_BUDGET)
        DENSE_CACHE.put(key, model, dense)
    sparse = captured_pass(model, ids, resolved, seed=seed, is_lm=is_lm, keep_cache=keep_cache)

    metrics = sparsity_metrics(sparse.store, requested)
    if full_length > n_tokens:
        metrics.notes.append(
            f"the text is {full_length} tokens; the first {n_tokens} are analysed (max_tokens={max_tokens})"
        )
    if is_lm:
        output_metrics(metrics, dense, sparse)
    else:
        assert dense.full_output is not None and sparse.full_output is not None
        metrics.output_relative_error = float(
            (sparse.full_output - dense.full_output).norm() / dense.full_output.norm().clamp_min(1e-30)
        )
    if not sparse.store.retain:
        release_free_memory()
    decode = _decoder(tok)
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
        n_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        is_lm=is_lm,
        eos=_eos_ids(tok, model),
        _decode=decode,
        _model=model,
    )


# ---------------------------------------------------------------------------------------------------- metrics
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
        metrics.notes.append("a one-token text has no next token to score: perplexity is undefined (nan)")


def fill_attention_metrics(res: Comparison) -> None:
    """Mass recall and KL(sparse‖dense) per layer and head (see :func:`iter_attention_metrics`)."""
    for _ in iter_attention_metrics(res):
        pass


def iter_attention_metrics(res: Comparison) -> Iterator[int]:
    """Compute mass recall and KL(sparse‖dense) per layer and head, one layer at a time (a long text's layers are
    recomputed at full resolution one by one, so memory stays bounded), yielding each finished layer; the metrics
    are set once every layer is done."""
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
    if not res.sparse.store.retain:
        release_free_memory()
    m = res.metrics
    m.mass_recall_min, m.mass_recall_p5 = M.summarise_rows(recall_rows)
    m.mass_recall_per_head = recall_heads
    m.kl_per_head = kl_heads
    m.kl = [float(np.mean(h)) for h in kl_heads]
    m.mass_recall = [float(np.mean(h)) for h in recall_heads]  # set last: it marks the stage as filled


def iter_per_layer(
    model: PreTrainedModel,
    mask: Mask,
    dense: PassResult,
    sparse: PassResult,
    dense_ppl: float,
    seed: int = 0,
) -> Iterator[tuple[str, int, float]]:
    """Yield ``("isolated", l, ΔPPL)`` with the mask at layer l only, for every l, then ``("cumulative", l, ΔPPL)``
    with the mask at layers 0..l. One replayed pass each, so a caller can show progress or stop early.

    Rows where no mask dropped anything are not computed again (``replay_nll``'s prefix): for the cumulative curve
    the sparse pass says which rows those are; for the isolated one, when the pattern decides by position alone
    which rows lose a pair (static patterns, top-k, DSA), so that the sparse pass's layer l says it too."""
    n_layers = num_layers(model)
    n = dense.ids.shape[1]
    by_position = (not mask.score_dependent or mask.drops_by_position) and mask.row_local
    for layer in range(n_layers):
        first = sparse.first_changed.get(layer, n) if by_position else 0
        nll = replay_nll(model, dense, mask, frozenset({layer}), layer, dense.layer_outputs, seed, prefix=first)
        yield "isolated", layer, M.perplexity(nll) - dense_ppl
    for layer in range(n_layers):
        if layer == n_layers - 1 and sparse.nll is not None:  # the mask on every layer: the sparse pass itself
            yield "cumulative", layer, M.perplexity(sparse.nll) - dense_ppl
            continue
        first = min((row for masked, row in sparse.first_changed.items() if masked <= layer), default=n)
        nll = replay_nll(model, dense, mask, frozenset(), layer + 1, sparse.layer_outputs, seed, prefix=first)
        yield "cumulative", layer, M.perplexity(nll) - dense_ppl


def per_layer_curves(
    metrics: M.Metrics,
    model: PreTrainedModel,
    mask: Mask,
    dense: PassResult,
    sparse: PassResult,
) -> None:
    """Fill ``per_layer_delta_ppl`` and ``cumulative_delta_ppl`` of ``metrics``."""
    assert metrics.dense_ppl is not None
    if layer_stack(model) is None:
        metrics.notes.append("per-layer curves computed without replay (block list not found): L full passes")
    curves: dict[str, list[float]] = {"isolated": [], "cumulative": []}
    for kind, _, value in iter_per_layer(model, mask, dense, sparse, metrics.dense_ppl, sparse.seed):
        curves[kind].append(value)
    metrics.per_layer_delta_ppl = curves["isolated"]
    metrics.cumulative_delta_ppl = curves["cumulative"]


# ------------------------------------------------------------------------------------------------------- input
def encode(
    tok: PreTrainedTokenizerBase, text: Any, model: PreTrainedModel, max_tokens: int | None
) -> tuple[Tensor, int]:
    """Token ids ``[1, T]`` on the model's device (cut to ``max_tokens``) and the text's full length in tokens,
    with clear errors for unusable text."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty (or only whitespace): pass at least one word, e.g. text='The cat sat.'")
    if "\x00" in text:
        raise ValueError("text contains a NUL character (\\x00); remove it (text.replace('\\x00', ''))")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone half of a surrogate pair (a broken emoji, from JSON or a browser)
        raise ValueError(
            f"text contains an unpaired surrogate {text[err.start]!r} at character {err.start}, which is not valid "
            f"Unicode; remove it (e.g. text.encode('utf-8', 'ignore').decode())"
        ) from None
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    ids = tok(text, return_tensors="pt").input_ids
    full_length = ids.shape[1]
    limit = max_positions(model)
    if max_tokens is not None:
        ids = ids[:, :max_tokens]
    if limit is not None and ids.shape[1] > limit:
        raise ValueError(
            f"text is {ids.shape[1]} tokens but {type(model).__name__} has {limit} positions; shorten it or pass "
            f"max_tokens={limit} to truncate"
        )
    if ids.shape[1] == 0:
        raise ValueError("text produced no tokens; pass some words")
    return ids.to(input_device(model)), full_length


def max_positions(model: PreTrainedModel) -> int | None:
    config = text_config(model)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _is_causal(model: PreTrainedModel) -> bool:
    """Whether the model's self-attention is causal, read from its attention modules' ``is_causal``."""
    stack = layer_stack(model)
    for module in (stack or model).modules():
        flag = getattr(module, "is_causal", None)
        if isinstance(flag, bool) and not isinstance(module, PreTrainedModel):
            return flag
    return model.__class__.__name__.endswith(("ForCausalLM", "LMHeadModel"))


def _eos_ids(tok: PreTrainedTokenizerBase, model: PreTrainedModel) -> set[int]:
    ids = set()
    for value in (tok.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def readable_tokens(decode: Callable[[list[int]], str], ids: list[int]) -> list[str]:
    """Each token as the text it adds. Byte-level tokenizers split a character of several bytes (an emoji, most
    CJK) over tokens that decode to U+FFFD one by one; such a run is decoded together, the characters go to the
    token that completes them, and the tokens before it get "" (shown as ∅). So ``"".join(tokens)`` is the text."""
    out = [decode([i]) for i in ids]
    n, k = len(ids), 0
    while k < n:
        if "\ufffd" not in out[k]:
            k += 1
            continue
        end = k + 1
        while end < n and decode(ids[k:end]).endswith("\ufffd") and end - k < 16:  # until the bytes complete
            end += 1
        done = ""
        for m in range(k, end):
            text = decode(ids[k : m + 1])
            stable = text.rstrip("\ufffd") if m < end - 1 else text
            if not stable.startswith(done):  # the tokenizer does not decode prefix by prefix: keep it as it was
                break
            out[m], done = stable[len(done) :], stable
        k = end
    return out


def _decoder(tok: PreTrainedTokenizerBase) -> Callable[[list[int]], str]:
    def decode(ids: list[int]) -> str:
        text = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert isinstance(text, str)  # one id list decodes to one string (a batch would give a list)
        return text

    return decode
