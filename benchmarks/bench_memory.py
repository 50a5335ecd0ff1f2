"""Peak resident memory beyond the model's own, at 2048 tokens, measured in one run.

    .venv/bin/python benchmarks/bench_memory.py [--tokens 2048] [--updates 20]

5. Each scenario runs in a fresh process. The baseline is the resident set once the package is imported, the
   default model (SmolLM2-135M) is loaded and its weights have been read by one short forward pass; a thread
   samples the resident set every 10 ms and the peak above the baseline is reported. Target <= 1.5 GB.
   - ``compare``: one full ``compare()`` (dense and sparse passes, attention metrics, both per-layer curves, two
     20-token continuations);
   - ``widget``: a widget session of ``--updates`` sparsity changes, as a slider dragged across its range: each
     change waits for its main view and sends the next one (the later stages of the previous one are abandoned);
     the resident set after each update shows whether memory stays flat (no leak).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
import torch


class PeakSampler:
    """The largest resident set seen by a background thread (every ``interval`` seconds)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def scenario(name: str, tokens: int, updates: int) -> dict[str, Any]:
    from common import default_model, text_of

    model, tok = default_model()
    text = text_of(tok, tokens)
    import attnsparse_widget as aw

    # the weights are memory-mapped from the safetensors cache: a first short pass reads them in (500 MB), and
    # they are the model's own memory, not ours
    with torch.inference_mode():
        model(input_ids=tok("Warm up.", return_tensors="pt").input_ids)
    rss = psutil.Process().memory_info().rss
    out: dict[str, Any] = {"scenario": name, "model_rss": rss}
    start = time.perf_counter()
    with PeakSampler() as sampler:
        if name == "compare":
            aw.compare((model, tok), text, mask="sink_window", sparsity=0.5)
        else:
            from ipywidgets.widgets.tests.utils import setup_test_comm

            setup_test_comm()
            w = aw.AttentionDiffWidget((model, tok), text=text, mask="sink_window", sparsity=0.5, per_layer=False)
            w.comm.send = lambda *a, **k: None  # nobody listens: do not keep every message in memory
            w.wait(None)
            after = []
            for i in range(updates):
                shown = w.view
                w.sparsity = 0.3 + 0.6 * i / max(1, updates - 1)
                while w.view is shown or w.status.get("stage") == "running the model":
                    time.sleep(0.05)
                after.append(psutil.Process().memory_info().rss - rss)
            w.wait(None)
            after.append(psutil.Process().memory_info().rss - rss)
            out["rss_after_updates"] = after
    out["seconds"] = time.perf_counter() - start
    out["peak_above_model"] = sampler.peak - rss
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--scenario", choices=["compare", "widget"], help="run one scenario here (internal)")
    args = parser.parse_args()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, args.tokens, args.updates)))
        return
    results = []
    for name in ("compare", "widget"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--scenario",
                name,
                "--tokens",
                str(args.tokens),
                "--updates",
                str(args.updates),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    gb = 2**30
    print(
        f"default model, {args.tokens} tokens, mask sink_window; baseline: the package imported and the model "
        f"loaded ({results[0]['model_rss'] / gb:.2f} GB resident)"
    )
    for r in results:
        line = (
            f"  {r['scenario']:<8} peak above the model {r['peak_above_model'] / gb:5.2f} GB   ({r['seconds']:.0f} s)"
        )
        if "rss_after_updates" in r:
            after = r["rss_after_updates"]
            marks = {1: after[0], 5: after[4], 10: after[9], len(after) - 1: after[-2]} if len(after) > 10 else {}
            line += (
                "   resident after update "
                + ", ".join(f"{k}: {v / gb:.2f}" for k, v in marks.items())
                + f", idle: {after[-1] / gb:.2f} GB"
            )
        print(line)


if __name__ == "__main__":
    main()
