"""What adapting to a mask costs and what it wins back, on the default model, measured in one run.

    .venv/bin/python benchmarks/bench_adapt.py [--steps 50 100 200] [--masks sliding_window sink_window]
                                               [--sparsity 0.8] [--timing-steps 10]

1. Seconds per training step at 128 and 256 tokens (LoRA rank 16 on every attention projection, the mask in every
   layer, the dense teacher's forward included), as a ratio to one plain forward pass at the same length, measured
   alternately in this run (median of the steps after two warm-up steps), and the 200-step projection.
2. Peak resident memory above the loaded model during training at 256 tokens (a thread samples it every 10 ms).
3. For each mask at the sparsity, trained for each step count on the model's own samples (default data) and
   evaluated on the four sample paragraphs (never trained on): dense, post-hoc and adapted perplexity (the mean
   over the paragraphs of each one's perplexity) and the recovered fraction (of the mean perplexities). Each step
   count is its own run (the learning-rate schedule depends on it). Adapters are written to a temporary cache, so
   every figure is trained in this run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from bench_memory import PeakSampler
from common import default_model, plain_forward, text_of

import attnsparse_widget as aw
from attnsparse_widget.adapt import Training, adaptation_steps


def step_seconds(model, tok, n_tokens: int, steps: int, cache_dir: str) -> tuple[float, float, float]:  # noqa: ANN001
    """(median seconds per training step, median seconds of a plain forward, peak RSS bytes above the start) for
    training on one text of exactly ``n_tokens`` tokens."""
    text = text_of(tok, n_tokens)
    forward = plain_forward(model, tok, text)
    forward()
    times, forwards = [], []
    torch.set_grad_enabled(True)
    with PeakSampler() as peak:
        start_rss = peak.peak
        last = time.perf_counter()
        training = Training(
            steps=steps + 2, texts=[text], own_data=False, max_tokens=n_tokens, cache=False, cache_dir=cache_dir
        )
        for progress in adaptation_steps((model, tok), "sliding_window", 0.8, training):
            if progress.phase != "training" or progress.done == 0 or progress.result is not None:
                last = time.perf_counter()
                continue
            now = time.perf_counter()
            if progress.done > 2:
                times.append(now - last)
                t0 = time.perf_counter()  # a plain forward between two steps: the same machine state
                with torch.inference_mode():
                    forward()
                forwards.append(time.perf_counter() - t0)
            last = time.perf_counter()
    torch.set_grad_enabled(False)
    return statistics.median(times), statistics.median(forwards), peak.peak - start_rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--masks", nargs="+", default=["sliding_window", "sink_window"])
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--timing-steps", type=int, default=10)
    parser.add_argument("--timing-only", action="store_true", help="parts 1-2 only (about two minutes)")
    args = parser.parse_args()
    model, tok = default_model()
    cache = tempfile.mkdtemp(prefix="attnsparse-bench-adapt-")
    print(f"default model, {torch.get_num_threads()} threads; adapters cached in {cache}")

    print("\n1-2. cost of one training step (LoRA r=16 on q/k/v/o, mask in every layer, teacher forward included)")
    print(f"{'tokens':>7} {'s/step':>8} {'s/forward':>10} {'ratio':>6} {'200 steps':>10} {'peak RSS':>9}")
    for n in (128, 256):
        per_step, fwd, peak = step_seconds(model, tok, n, args.timing_steps, cache)
        print(
            f"{n:>7} {per_step:>8.3f} {fwd:>10.3f} {per_step / fwd:>6.1f} {200 * per_step / 60:>8.1f} min "
            f"{peak / 1e9:>7.2f} GB"
        )

    if args.timing_only:
        return
    print(f"\n3. held-out perplexity on the {len(aw.sample_texts())} sample paragraphs, sparsity {args.sparsity}")
    print(f"{'mask':<16} {'steps':>5} {'dense':>7} {'post-hoc':>9} {'adapted':>8} {'recovered':>9} {'train s':>8}")
    torch.set_grad_enabled(True)
    for mask in args.masks:
        for steps in args.steps:
            adaptation = aw.adapt(model, mask, args.sparsity, steps=steps, progress=False, cache_dir=cache)
            results = [
                aw.compare(
                    model,
                    text,
                    mask,
                    args.sparsity,
                    tokenizer=tok,
                    adapted=adaptation,
                    per_layer=False,
                    continuation_tokens=0,
                ).metrics
                for text in aw.sample_texts()
            ]
            dense, post, adapted = (
                statistics.mean(getattr(m, f) for m in results) for f in ("dense_ppl", "sparse_ppl", "adapted_ppl")
            )
            recovered = (post - adapted) / (post - dense)
            print(
                f"{mask:<16} {steps:>5} {dense:>7.1f} {post:>9.1f} {adapted:>8.1f} {recovered:>9.0%} "
                f"{adaptation.seconds:>8.0f}"
            )


if __name__ == "__main__":
    main()
