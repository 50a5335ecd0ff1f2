"""What a mask buys in time, measured: the kernels of kernels.py against dense SDPA, in one run.

    .venv/bin/python benchmarks/bench_kernels.py [--lengths 1024 2048 4096 8192] [--sparsity 0.9] [--skip-forward]

1. One attention call of the default model's shape (9 query heads, 3 key-value heads, 64 dims) at each length:
   dense causal SDPA (the unit), then for each mask (a window, sinks + window, NSA's blocks, top-k) at the given
   sparsity: FlexAttention with the mask's BlockMask, SDPA with the boolean mask, and the eager masked path the
   capture runs (scores, mask, float32 softmax, up to 4096 tokens). Each the median of 3 calls after a warm-up
   (the warm-up compiles flex; compile times are printed apart). Score-dependent masks choose on random scores.
2. The whole model at 2048 tokens with a window at the given sparsity, nothing captured: one dense forward (the
   model's own SDPA) against the sparse forward through the fast path (flex), through SDPA with the mask, and
   through the eager masked path.

The kernel choice of kernels.choose_kernel (flex from FLEX_MIN_TOKENS on, else SDPA with the mask) comes from
these figures; the table in benchmarks/README.md quotes them.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import torch
from common import default_model, ids_of, median_seconds, seconds, text_of

from attnsparse_widget import kernels, masks
from attnsparse_widget.capture import Plan, attention_active, eager_scores, softmax_float32
from attnsparse_widget.introspect import layer_indexer

HEADS, KV_HEADS, DIM = 9, 3, 64
MASKS = ("sliding_window", "sink_window", "nsa", "topk")
EAGER_UP_TO = 4096  # the eager path's [H, T, T] float32 scores: 2.4 GB at 8192


def eager_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """What capture.attention_forward computes for a masked layer (without recording)."""
    n_rep = q.shape[1] // k.shape[1]
    kr, vr = k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1)
    scores = eager_scores(q, kr, None, DIM**-0.5, None).masked_fill_(~keep[None], torch.finfo(torch.float32).min)
    return softmax_float32(scores) @ vr


def one_call(lengths: list[int], sparsity: float, device: str = "cpu") -> None:
    print(f"1. one attention call ({HEADS} heads, {KV_HEADS} KV heads, {DIM} dims), masks at sparsity {sparsity}")
    print(f"{'T':>6} {'mask':<15} {'dense ms':>9} {'flex ms':>8} {'x':>6} {'sdpa+m ms':>9} {'x':>6} "
          f"{'eager ms':>9} {'x':>6} {'tiles skipped':>13} {'compile s':>9}")  # fmt: skip
    g = torch.Generator(device=device).manual_seed(0)
    for n in lengths:
        one_length(n, sparsity, g, device)
    print("x: dense time / that kernel's time (above 1: faster than dense)")
    print(f"the paper FLOPs of every mask at sparsity {sparsity}: {1 - sparsity:.2f} of dense (costs.attention_flops)")


def one_length(n: int, sparsity: float, g: torch.Generator, device: str) -> None:
    q = torch.randn(1, HEADS, n, DIM, generator=g, device=device)
    k = torch.randn(1, KV_HEADS, n, DIM, generator=g, device=device)
    v = torch.randn(1, KV_HEADS, n, DIM, generator=g, device=device)
    dense = median_seconds(
        lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), 3
    )
    for mask_id in MASKS:
        mask = masks.resolve(mask_id, n, sparsity)
        keep = kernels.keep_on_random_scores(mask, n, HEADS, DIM).to(device)
        compile_s = seconds(lambda keep=keep: kernels.flex(q, k, v, keep, DIM**-0.5))  # the warm-up: compiles
        timing = kernels.time_attention(q, k, v, keep, DIM**-0.5)
        sdpa = median_seconds(lambda keep=keep: kernels.sdpa(q, k, v, keep, DIM**-0.5), 3)
        eager = median_seconds(lambda keep=keep: eager_masked(q, k, v, keep), 3) if n <= EAGER_UP_TO else math.nan
        print(
            f"{n:>6} {mask_id:<15} {1000 * dense:>9.1f} {1000 * timing.sparse:>8.1f} {dense / timing.sparse:>6.2f}"
            f" {1000 * sdpa:>9.1f} {dense / sdpa:>6.2f} {1000 * eager:>9.1f} {dense / eager:>6.2f}"
            f" {timing.skipped:>13.2f} {compile_s:>9.1f}"
        )


def whole_forward(model: Any, tok: Any, n: int, sparsity: float) -> None:
    ids = ids_of(model, tok, text_of(tok, n))
    mask = masks.resolve("sliding_window", n, sparsity)

    def forward(kernel: str | None) -> float:
        plan = Plan(layer_of=layer_indexer(model), mask=mask, kernel=kernel)

        def run() -> object:
            with torch.inference_mode(), attention_active(model, plan):
                return model(input_ids=ids, use_cache=False, logits_to_keep=1)

        run()  # warm-up (compiles flex for this bucket)
        return median_seconds(run, 3)

    with torch.inference_mode():
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
        dense = median_seconds(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), 3)
    print(f"\n2. the whole model at {n} tokens, sliding_window at {sparsity}, nothing captured (median of 3)")
    print(f"   dense forward (the model's SDPA)   {dense:6.2f} s")
    for kernel in ("flex", "sdpa", "eager"):
        took = forward(kernel)
        print(f"   sparse forward, {kernel:<5}               {took:6.2f} s   dense / sparse {dense / took:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--skip-forward", action="store_true", help="only part 1")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    one_call(args.lengths, args.sparsity)
    if not args.skip_forward:
        whole_forward(*default_model(), 2048, args.sparsity)


if __name__ == "__main__":
    main()
