"""How much compare() costs beside the model's own forward pass, measured in one run.

    .venv/bin/python benchmarks/bench_compare.py [--tokens 100] [--mask sink_window] [--repeat 3]

Prints, on the embedded default model (SmolLM2-135M, 30 layers x 9 heads) with a paragraph of about --tokens
tokens:
  - one plain forward pass (the model's own attention implementation, nothing captured): the unit;
  - compare() without per-layer curves or continuations, dense pass cached (what a changed mask costs),
    and with a cold dense pass;
  - the per-layer (isolated) and the cumulative perplexity curves, each / (L x one forward);
  - the full compare() with everything.
Times are medians of --repeat runs. Ratios are what to read: they carry over between machines.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import attnsparse_widget as aw
from attnsparse_widget.compare import iter_per_layer

PARAGRAPH = (
    "In the winter of that year the river froze from bank to bank, and the children of the village walked across "
    "it to school. The miller, who had watched the water for forty years, said he had never seen the ice so thick. "
    "By February the carts were crossing too, loaded with timber and grain, and the ferryman sat idle in his hut, "
    "mending nets he would not need until spring. When the thaw came it came quickly: one warm night, a sound like "
    "cannon fire, and by morning the river was moving again, carrying slabs of ice the size of houses toward the sea."
)


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--mask", default="sink_window")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model, tok = aw.load_model()
    ids = tok(PARAGRAPH * (1 + args.tokens // 100), return_tensors="pt").input_ids[:, : args.tokens]
    text = tok.decode(ids[0])
    n_layers = model.config.num_hidden_layers
    run = (model, tok)

    forward = median_seconds(lambda: model(input_ids=ids), args.repeat)
    aw.compare(run, text, args.mask, args.sparsity, per_layer=False, continuation_tokens=0)  # warm up, fill cache

    def cold() -> None:
        aw.clear_cache()
        aw.compare(run, text, args.mask, args.sparsity, per_layer=False, continuation_tokens=0)

    cold_compare = median_seconds(cold, args.repeat)
    warm_compare = median_seconds(
        lambda: aw.compare(run, text, args.mask, args.sparsity, per_layer=False, continuation_tokens=0), args.repeat
    )
    res = aw.compare(run, text, args.mask, args.sparsity, per_layer=False, continuation_tokens=0)

    def curve_times() -> dict[str, float]:
        """Seconds spent on the isolated curve (mask at layer l only) and on the cumulative one (layers 0..l)."""
        spent = {"isolated": 0.0, "cumulative": 0.0}
        start = time.perf_counter()
        for kind, _, _ in iter_per_layer(model, ids, res.mask, res.dense, res.sparse, res.metrics.dense_ppl):
            now = time.perf_counter()
            spent[kind] += now - start
            start = now
        return spent

    runs = [curve_times() for _ in range(args.repeat)]
    isolated = statistics.median(r["isolated"] for r in runs)
    cumulative = statistics.median(r["cumulative"] for r in runs)
    aw.clear_cache()
    full = median_seconds(lambda: (aw.clear_cache(), aw.compare(run, text, args.mask, args.sparsity)), 1)

    n = ids.shape[1]
    print(f"default model, {n} tokens, mask {res.mask.label()}, {torch.get_num_threads()} threads")
    print(f"{'one forward pass (model own attention)':<58}{forward * 1000:>9.1f} ms   1.00")
    print(f"{'compare(), dense cached (a changed mask)':<58}{warm_compare * 1000:>9.1f} ms   "
          f"{warm_compare / forward:.2f} x forward")
    print(f"{'compare(), cold (dense + sparse passes)':<58}{cold_compare * 1000:>9.1f} ms   "
          f"{cold_compare / forward:.2f} x forward")
    print(f"{'per-layer delta, mask at layer l only (L variants)':<58}{isolated * 1000:>9.1f} ms   "
          f"{isolated / (n_layers * forward):.2f} x (L x forward)")
    print(f"{'cumulative delta, mask at layers 0..l (L variants)':<58}{cumulative * 1000:>9.1f} ms   "
          f"{cumulative / (n_layers * forward):.2f} x (L x forward)")
    print(f"{'full compare() incl. curves and 2 x 20-token continuations':<58}{full * 1000:>9.1f} ms   "
          f"{full / forward:.2f} x forward")


if __name__ == "__main__":
    main()
