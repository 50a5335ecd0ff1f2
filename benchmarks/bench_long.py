"""Long texts, up to the default model's 8192 positions: time and memory of a comparison, measured in one run.

    .venv/bin/python benchmarks/bench_long.py [--lengths 2048 8192] [--mask sink_window] [--sparsity 0.9]

At each length T, on the embedded default model (SmolLM2-135M, 30 layers x 9 heads), with a text cut from the
sample paragraphs:
  - the unit: one bare forward pass of the model as it is (its own SDPA attention, nothing captured, full logits);
  - the first ``compare(per_layer=False, continuation_tokens=0)`` (the dense pass and the sparse pass);
  - a mask change on the cached text, the same call at another sparsity (target <= 1.5 x the unit), with its split
    by stage;
  - one head's full-resolution map ``res.attention(layer, "sparse", head=0)`` and a 512 x 512 zoom region
    ``res.maps(layer, region=...)`` (recomputed exactly, a block of rows at a time);
  - peak resident memory above the loaded model during the comparisons (a thread samples it every 10 ms; target
    <= 2.5 GB).
Ratios are taken against the unit measured in the same run, right before.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

import torch
from bench_memory import PeakSampler
from common import default_model, fmt_bytes, plain_forward, seconds, text_of

import attnsparse_widget as aw
from attnsparse_widget.pipeline import Request, stages


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def one_length(run: tuple[Any, Any], n: int, mask: str, sparsity: float) -> None:
    model, tok = run
    aw.clear_cache()
    gc.collect()
    text = text_of(tok, n)
    unit = seconds(plain_forward(model, tok, text))
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with PeakSampler() as peak:
        base = peak.peak
        first = seconds(lambda: aw.compare(run, text, mask, sparsity, per_layer=False, continuation_tokens=0))
        gc.collect()  # that result is dropped: only the dense pass stays, in the cache
        spent: dict[str, float] = {}
        start = time.perf_counter()
        res = None
        request = Request(text, mask, sparsity - 0.05, per_layer=False, continuation_tokens=0)
        for progress in stages(run, request):
            now = time.perf_counter()
            spent[progress.stage] = spent.get(progress.stage, 0.0) + now - start
            start = now
            res = progress.result
        assert res is not None
        layer = res.n_layers // 2
        one_head, _ = timed(lambda: res.attention(layer, "sparse", head=0))
        q0 = n // 2
        zoom, _ = timed(lambda: res.maps(layer, region=(q0, q0 + 512, q0 - 256, q0 + 256)))
    change = sum(spent.values())
    m = res.metrics
    assert m.mass_recall is not None
    print(f"T = {n}: one bare forward {unit:.1f} s; mask {res.mask_label}, achieved {m.achieved_sparsity:.4f}")
    print(f"  first compare (dense + sparse pass) {first:.1f} s = {first / unit:.2f} x the forward")
    by_stage = ", ".join(f"{stage} {s:.1f} s" for stage, s in spent.items())
    print(f"  mask change, dense pass cached: {change:.1f} s = {change / unit:.2f} x the forward ({by_stage})")
    print(f"  one head's full map of layer {layer} ({n} x {n}): {one_head:.1f} s; a 512 x 512 zoom: {zoom:.1f} s")
    print(f"  peak resident memory above the loaded model: {fmt_bytes(peak.peak - base)}")
    if torch.cuda.is_available():
        print(f"  peak device memory, both compares: {fmt_bytes(torch.cuda.max_memory_allocated())}")
    recall = sum(m.mass_recall) / len(m.mass_recall)
    print(f"  dense ppl {m.dense_ppl:.2f}, sparse ppl {m.sparse_ppl:.2f}, mean mass recall {recall:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--mask", default="sink_window")
    parser.add_argument("--sparsity", type=float, default=0.9)
    args = parser.parse_args()
    model, tok = default_model()
    plain_forward(model, tok, "warm up")()
    for n in args.lengths:
        one_length((model, tok), n, args.mask, args.sparsity)


if __name__ == "__main__":
    main()
