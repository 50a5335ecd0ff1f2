"""``compare(model, text, mask)``: run a model dense and sparse, and measure what the mask did.

The public entry point of the engine: it runs :func:`attnsparse_widget.pipeline.stages` to the end. The pieces
live in modules named for what they hold: :mod:`.tokens` (text to ids), :mod:`.passes` (one captured forward
pass), :mod:`.dense_cache`, :mod:`.measure` (the metrics), :mod:`.replay` (the per-layer curves), :mod:`.result`
(:class:`Comparison`) and :mod:`.pipeline` (the stages, in order).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from transformers import PreTrainedTokenizerBase

from .dense_cache import clear_cache
from .masks import Mask
from .pipeline import Request, stages
from .result import Comparison

if TYPE_CHECKING:
    from .adapt import Adaptation


def compare(
    model: Any = None,
    text: str | None = None,
    mask: str | Mask = "sink_window",
    sparsity: float | Literal["paper"] | None = None,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    per_layer: bool = True,
    continuation_tokens: int = 20,
    max_tokens: int | None = None,
    seed: int = 0,
    adapted: Adaptation | None = None,
    time_attention: bool = False,
    **mask_params: Any,
) -> Comparison:
    """Run ``model`` on ``text`` densely and with the sparse ``mask``, and measure the difference.

    Args:
        model: None (the embedded SmolLM2-135M-Instruct), a hub id or local path, a loaded ``PreTrainedModel``
            (pass ``tokenizer=`` or a ``(model, tokenizer)`` tuple).
        text: the input text.
        mask: a mask id (see ``masks.available()``) or a ``Mask`` instance.
        sparsity: fraction of the allowed query-key pairs to drop, in [0, 1). None: 0.5, unless the mask's budget
            parameter is given explicitly (e.g. ``window=64``). ``"paper"``: every parameter, the budget included,
            as the mask's paper ships it (DSA's k = 2048: 0.5625 at 8192 tokens); ``res.metrics.notes`` says what
            was used and ``res.metrics.achieved_sparsity`` what it dropped.
        per_layer: also compute the per-layer and cumulative perplexity curves (about L extra forward passes).
        continuation_tokens: greedy tokens to generate under each regime (0 to skip).
        max_tokens: truncate the text to this many tokens (otherwise a text longer than the model's positions
            raises).
        seed: seed of randomised patterns (BigBird).
        adapted: an :class:`~attnsparse_widget.adapt.Adaptation` of this model (:func:`~attnsparse_widget.adapt`):
            adds a third pass, the adapted model under the same mask (``res.attention(l, which="adapted")``,
            ``res.metrics.adapted_ppl``, ``res.metrics.recovered``, ``res.continuations["adapted"]``). The text
            must not be one it was trained on (ValueError).
        time_attention: also measure the attention's wall time on this machine, dense against the sparse pass's
            masks on a block-sparse kernel (``res.metrics.attention_time_dense`` / ``attention_time_sparse``,
            seconds per forward pass; see :mod:`~attnsparse_widget.kernels`). The first call at a new length
            compiles the kernel (seconds).
        **mask_params: the mask's own parameters.
    """
    request = Request(
        text=text,
        mask=mask,
        sparsity=sparsity,
        mask_params=mask_params,
        per_layer=per_layer,
        continuation_tokens=continuation_tokens,
        max_tokens=max_tokens,
        seed=seed,
        adapted=adapted,
        time_attention=time_attention,
    )
    *_, last = stages(model, request, tokenizer=tokenizer)
    return last.result


__all__ = ["Comparison", "clear_cache", "compare"]
