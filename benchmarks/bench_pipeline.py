"""What each stage of the engine pipeline costs beside one bare forward pass, measured in one run.

    .venv/bin/python benchmarks/bench_pipeline.py [--lengths 512] [--mask sink_window] [--repeat 3]

On the embedded default model, at each length T, with the dense pass cached (a mask change on a text already
seen, what sweeps and notebooks do):
  - the unit: one plain forward pass (the model's own SDPA attention, nothing captured);
  - ``compare(per_layer=False, continuation_tokens=0)``: target <= 1.6 x the unit;
  - ``compare(per_layer=False)`` with the default 20-token continuations: target <= 2.8 x the unit;
  - the floor under the continuations: 20 greedy steps of the plain model with its KV cache (its own SDPA
    attention), after one prefill that is not counted;
  - the split of the latter by stage (sparse pass and headline metrics, attention metrics, continuations), read
    from the pipeline's own progress.
Each repeat times the plain forward and both compares back to back and takes their ratios; the figures are the
medians of those ratios (this machine's speed drifts by up to 40 % between minutes, which a ratio of medians
taken minutes apart would not cancel), with their range. The masks alternate between two sparsities so that no
sparse pass is reused.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from common import default_model, median_seconds, plain_forward, seconds, text_of

from attnsparse_widget import compare, masks
from attnsparse_widget.compat import cache_kwarg, output_cache
from attnsparse_widget.measure import output_metrics, sparsity_metrics
from attnsparse_widget.metrics import Metrics
from attnsparse_widget.passes import captured_pass
from attnsparse_widget.pipeline import Request, stages


def stage_seconds(run: tuple, text: str, mask: str, sparsity: float) -> dict[str, float]:  # noqa: ANN001
    spent: dict[str, float] = {}
    start = time.perf_counter()
    for progress in stages(run, Request(text, mask, sparsity, per_layer=False)):
        now = time.perf_counter()
        spent[progress.stage] = spent.get(progress.stage, 0.0) + now - start
        start = now
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512])
    parser.add_argument("--mask", default="sink_window")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    model, tok = default_model()
    run = (model, tok)
    print(f"mask {args.mask}; ratios to one plain forward pass of the model; dense pass cached")
    print(
        f"{'T':>5} {'forward':>8} {'no continuations':>17} {'with continuations':>19}   by stage (with continuations)"
    )
    for n in args.lengths:
        text = text_of(tok, n)
        sparsities = iter([0.5, 0.6] * (2 * args.repeat + 2))

        def bare_compare(continuations: int, text: str = text, sparsities: Iterator[float] = sparsities) -> object:
            s = next(sparsities)
            return compare(run, text, args.mask, s, per_layer=False, continuation_tokens=continuations)

        bare_compare(0)  # the dense pass, cached from here on
        bare_compare(20)  # ... and its continuation
        forward_fn = plain_forward(model, tok, text)
        decode_fn = plain_decode(model, tok, text, 20)
        forwards, shorts, fulls, decodes = [], [], [], []
        for _ in range(args.repeat):
            f = seconds(forward_fn)
            forwards.append(f)
            shorts.append(seconds(lambda: bare_compare(0)) / f)
            fulls.append(seconds(lambda: bare_compare(20)) / f)
            decodes.append(decode_fn() / f)
        forward = statistics.median(forwards)
        splits = [stage_seconds(run, text, args.mask, s) for s in [0.5, 0.6][: max(1, min(args.repeat, 2))]]
        split = {k: statistics.median(s.get(k, 0.0) for s in splits) for k in splits[0]}
        parts = ", ".join(f"{k} {v / forward:.2f}" for k, v in split.items())
        print(f"{n:>5} {forward:>7.3f}s {spread(shorts):>17} {spread(fulls):>19}   {parts}")
        print(f"      20 plain decoding steps with the model's KV cache (the continuations' floor): {spread(decodes)}")
        pieces = first_stage_pieces(run, text, args.mask, args.repeat)
        print("      first stage, by piece: " + ", ".join(f"{k} {v / forward:.2f}" for k, v in pieces.items()))


def plain_decode(model: Any, tok: Any, text: str, steps: int) -> Callable[[], float]:
    """Seconds of ``steps`` greedy steps of the model as it is, with its KV cache, after an uncounted prefill."""
    ids = tok(text, return_tensors="pt").input_ids

    def run() -> float:
        with torch.inference_mode():
            out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
            start = time.perf_counter()
            for _ in range(steps):
                token = out.logits[0, -1].argmax().view(1, 1)
                out = model(input_ids=token, use_cache=True, **cache_kwarg(model, output_cache(out)))
            return time.perf_counter() - start

    return run


def spread(ratios: list[float]) -> str:
    """The median ratio and the range of the repeats: ``1.34x (1.30-1.41)``."""
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def first_stage_pieces(run: tuple, text: str, mask: str, repeat: int) -> dict[str, float]:  # noqa: ANN001
    """The sparse pass and headline metrics, taken apart: what bounds the first stage."""
    model, tok = run
    res = compare(run, text, mask, 0.5, per_layer=False, continuation_tokens=0)
    ids = res.sparse.ids
    sparse_mask = masks.resolve(mask, ids.shape[1], 0.6, True)

    def sparse_pass() -> object:
        return captured_pass(model, ids, sparse_mask, seed=0, is_lm=True, compare_with=res.dense)

    fresh = sparse_pass()
    out = {"captured sparse pass with attention metrics": median_seconds(sparse_pass, repeat)}
    out["next-token metrics (head replay, KL)"] = median_seconds(
        lambda: output_metrics(Metrics(0.6, 0.6, []), res.dense, fresh), repeat
    )
    out["achieved sparsity"] = median_seconds(lambda: sparsity_metrics(fresh.store, 0.6), repeat)
    return out


if __name__ == "__main__":
    main()
