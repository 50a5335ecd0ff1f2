"""The one capture path: an attention function registered with transformers' ``AttentionInterface``.

``attention_forward`` is the eager attention of transformers (``q·kᵀ·scaling``, soft-capping, the model's additive
mask, float32 softmax, ``·v``) with two additions: it applies the active sparse mask *after QKᵀ and before the
softmax*, and it hands the post-softmax probabilities (float32) and the keep-mask to a :class:`Recorder`. A dense
pass can also keep every layer's queries and keys (:class:`QueryKeys`); a sparse pass given them hands the recorder,
with its own probabilities, the dense pass's probabilities of the same layer, rebuilt head by head by the same
operations: the attention metrics are measured while a layer's probabilities are in memory, with no replay.

It is registered together with ``sdpa_mask`` under the same name in ``AttentionMaskInterface``: without a mask
function transformers silently passes no mask at all (stack.md §5.4). ``sdpa_mask`` gives the model's own causal /
padding / sliding-window mask as a boolean mask, or None where plain causality (or, for an encoder, nothing) says
it all; the attention function reads it as the allowed pairs (``allowed_from``) and gives the others ``finfo.min``,
as eager's additive float mask does (bit for bit; its ``[T, T]`` float copy, 268 MB at 8192 tokens, is never
made).

A model is switched to it only inside :func:`attention_active`, which restores the model's own implementation,
its train/eval mode and every hook on exit, also when the body raises (KeyboardInterrupt included).

The pieces, each in its module: :mod:`.plan` (what a pass asks, :class:`Plan`; what receives its captures,
:class:`Recorder`), :mod:`.eager` (the eager attention's operations and a call's keep-mask), :mod:`.attention`
(the attention function, its registration, :func:`attention_active`), :mod:`.fast_path` (masked layers nobody
reads, on a kernel that skips dropped work), :mod:`.row_blocks` (long texts, one block of query rows at a time),
:mod:`.calibration` (a score-dependent budget sized per layer on real scores) and :mod:`.replays` (one layer of a
recorded pass again).
"""

from .attention import ATTN_NAME, attention_active, attention_forward, register
from .eager import allowed_from, eager_scores, repeat_kv, softmax_float32, sparse_keep
from .plan import DenseHead, Plan, QueryKeys, Recomputation, Recorder, RowBlock
from .replays import layer_attention, layer_inputs, outputs_before, record_layer
from .row_blocks import row_block

__all__ = [
    "ATTN_NAME",
    "DenseHead",
    "Plan",
    "QueryKeys",
    "Recomputation",
    "Recorder",
    "RowBlock",
    "allowed_from",
    "attention_active",
    "attention_forward",
    "eager_scores",
    "layer_attention",
    "layer_inputs",
    "outputs_before",
    "record_layer",
    "register",
    "repeat_kv",
    "row_block",
    "softmax_float32",
    "sparse_keep",
]
