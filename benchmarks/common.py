"""Shared helpers of the benchmarks: the default model, texts of an exact token length, timing."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

import attnsparse_widget as aw
from attnsparse_widget import masks
from attnsparse_widget.capture import Plan, attention_active
from attnsparse_widget.introspect import input_device, layer_indexer

LENGTHS = (128, 512, 2048)


def default_model() -> tuple[Any, Any]:
    torch.set_grad_enabled(False)
    return aw.load_model()


def text_of(tok: Any, n_tokens: int) -> str:
    """A text of exactly ``n_tokens`` tokens for ``tok`` (:func:`attnsparse_widget.long_text`)."""
    return aw.long_text(tok, n_tokens)


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``fn`` (on a CUDA machine, the device synchronised before and after)."""
    _synchronize()
    start = time.perf_counter()
    fn()
    _synchronize()
    return time.perf_counter() - start


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    return statistics.median(seconds(fn) for _ in range(repeat))


def in_a_thread(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run in a new thread, as the widget computes. Once the main thread has run PyTorch (loading the model,
    any cell), PyTorch runs ~25 % slower in another thread on small inputs here (OpenMP), so a floor measured in
    the main thread would flatter nothing but the environment."""

    def run() -> object:
        out: list[object] = []
        worker = threading.Thread(target=lambda: out.append(fn()))
        worker.start()
        worker.join()
        return out[0] if out else None

    return run


def ids_of(model: Any, tok: Any, text: str) -> torch.Tensor:
    """The token ids of ``text``, ``[1, T]``, on the model's device."""
    return tok(text, return_tensors="pt").input_ids.to(input_device(model))


def bare_forward(model: Any, tok: Any, text: str, mask: str, sparsity: float) -> Callable[[], object]:
    """One forward pass with the attention implementation swapped to attnsparse's and the sparse mask on every
    layer, capturing nothing: the floor under any update of the widget. Through the eager masked attention, as a
    captured pass computes it (the fast kernels of kernels.py give no probabilities to show)."""
    ids = ids_of(model, tok, text)
    resolved = masks.resolve(mask, ids.shape[1], sparsity, True)
    plan = Plan(layer_of=layer_indexer(model), mask=resolved, kernel="eager")

    def run() -> object:
        with torch.inference_mode(), attention_active(model, plan):
            return model(input_ids=ids, use_cache=False)

    return run


def plain_forward(model: Any, tok: Any, text: str) -> Callable[[], object]:
    """One forward pass of the model as it is (its own attention implementation)."""
    ids = ids_of(model, tok, text)

    def run() -> object:
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False)

    return run


def fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:.1f} GB"
