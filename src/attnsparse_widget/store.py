"""Where one forward pass's captured attention lives: per layer, probabilities, keep-mask and the model's allowed set.

Storage is on the CPU whatever the model's device. Probabilities are kept in float32 while the whole pass fits in
``FLOAT32_BUDGET`` bytes, else in float16 (relative error ≤ 5e-4; enough for display, and the metrics note it).
Keep-masks that are the same for every layer (static patterns) are stored once and shared.
"""

from __future__ import annotations

import torch

from .capture import Recorder

Tensor = torch.Tensor
FLOAT32_BUDGET = 600 * 2**20


class AttentionStore(Recorder):
    """Captured attention of one pass. Shapes: probs ``[B, H, Tq, Tk]``, keep ``[B, H|1, Tq, Tk]``, allowed
    ``[B, 1, Tq, Tk]`` per layer."""

    def __init__(self, n_layers: int, n_heads: int, n_tokens: int, batch: int = 1) -> None:
        n_bytes = 4 * n_layers * n_heads * n_tokens * n_tokens * batch
        self.dtype = torch.float32 if n_bytes <= FLOAT32_BUDGET else torch.float16
        self.probs: list[Tensor | None] = [None] * n_layers
        self.keep: list[Tensor | None] = [None] * n_layers
        self.allowed: list[Tensor | None] = [None] * n_layers

    def record(self, layer: int, probs: Tensor, keep: Tensor | None, allowed: Tensor) -> None:
        self.probs[layer] = probs.detach().to("cpu", self.dtype)
        self.allowed[layer] = self._shared(allowed.detach().to("cpu"), self.allowed)
        if keep is not None:
            self.keep[layer] = self._shared(keep.detach().to("cpu"), self.keep)

    @staticmethod
    def _shared(value: Tensor, seen: list[Tensor | None]) -> Tensor:
        for other in seen:
            if other is not None and other.shape == value.shape and torch.equal(other, value):
                return other
        return value

    @property
    def complete(self) -> bool:
        return all(p is not None for p in self.probs)

    def nbytes(self) -> int:
        """Bytes held, counting shared tensors once."""
        seen: dict[int, int] = {}
        for group in (self.probs, self.keep, self.allowed):
            for t in group:
                if t is not None:
                    seen[id(t)] = t.numel() * t.element_size()
        return sum(seen.values())
