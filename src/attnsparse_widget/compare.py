"""``compare(model, text, mask)``: run a model dense and sparse, and measure what the mask did.

One call runs (1) the dense pass, cached per (model, text), (2) the sparse pass with the mask on every layer,
(3) optionally the per-layer curves, and (4) greedy continuations under each regime. Every pass goes through the
single capture path in :mod:`attnsparse_widget.capture`.

Per-layer curves reuse the recorded block outputs instead of recomputing them: "mask only at layer l" replays the
dense outputs of blocks 0..l-1 and computes from block l; "mask at layers 0..l" replays the sparse pass's blocks
0..l and runs the rest dense. Both together cost about L forward passes instead of 2L.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import masks as mask_library
from . import metrics as M
from .capture import (
    LayerOutputs,
    Plan,
    attention_active,
    capture_layer_outputs,
    check_supported,
    layer_indexer,
    layer_stack,
    num_layers,
    start_at_layer,
    text_config,
    unsupported,
)
from .masks import Mask
from .models import display_name, resolve_model
from .store import AttentionStore

Tensor = torch.Tensor
DEFAULT_SPARSITY = 0.5
DENSE_CACHE_SIZE = 4


# ------------------------------------------------------------------------------------------------------- passes
@dataclass
class PassResult:
    """What one captured forward pass leaves behind (batch of one)."""

    store: AttentionStore
    output: Tensor  # logits [T, V] for language models, last hidden state [T, D] for encoders
    layer_outputs: LayerOutputs
    continuation: list[int] = field(default_factory=list)


def _forward(model: PreTrainedModel, ids: Tensor, plan: Plan, use_cache: bool = False) -> Any:
    out = model(input_ids=ids, use_cache=use_cache)
    if plan.calls == 0:
        raise unsupported(model, "no attention call went through the registered attention function")
    return out


def _main_output(out: Any) -> Tensor:
    value = getattr(out, "logits", None)
    if value is None:
        value = out.last_hidden_state
    return value[0].float()


def captured_pass(
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask | None,
    *,
    seed: int,
    continuation_tokens: int,
    eos: set[int],
    is_lm: bool,
) -> PassResult:
    """One forward pass with capture (and its greedy continuation for language models)."""
    n_layers = num_layers(model)
    store = AttentionStore(n_layers, text_config(model).num_attention_heads, ids.shape[1])
    plan = Plan(layer_of=layer_indexer(model), mask=mask, recorder=store, seed=seed)
    outputs = LayerOutputs()
    decode_with_cache = is_lm and (mask is None or mask.row_local)
    with torch.inference_mode(), attention_active(model, plan), capture_layer_outputs(model, outputs):
        out = _forward(model, ids, plan, use_cache=decode_with_cache)
    if not store.complete:
        missing = [i for i, p in enumerate(store.probs) if p is None]
        raise unsupported(model, f"layers {missing} did not call the attention function")
    result = PassResult(store=store, output=_main_output(out), layer_outputs=outputs)
    if is_lm and continuation_tokens > 0:
        plan.recorder = None
        cache = out.past_key_values if decode_with_cache else None
        with torch.inference_mode(), attention_active(model, plan):
            result.continuation = _greedy(model, ids, out.logits, cache, plan, continuation_tokens, eos)
    return result


def _greedy(
    model: PreTrainedModel,
    ids: Tensor,
    logits: Tensor,
    cache: Any,
    plan: Plan,
    n: int,
    eos: set[int],
) -> list[int]:
    """Greedy decoding of ``n`` tokens. With a KV cache for row-local masks (a row's mask depends on that row only,
    so cached decoding equals recomputing the full mask); by full recomputation for the others (H2O,
    vertical-slash, block top-k), whose earlier rows depend on later queries or on history."""
    new: list[int] = []
    seq = ids
    for _ in range(n):
        token = int(logits[0, -1].argmax())
        new.append(token)
        if token in eos:
            break
        step = torch.tensor([[token]], device=ids.device)
        seq = torch.cat([seq, step], dim=1)
        if cache is not None:
            out = model(input_ids=step, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
        else:
            out = model(input_ids=seq, use_cache=False)
        logits = out.logits
    return new


def replay_nll(
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask | None,
    sparse_layers: frozenset[int],
    start: int,
    outputs: LayerOutputs,
    seed: int,
) -> Tensor:
    """Per-token NLL of a pass whose blocks ``0..start-1`` replay ``outputs`` and whose ``sparse_layers`` use
    ``mask`` (the rest dense)."""
    plan = Plan(layer_of=layer_indexer(model), mask=mask, sparse_layers=sparse_layers, seed=seed)
    with torch.inference_mode(), attention_active(model, plan), start_at_layer(model, start, outputs):
        out = model(input_ids=ids, use_cache=False)
    return M.token_nll(out.logits[0], ids[0])


# --------------------------------------------------------------------------------------------------- dense cache
class DenseCache:
    """The last few dense passes, keyed by model identity, weights version and token ids."""

    def __init__(self, size: int = DENSE_CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[weakref.ref[PreTrainedModel], PassResult]] = OrderedDict()

    @staticmethod
    def key(model: PreTrainedModel, ids: Tensor, continuation_tokens: int) -> tuple[Any, ...]:
        version = sum(p._version for p in model.parameters())
        return (id(model), version, str(model.dtype), str(ids.device), tuple(ids[0].tolist()), continuation_tokens)

    def get(self, key: tuple[Any, ...], model: PreTrainedModel) -> PassResult | None:
        entry = self._entries.get(key)
        if entry is None or entry[0]() is not model:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[Any, ...], model: PreTrainedModel, result: PassResult) -> None:
        self._entries[key] = (weakref.ref(model), result)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


DENSE_CACHE = DenseCache()


def clear_cache() -> None:
    """Forget cached dense passes (they are also dropped when their model is garbage-collected)."""
    DENSE_CACHE.clear()


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
    _decode: Callable[[list[int]], str] = field(repr=False, default=lambda ids: "")

    def attention(self, layer: int, which: str = "dense") -> np.ndarray:
        """Post-softmax attention of ``layer`` as float32 ``[heads, T, T]``; ``which`` is "dense" or "sparse"."""
        self._check_layer(layer)
        if which not in ("dense", "sparse"):
            raise ValueError(f"which must be 'dense' or 'sparse', got {which!r}")
        store = self.dense.store if which == "dense" else self.sparse.store
        probs = store.probs[layer]
        assert probs is not None
        return probs[0].float().numpy()

    def keep_mask(self, layer: int) -> np.ndarray:
        """The keep-mask the sparse pass applied at ``layer``, bool ``[heads, T, T]`` (within the model's mask)."""
        self._check_layer(layer)
        keep = self.sparse.store.keep[layer]
        allowed = self.sparse.store.allowed[layer]
        assert allowed is not None
        if keep is None:  # the dense pattern: everything the model allows
            keep = allowed
        return keep[0].expand(self.n_heads, -1, -1).numpy().copy()

    def allowed_mask(self, layer: int) -> np.ndarray:
        """The model's own allowed pairs at ``layer`` (causal, padding, its own sliding window), bool ``[T, T]``."""
        self._check_layer(layer)
        allowed = self.sparse.store.allowed[layer]
        assert allowed is not None
        return allowed[0, 0].numpy().copy()

    def _check_layer(self, layer: int) -> None:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < self.n_layers:
            raise ValueError(f"layer must be an int in [0, {self.n_layers - 1}], got {layer!r}")

    def next_token_top(self, position: int = -1, k: int = 5) -> dict[str, list[tuple[str, float]]]:
        """Top-``k`` next tokens after ``position`` under each regime, as (token, probability) pairs."""
        if not self.causal or self.metrics.dense_ppl is None:
            raise ValueError("next-token distributions exist only for causal language models")
        out = {}
        for name, result in (("dense", self.dense), ("sparse", self.sparse)):
            probs = torch.softmax(result.output[position], dim=-1)
            top = probs.topk(k)
            out[name] = [(self._decode([int(i)]), float(p)) for p, i in zip(top.values, top.indices)]
        return out

    def export_gif(self, path: Any, view: str = "side_by_side", head: int | None = None, layers: Any = None,
                   duration_ms: int = 700, size: tuple[int, int] | None = None) -> Any:
        """Write an animated GIF stepping through the layers (see :func:`attnsparse_widget.export.export_gif`);
        returns a report with the path, the frame count and the seconds it took."""
        from .export import export_gif

        return export_gif(self, path, view=view, head=head, layers=layers, duration_ms=duration_ms, size=size)

    def export_png(self, path: Any, layer: int = 0, head: int | None = None, view: str = "side_by_side") -> Any:
        """Write a PNG of one layer's view (see :func:`attnsparse_widget.export.export_png`)."""
        from .export import export_png

        return export_png(self, path, layer=layer, head=head, view=view)

    def to_html(self, path: Any = None, head: int | None = None) -> str:
        """A self-contained offline HTML page of this comparison (see :func:`attnsparse_widget.export.to_html`)."""
        from .export import to_html

        return to_html(self, path, head=head)

    def summary(self) -> str:
        """A readable table of the headline metrics and the continuations."""
        from .report import summary_table

        return summary_table(self)


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
    model, tok = resolve_model(model, tokenizer)
    check_supported(model)
    ids = encode(tok, text, model, max_tokens)
    n_tokens = ids.shape[1]
    config = text_config(model)
    is_lm = getattr(model, "get_output_embeddings", lambda: None)() is not None and _is_causal(model)
    causal = _is_causal(model)
    cls = mask_library.get(mask, **mask_params) if not isinstance(mask, Mask) else mask
    if not causal and not cls.supports_encoder:
        raise ValueError(f"mask {cls.id!r} is a decoding-time idea and needs a causal model; "
                         f"{type(model).__name__} is an encoder")
    requested = sparsity
    if requested is None and not (cls.budget is not None and cls.budget in mask_params) and not isinstance(mask, Mask):
        requested = DEFAULT_SPARSITY
    resolved = mask_library.resolve(mask, n_tokens, requested, causal, **mask_params)
    eos = _eos_ids(tok, model)

    key = DenseCache.key(model, ids, continuation_tokens)
    dense = DENSE_CACHE.get(key, model)
    if dense is None:
        dense = captured_pass(model, ids, None, seed=seed, continuation_tokens=continuation_tokens, eos=eos,
                              is_lm=is_lm)
        DENSE_CACHE.put(key, model, dense)
    sparse = captured_pass(model, ids, resolved, seed=seed, continuation_tokens=continuation_tokens, eos=eos,
                           is_lm=is_lm)

    metrics = attention_metrics(dense.store, sparse.store, requested)
    metrics.output_relative_error = float(
        (sparse.output - dense.output).norm() / dense.output.norm().clamp_min(1e-30)
    )
    if dense.store.dtype == torch.float16:
        metrics.notes.append("attention maps stored in float16 at this length: recall/KL carry ~5e-4 relative error")
    if is_lm:
        output_metrics(metrics, dense.output, sparse.output, ids[0])
        if per_layer:
            per_layer_curves(metrics, model, ids, resolved, dense, sparse, seed)
    decode = _decoder(tok)
    continuations = {}
    if is_lm and continuation_tokens > 0:
        continuations = {"dense": decode(dense.continuation), "sparse": decode(sparse.continuation)}
    return Comparison(
        model_name=display_name(model),
        text=text or "",
        token_ids=ids[0].tolist(),
        tokens=[decode([i]) for i in ids[0].tolist()],
        mask=resolved,
        causal=causal,
        metrics=metrics,
        continuations=continuations,
        dense=dense,
        sparse=sparse,
        n_layers=num_layers(model),
        n_heads=config.num_attention_heads,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        _decode=decode,
    )


def attention_metrics(dense: AttentionStore, sparse: AttentionStore, requested: float | None) -> M.Metrics:
    """Recall, KL and achieved sparsity per layer and head, from the two stores."""
    recall_rows, recall_heads, kl_heads, sparsity_heads = [], [], [], []
    kept_total, allowed_total = 0, 0
    for layer in range(len(dense.probs)):
        p, q, allowed = dense.probs[layer], sparse.probs[layer], sparse.allowed[layer]
        assert p is not None and q is not None and allowed is not None
        keep = sparse.keep[layer]
        keep = allowed if keep is None else keep
        rows = allowed[0, 0].any(-1)  # queries the model lets attend anywhere
        recall = M.mass_recall(p[0], keep[0])[:, rows]
        kl = M.row_kl(q[0], p[0])[:, rows]
        heads = p.shape[1]
        per_head = M.achieved_sparsity(keep[0], allowed[0, 0]).expand(heads)
        recall_rows.append(recall)
        recall_heads.append(recall.mean(-1).tolist())
        kl_heads.append(kl.mean(-1).tolist())
        sparsity_heads.append(per_head.tolist())
        kept_total += int((keep[0] & allowed[0, 0]).sum()) * (heads // keep.shape[1])
        allowed_total += int(allowed[0, 0].sum()) * heads
    rmin, r5 = M.summarise_rows(recall_rows)
    return M.Metrics(
        requested_sparsity=requested,
        achieved_sparsity=1.0 - kept_total / max(1, allowed_total),
        achieved_sparsity_per_head=sparsity_heads,
        mass_recall=[float(np.mean(h)) for h in recall_heads],
        mass_recall_per_head=recall_heads,
        mass_recall_min=rmin,
        mass_recall_p5=r5,
        kl=[float(np.mean(h)) for h in kl_heads],
        kl_per_head=kl_heads,
        output_relative_error=0.0,
    )


def output_metrics(metrics: M.Metrics, dense_logits: Tensor, sparse_logits: Tensor, ids: Tensor) -> None:
    dense_nll = M.token_nll(dense_logits, ids.cpu() if dense_logits.device.type == "cpu" else ids)
    sparse_nll = M.token_nll(sparse_logits, ids.to(sparse_logits.device))
    metrics.dense_ppl = M.perplexity(dense_nll)
    metrics.sparse_ppl = M.perplexity(sparse_nll)
    metrics.delta_ppl = metrics.sparse_ppl - metrics.dense_ppl
    metrics.delta_nll = float(sparse_nll.mean() - dense_nll.mean()) if dense_nll.numel() else float("nan")
    metrics.next_token_kl = float(M.next_token_kl(dense_logits, sparse_logits).mean())
    metrics.top1_agreement = M.top1_agreement(dense_logits, sparse_logits)
    if ids.numel() < 2:
        metrics.notes.append("a one-token text has no next token to score: perplexity is undefined (nan)")


def iter_per_layer(
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask,
    dense: PassResult,
    sparse: PassResult,
    dense_ppl: float,
    seed: int = 0,
) -> Iterator[tuple[str, int, float]]:
    """Yield ``("isolated", l, ΔPPL)`` with the mask at layer l only, for every l, then ``("cumulative", l, ΔPPL)``
    with the mask at layers 0..l. One replayed pass each, so a caller can show progress or stop early."""
    n_layers = num_layers(model)
    for layer in range(n_layers):
        nll = replay_nll(model, ids, mask, frozenset({layer}), layer, dense.layer_outputs, seed)
        yield "isolated", layer, M.perplexity(nll) - dense_ppl
    for layer in range(n_layers):
        nll = replay_nll(model, ids, mask, frozenset(), layer + 1, sparse.layer_outputs, seed)
        yield "cumulative", layer, M.perplexity(nll) - dense_ppl


def per_layer_curves(
    metrics: M.Metrics,
    model: PreTrainedModel,
    ids: Tensor,
    mask: Mask,
    dense: PassResult,
    sparse: PassResult,
    seed: int,
) -> None:
    """Fill ``per_layer_delta_ppl`` and ``cumulative_delta_ppl`` of ``metrics``."""
    assert metrics.dense_ppl is not None
    if layer_stack(model) is None:
        metrics.notes.append("per-layer curves computed without replay (block list not found): L full passes")
    curves: dict[str, list[float]] = {"isolated": [], "cumulative": []}
    for kind, _, value in iter_per_layer(model, ids, mask, dense, sparse, metrics.dense_ppl, seed):
        curves[kind].append(value)
    metrics.per_layer_delta_ppl = curves["isolated"]
    metrics.cumulative_delta_ppl = curves["cumulative"]


# ------------------------------------------------------------------------------------------------------- input
def encode(tok: PreTrainedTokenizerBase, text: Any, model: PreTrainedModel, max_tokens: int | None) -> Tensor:
    """Token ids ``[1, T]`` on the model's device, with clear errors for unusable text."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty (or only whitespace): pass at least one word, e.g. text='The cat sat.'")
    if "\x00" in text:
        raise ValueError("text contains a NUL character (\\x00); remove it (text.replace('\\x00', ''))")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    ids = tok(text, return_tensors="pt").input_ids
    limit = _max_positions(model)
    if max_tokens is not None:
        ids = ids[:, :max_tokens]
    if limit is not None and ids.shape[1] > limit:
        raise ValueError(
            f"text is {ids.shape[1]} tokens but {type(model).__name__} has {limit} positions; shorten it or pass "
            f"max_tokens={limit} to truncate"
        )
    if ids.shape[1] == 0:
        raise ValueError("text produced no tokens; pass some words")
    device = next(model.parameters()).device
    return ids.to(device)


def _max_positions(model: PreTrainedModel) -> int | None:
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


def _decoder(tok: PreTrainedTokenizerBase) -> Callable[[list[int]], str]:
    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return decode
