"""What one move of the sparsity slider costs, against the floor and against a naive tool, measured in one run.

    .venv/bin/python benchmarks/bench_update.py [--lengths 128 512 2048] [--mask sink_window] [--repeat 3]
                                                [--baseline-up-to 512]

On the embedded default model (SmolLM2-135M, 30 layers x 9 heads), at each length T:
  1. update latency: ``w.sparsity = s`` on a widget (Python side, a dummy comm, no browser) until the message
     carrying the main view and the headline metrics is sent, divided by one bare forward pass of the same model,
     text and mask (attention implementation swapped, nothing captured). Target <= 1.3.
  2. against the naive baseline (naive_baseline.py): our update time / its time (target <= 0.35 at T = 512) and
     the bytes sent per update, everything until the widget is idle again / its bytes (target <= 1/8).
The widget's per-layer curve is switched off here (``per_layer=False``): it follows progressively and is measured
by bench_compare.py. Times are medians of --repeat updates; ratios are what to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from typing import Any

from common import LENGTHS, bare_forward, default_model, fmt_bytes, in_a_thread, median_seconds, text_of
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm
from naive_baseline import naive_update

from attnsparse_widget.widget import AttentionDiffWidget


class Recorder:
    """Timestamps and sizes of every message the widget sends."""

    def __init__(self, widget: AttentionDiffWidget) -> None:
        self.sent: list[tuple[float, dict[str, Any], int]] = []
        self.arrived = threading.Event()
        comm = widget.comm
        original = comm.send

        def send(*args: Any, **kwargs: Any) -> Any:
            now = time.perf_counter()  # the message is ready; its size is measured after the clock is read
            data = kwargs.get("data", args[0] if args else {})
            buffers = kwargs.get("buffers") or []
            size = len(json.dumps(data, default=str).encode()) + sum(memoryview(b).nbytes for b in buffers)
            state = data.get("state", {}) if isinstance(data, dict) else {}
            self.sent.append((now, state, size))
            if "view" in state and "metrics" in state:
                self.arrived.set()
            return original(*args, **kwargs)

        comm.send = send


def widget_update(w: AttentionDiffWidget, rec: Recorder, sparsity: float) -> tuple[float, int]:
    """Seconds until the main view and headline metrics are sent, and bytes sent until idle."""
    w.wait(None)
    rec.sent.clear()
    rec.arrived.clear()
    start = time.perf_counter()
    w.sparsity = sparsity
    if not rec.arrived.wait(600):
        raise RuntimeError(f"no view arrived; status {w.status}")
    seconds = next(t for t, state, _ in rec.sent if "view" in state and "metrics" in state) - start
    w.wait(None)
    if w.status.get("error"):
        raise RuntimeError(w.status["error"])
    return seconds, sum(size for _, _, size in rec.sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--mask", default="sink_window")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--baseline-up-to",
        type=int,
        default=512,
        help="run the naive baseline up to this length (it sends ~1 GB of JSON at T=512)",
    )
    args = parser.parse_args()

    model, tok = default_model()
    setup_test_comm()
    rows = []
    for n in args.lengths:
        text = text_of(tok, n)
        bare = bare_forward(model, tok, text, args.mask, 0.5)
        floor_main = median_seconds(bare, args.repeat)
        floor = median_seconds(in_a_thread(bare), args.repeat)  # the widget computes in a worker thread too
        w = AttentionDiffWidget((model, tok), text=text, mask=args.mask, sparsity=0.5, per_layer=False)
        rec = Recorder(w)
        w.wait(None)
        updates = [widget_update(w, rec, s) for s in (0.6, 0.7, 0.8, 0.5, 0.65)[: max(args.repeat, 1)]]
        ours = statistics.median(t for t, _ in updates)
        sent = statistics.median(b for _, b in updates)
        row = {"T": n, "bare": floor, "bare_main": floor_main, "ours": ours, "sent": sent}
        if n <= args.baseline_up_to:
            row["naive"], row["naive_sent"] = naive_update(model, tok, text, args.mask, 0.6)
        rows.append(row)
        w.close()
    teardown_test_comm()

    print(
        f"default model, mask {args.mask}, update latency = w.sparsity = s until the main view and headline "
        f"metrics are sent"
    )
    print("bare forward: in a worker thread like the widget's (in the main thread: the column 'main')")
    print(
        f"{'T':>5} {'bare forward':>13} {'main':>7} {'update':>9} {'update/bare':>12} {'naive':>9} "
        f"{'update/naive':>13} {'sent':>10} {'naive sent':>11} {'sent/naive':>11}"
    )
    for r in rows:
        naive = f"{r['naive']:>8.2f}s {r['ours'] / r['naive']:>13.3f}" if "naive" in r else f"{'–':>9} {'–':>13}"
        sent = (
            f"{fmt_bytes(r['naive_sent']):>11} {r['sent'] / r['naive_sent']:>11.5f}"
            if "naive" in r
            else f"{'–':>11} {'–':>11}"
        )
        print(
            f"{r['T']:>5} {r['bare']:>12.3f}s {r['bare_main']:>6.3f}s {r['ours']:>8.3f}s "
            f"{r['ours'] / r['bare']:>12.2f} {naive} "
            f"{fmt_bytes(r['sent']):>10} {sent}"
        )


if __name__ == "__main__":
    main()
