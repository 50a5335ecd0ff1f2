"""The dense-pass cache (a mask change re-runs only the sparse pass) and handing freed memory back to the
operating system."""

from __future__ import annotations

import ctypes
import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel

from .passes import PassResult

Tensor = torch.Tensor
DENSE_CACHE_BYTES = 768 * 2**20  # the cached dense passes together (the most recent one is always kept)


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
