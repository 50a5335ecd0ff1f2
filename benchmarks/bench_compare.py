"""What compare() and its per-layer curves cost beside the model's own forward pass, measured in one run.

    .venv/bin/python benchmarks/bench_compare.py [--lengths 128 512 2048] [--mask sink_window] [--repeat 3]

On the embedded default model (SmolLM2-135M, 30 layers x 9 heads), at each length T:
  - one plain forward pass (the model's own attention implementation, nothing captured): the unit;
  - the first stage of compare() with the dense pass cached (what a changed mask costs before the view can be
    drawn), and a cold compare() (dense and sparse passes);
  - 4. the per-layer perplexity delta (the mask at layer l only, every l) / (L x one forward), target <= 0.6;
    and the cumulative curve (the mask at layers 0..l) / (L x one forward);
  - the full compare(): attention metrics, both curves, two 20-token continuations.
Times are medians of --repeat runs (one run at 2048 tokens for the curves). Ratios are what to read.
"""

from __future__ import annotations

import argparse
import time

from common import LENGTHS, default_model, median_seconds, plain_forward, text_of

import attnsparse_widget as aw
from attnsparse_widget.pipeline import NEXT_TOKEN_METRICS, Request, run_until
from attnsparse_widget.replay import iter_per_layer


def curve_seconds(res) -> dict[str, float]:  # noqa: ANN001
    """Seconds spent on the isolated curve (mask at layer l only) and on the cumulative one (layers 0..l)."""
    spent = {"isolated": 0.0, "cumulative": 0.0}
    start = time.perf_counter()
    for kind, _, _ in iter_per_layer(res._model, res.mask, res.dense, res.sparse, res.metrics.dense_ppl):
        now = time.perf_counter()
        spent[kind] += now - start
        start = now
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--mask", default="sink_window")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    model, tok = default_model()
    n_layers = model.config.num_hidden_layers
    run = (model, tok)
    rows = []
    for n in args.lengths:
        text = text_of(tok, n)
        repeat = 1 if n > 1024 else args.repeat
        forward = median_seconds(plain_forward(model, tok, text), args.repeat)

        def stage(cold: bool, text: str = text) -> object:  # binds this length's text
            if cold:
                aw.clear_cache()
            return run_until(run, Request(text, args.mask, args.sparsity, continuation_tokens=0), NEXT_TOKEN_METRICS)

        stage(False)
        warm = median_seconds(lambda: stage(False), args.repeat)
        cold = median_seconds(lambda: stage(True), repeat)
        res = stage(False)
        curves = [curve_seconds(res) for _ in range(repeat)]
        isolated = sorted(c["isolated"] for c in curves)[len(curves) // 2]
        cumulative = sorted(c["cumulative"] for c in curves)[len(curves) // 2]
        aw.clear_cache()
        start = time.perf_counter()
        aw.compare(run, text, args.mask, args.sparsity)
        full = time.perf_counter() - start
        rows.append((n, forward, warm, cold, isolated, cumulative, full, res.mask.label()))

    print(f"default model ({n_layers} layers), mask {args.mask} at sparsity {args.sparsity}; unit: one plain forward")
    print(
        f"{'T':>5} {'forward':>9} {'stage 1, dense cached':>22} {'cold':>14} {'per-layer Δ / (L·fwd)':>23} "
        f"{'cumulative / (L·fwd)':>21} {'full compare()':>16}"
    )
    for n, forward, warm, cold, isolated, cumulative, full, _ in rows:
        unit = n_layers * forward
        print(
            f"{n:>5} {forward:>8.3f}s {warm:>9.3f}s {warm / forward:>6.2f} x {cold:>7.3f}s {cold / forward:>4.1f} x "
            f"{isolated:>8.1f}s {isolated / unit:>8.2f} {cumulative:>11.1f}s {cumulative / unit:>7.2f} "
            f"{full:>9.1f}s {full / forward:>4.0f} x"
        )


if __name__ == "__main__":
    main()
