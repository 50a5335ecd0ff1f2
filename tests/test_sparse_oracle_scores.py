"""Score-dependent masks against a plain reference written here.

The reference is a separate attention function, registered through transformers' own interface: eager math, then
the keep-set chosen by the per-row loops of tests/reference_masks.py from the layer's logits, then the mask and
softmax.
Our engine (capture/ + masks/) must produce the same attention and logits on the real default model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import reference_masks
import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

from attnsparse_widget import masks
from attnsparse_widget.capture import Plan, attention_active
from attnsparse_widget.introspect import layer_indexer, num_layers
from attnsparse_widget.store import AttentionStore

pytestmark = pytest.mark.model

MIN = torch.finfo(torch.float32).min
TEXT = "Each query keeps only its best keys; the reference picks them with plain loops over rows and heads."
SCORE_MASKS = [m for m, cls in masks.REGISTRY.items() if cls.score_dependent]
GROUPS = 3  # SmolLM2: 9 query heads share 3 key/value heads (NSA selects once per group)


def reference_attention(mask) -> Callable:
    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        n_rep = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(n_rep, dim=1)
        value = value.repeat_interleave(n_rep, dim=1)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling + attention_mask
        allowed = attention_mask[0, 0] > MIN / 2
        logits = np.where(allowed.numpy(), scores[0].float().numpy(), -np.inf)
        keep = torch.from_numpy(reference_masks.for_mask(mask, logits.shape[-1], logits, groups=GROUPS))[None]
        scores = scores.masked_fill(~keep & allowed, MIN)
        probs = torch.softmax(scores.float(), dim=-1)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

    return attention


def reference_run(model, ids, mask):
    """The model run through :func:`reference_attention` (registered under its own name), attentions returned."""
    name = f"reference_{mask.id}"
    AttentionInterface.register(name, reference_attention(mask))
    AttentionMaskInterface.register(name, eager_mask)
    before = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        with torch.no_grad():
            return model(input_ids=ids, output_attentions=True)
    finally:
        model.set_attn_implementation(before)


@pytest.mark.parametrize("mask_id", SCORE_MASKS)
def test_score_dependent_mask_equals_reference(default_model, mask_id):
    model, tok = default_model
    ids = tok(TEXT, return_tensors="pt").input_ids
    mask = masks.resolve(mask_id, ids.shape[1], 0.5)

    store = AttentionStore(num_layers(model), 9, ids.shape[1])
    with torch.no_grad(), attention_active(model, Plan(layer_of=layer_indexer(model), mask=mask, recorder=store)):
        ours = model(input_ids=ids).logits

    out = reference_run(model, ids, mask)
    for layer in range(num_layers(model)):
        assert float((store.probs[layer] - out.attentions[layer]).abs().max()) <= 1e-5, layer
    assert float((ours - out.logits).abs().max()) <= 1e-4
