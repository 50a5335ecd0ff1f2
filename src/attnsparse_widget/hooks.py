"""Hooks on a model that leave no trace: switching its attention implementation for a block (and back), the lock
that serialises switched passes of one model, recording every block's output, and replaying recorded outputs so a
pass starts at any layer. Everything set inside a block is restored on exit, also when the body raises."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .introspect import layer_stack

Tensor = torch.Tensor


def _configs(model: nn.Module) -> list[Any]:
    """Every config object whose attention implementation a switch may change."""
    seen: dict[int, Any] = {}
    pending = [m.config for m in model.modules() if isinstance(m, PreTrainedModel)]
    while pending:
        config = pending.pop()
        if id(config) in seen:
            continue
        seen[id(config)] = config
        for key in getattr(config, "sub_configs", {}) or {}:
            sub = getattr(config, key, None)
            if sub is not None:
                pending.append(sub)
    return list(seen.values())


_model_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock that serialises switched passes of one model: two widgets (threads) on the same model must not
    switch its attention implementation under each other's feet."""
    with _locks_guard:
        lock = _model_locks.get(model)
        if lock is None:
            lock = _model_locks[model] = threading.RLock()
        return lock


@dataclass
class LayerOutputs:
    """Outputs of the transformer blocks of one forward pass, to restart later passes from any block.

    A block whose output was not kept (:func:`capture_layer_outputs`' ``every``) has None: a pass that starts at
    block l first computes blocks c+1 … l−1 again from the nearest kept output c, each by the route the recorded
    pass took (``recompute``, set by the pass: :func:`~attnsparse_widget.capture.replays.outputs_before`)."""

    outputs: list[Any] = field(default_factory=list)
    # how to compute a skipped block again exactly (a :class:`~attnsparse_widget.capture.plan.Recomputation`, set
    # by the pass that recorded these outputs; typed loosely here: this module sits below the capture layer)
    recompute: Any = None
    # the skipped block output computed again last, (block, output): a sweep over the layers in order computes
    # each skipped block once. A cache, replaced whole (one assignment): any reader sees a valid entry or none
    recent: tuple[int, Any] | None = field(default=None, repr=False, compare=False)

    def nearest(self, block: int) -> tuple[int, Any]:
        """The output at hand nearest before or at ``block``, kept or recent: (its block, the output); (−1, None)
        when there is none (a pass starts at the embeddings)."""
        kept = next((i for i in range(block, -1, -1) if self.outputs[i] is not None), -1)
        recent = self.recent
        if recent is not None and kept < recent[0] <= block:
            return recent
        return kept, None if kept < 0 else self.outputs[kept]

    @classmethod
    def only(cls, block: int, output: Any, n_blocks: int) -> LayerOutputs:
        """Outputs holding ``block``'s alone: what a pass that starts at ``block + 1`` replays."""
        outputs: list[Any] = [None] * n_blocks
        outputs[block] = output
        return cls(outputs=outputs)


@contextlib.contextmanager
def capture_layer_outputs(model: nn.Module, into: LayerOutputs, every: int = 1) -> Iterator[LayerOutputs]:
    """Record the output (as returned) of every ``every``-th block (blocks ``every − 1``, ``2·every − 1``, …) during
    the passes inside the block.

    Hidden states are copied into one slab for all kept blocks (``[L / every, B, T, D]``, allocated at the first
    one): kept for as long as the result lives, they would otherwise pin scattered pieces of the heap that the
    pass's large temporaries were allocated around, and the process would keep that memory."""
    stack = layer_stack(model)
    if stack is None:
        yield into
        return
    into.outputs = [None] * len(stack)
    handles = []
    slab: list[Tensor] = []
    n_kept = len(stack) // every

    def kept(i: int, hidden: Tensor) -> Tensor:
        if not slab or slab[0].shape[1:] != hidden.shape or slab[0].dtype != hidden.dtype:
            slab[:] = [torch.empty((n_kept, *hidden.shape), dtype=hidden.dtype, device=hidden.device)]
        return slab[0][i // every].copy_(hidden)

    def hook_for(i: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            if isinstance(output, Tensor):
                into.outputs[i] = kept(i, output)
            elif isinstance(output, tuple) and output and isinstance(output[0], Tensor):
                into.outputs[i] = (kept(i, output[0]), *output[1:])
            else:
                into.outputs[i] = output

        return hook

    try:
        for i, block in enumerate(stack):
            if i % every == every - 1:
                handles.append(block.register_forward_hook(hook_for(i)))
        yield into
    finally:
        for h in handles:
            h.remove()


class BlockOutput(Exception):
    """Raised by :func:`stop_after` with the output of the block it waited for."""

    def __init__(self, output: Any) -> None:
        super().__init__("block output reached")
        self.output = output


@contextlib.contextmanager
def stop_after(model: nn.Module, layer: int) -> Iterator[None]:
    """Passes inside the block stop right after block ``layer``, raising :class:`BlockOutput` with its output."""
    stack = layer_stack(model)
    assert stack is not None

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        raise BlockOutput(output)

    handle = stack[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


_NO_OVERRIDE = object()


@contextlib.contextmanager
def replaced_forward(module: nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    """``module.forward`` is ``forward`` inside the block. A forward already set on the instance (accelerate's
    offloading and device-map hooks put theirs there) is put back afterwards, not deleted."""
    previous = module.__dict__.get("forward", _NO_OVERRIDE)
    module.forward = forward
    try:
        yield
    finally:
        if previous is _NO_OVERRIDE:
            del module.forward
        else:
            module.forward = previous


@contextlib.contextmanager
def start_at_layer(model: nn.Module, layer: int, outputs: LayerOutputs) -> Iterator[None]:
    """Skip blocks ``0 .. layer-1``: each returns block ``layer-1``'s recorded output (only the last one's reaches a
    block that computes), so the pass starts computing at ``layer``.

    Exact when the recorded output came from a pass with the same inputs and the same masks on those blocks.
    """
    stack = layer_stack(model)
    if stack is None or layer == 0:
        yield
        return
    recorded = outputs.outputs[layer - 1]
    assert recorded is not None, f"block {layer - 1}'s output was not kept: compute it first (outputs_before)"
    with contextlib.ExitStack() as replaced:
        for i in range(layer):
            replaced.enter_context(replaced_forward(stack[i], lambda *a, **k: recorded))
        yield


@contextlib.contextmanager
def switched_to(model: PreTrainedModel, implementation: str) -> Iterator[None]:
    """``model`` runs the registered attention ``implementation``, in eval mode, inside the block; every config's
    attention implementation and every module's train/eval mode are restored on exit. The caller holds
    :func:`model_lock`."""
    saved_impl = [(c, c.__dict__.get("_attn_implementation_internal")) for c in _configs(model)]
    saved_modes = [(m, m.training) for m in model.modules()]
    try:
        model.set_attn_implementation(implementation)
        model.eval()
        yield
    finally:
        for config, impl in saved_impl:
            config._attn_implementation_internal = impl
        for module, mode in saved_modes:
            module.training = mode
