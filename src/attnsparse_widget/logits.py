"""Next-token logits of a recorded pass, for any positions, without keeping a ``[T, vocab]`` tensor around.

A language model's last step, ``lm_head`` (plus whatever the model class does after it: Gemma's soft-capping,
Cohere's scale), turns the final hidden states into logits: 2048 tokens x 49152 words are 400 MB of float32 per
pass. A captured pass therefore asks the model for the last position's logits only (``logits_to_keep=1``) and
records the output of its base model (the decoder stack); :func:`logits_at` later runs the model's own head on any
positions by calling the model with that base output replayed, so every model class applies its own head, exactly.

A model whose forward has no ``logits_to_keep``, or whose replayed head does not reproduce the logits it returned
(checked once per model on the pass's last position), keeps full logits instead.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .hooks import model_lock, replaced_forward

Tensor = torch.Tensor
CHUNK = 128  # positions per call of the head (25 MB of float32 logits: small enough for the heap to reuse)

_verdicts: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()


def head_can_replay(model: nn.Module) -> bool:
    """Whether ``model`` takes ``logits_to_keep`` and has a separate base model whose output can be replayed
    (the verdict of :func:`verify_replay` is cached per model)."""
    if _verdicts.get(model) is False:
        return False
    base = getattr(model, "base_model", None)
    return base is not None and base is not model and "logits_to_keep" in inspect.signature(model.forward).parameters


def _base_model(model: nn.Module) -> nn.Module:
    """``model.base_model``, the decoder stack under the head (typed: ``nn.Module`` attributes read as Any)."""
    base = model.base_model
    assert isinstance(base, nn.Module)
    return base


@contextlib.contextmanager
def record_base_output(model: nn.Module, into: dict[str, Any]) -> Iterator[None]:
    """Record the base model's output object (``into["base"]``) during the passes inside the block."""

    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        into["base"] = output

    handle = _base_model(model).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextlib.contextmanager
def replay_base(model: nn.Module, output: Any) -> Iterator[None]:
    """Inside the block, the base model returns ``output`` without computing anything (holding the model's lock:
    another thread's pass must not see the replacement)."""
    with model_lock(model), replaced_forward(_base_model(model), lambda *args, **kwargs: output):
        yield


def logits_at(model: nn.Module, ids: Tensor, base_output: Any, positions: Tensor) -> Tensor:
    """Float32 logits ``[len(positions), vocab]`` of a recorded pass, by the model's own head."""
    with torch.inference_mode(), replay_base(model, base_output):
        out = model(input_ids=ids, logits_to_keep=positions, use_cache=False)
    return out.logits[0].float()


def verify_replay(model: nn.Module, ids: Tensor, base_output: Any, last_logits: Tensor) -> bool:
    """Check (once per model) that the replayed head reproduces the logits the pass returned for its last
    position, bit for bit; remember a failure so later passes keep full logits."""
    if model in _verdicts:
        return _verdicts[model]
    try:
        again = logits_at(model, ids, base_output, torch.tensor([ids.shape[1] - 1], device=ids.device))
        ok = bool(torch.equal(again[0], last_logits.float()))
    except Exception:  # noqa: BLE001 - any model whose head cannot be replayed this way keeps full logits
        ok = False
    _verdicts[model] = ok
    return ok


def chunks(start: int, stop: int, device: torch.device | str | None = None, size: int = CHUNK) -> Iterator[Tensor]:
    """Position ranges ``[a, b)`` covering ``[start, stop)``, aligned to multiples of ``size``."""
    a = start
    while a < stop:
        b = min(stop, (a // size + 1) * size)
        yield torch.arange(a, b, device=device)
        a = b
