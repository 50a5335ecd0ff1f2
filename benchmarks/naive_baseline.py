"""The naive baseline: what a straightforward attention viewer does on every change of the mask.

It runs the model twice with transformers' eager attention and ``output_attentions=True`` (dense, then sparse with
the keep-mask passed as a 4D additive float mask), and sends every layer and head of both to the frontend as JSON
lists of floats (bertviz-style). Here the JSON is serialised layer by layer and only its size is kept (a real tool
builds one message, which costs more memory, not less time).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch

from attnsparse_widget import masks


def naive_update(model: Any, tok: Any, text: str, mask: str, sparsity: float) -> tuple[float, int]:
    """Seconds and bytes of one naive update (the mask must be static: a plain tool has no score hook)."""
    ids = tok(text, return_tensors="pt").input_ids
    n = ids.shape[1]
    before = model.config._attn_implementation
    start = time.perf_counter()
    keep = masks.build(mask, n, sparsity=sparsity)
    additive = torch.where(torch.from_numpy(np.asarray(keep)), 0.0, torch.finfo(torch.float32).min)[None, None]
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            dense = model(input_ids=ids, output_attentions=True, use_cache=False)
            sparse = model(input_ids=ids, attention_mask=additive, output_attentions=True, use_cache=False)
        sent = 0
        for which in (dense.attentions, sparse.attentions):
            for layer in which:
                sent += len(json.dumps(layer[0].tolist()).encode())
    finally:
        model.set_attn_implementation(before)
    return time.perf_counter() - start, sent
