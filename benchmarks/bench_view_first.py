"""The view first: when each part of a slider move reaches the browser, as ratios to one bare dense forward.

    .venv/bin/python benchmarks/bench_view_first.py [--tokens 8192] [--moves sink_window:0.85:0.9 topk:0.9]
                                                    [--layer-changes 2] [--per-layer]

On the embedded default model (SmolLM2-135M, 30 layers x 9 heads) at T tokens, a widget (Python side, a dummy comm,
no browser; per-layer curve off, as the widget sets it above 2048 tokens) on one text. For each move
``mask:from:to`` the widget is first settled at ``from`` (the dense pass cached), then set to ``to``; printed, as
ratios to one forward pass of the model as it is (its SDPA attention, timed in a worker thread like the widget's):
  - main view: until the message carrying the new ``view`` is sent;
  - headline metrics: until ``metrics`` with the perplexities is sent;
  - idle: until every later stage is done (the other layers' maps, the attention metrics and the gallery, the
    continuations).
A move ``mask:to`` starts from the widget's current state. Then ``--layer-changes`` changes of the shown layer,
in seconds until the new view is sent, and the peak resident memory above the loaded model over the whole session.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from bench_memory import PeakSampler
from common import default_model, in_a_thread, plain_forward, seconds, text_of
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm

from attnsparse_widget.widget import AttentionDiffWidget


class Arrivals:
    """When the widget sent its next view and its next metrics with the perplexities."""

    def __init__(self, widget: AttentionDiffWidget) -> None:
        self.start = 0.0
        self.view: float | None = None
        self.headline: float | None = None
        self.view_sent = threading.Event()
        comm = widget.comm
        original = comm.send

        def send(*args: Any, **kwargs: Any) -> Any:
            now = time.perf_counter()
            data = kwargs.get("data", args[0] if args else {})
            state = data.get("state", {}) if isinstance(data, dict) else {}
            if "view" in state and self.view is None:
                self.view = now - self.start
                self.view_sent.set()
            metrics = state.get("metrics") or {}
            if isinstance(metrics, dict) and metrics.get("sparse_ppl") is not None and self.headline is None:
                self.headline = now - self.start
            return original(*args, **kwargs)

        comm.send = send

    def reset(self) -> None:
        self.start, self.view, self.headline = time.perf_counter(), None, None
        self.view_sent.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--moves", nargs="+", default=["sink_window:0.85:0.9", "topk:0.9"])
    parser.add_argument("--layer-changes", type=int, default=2)
    parser.add_argument("--per-layer", action="store_true", help="with the per-layer curve (a move interrupts it)")
    args = parser.parse_args()

    model, tok = default_model()
    text = text_of(tok, args.tokens)
    plain_forward(model, tok, text_of(tok, 64))()  # reads the memory-mapped weights in: the model's own memory
    setup_test_comm()
    rows = []
    with PeakSampler() as peak:
        base = peak.process.memory_info().rss
        first_mask, *_ = args.moves[0].split(":")
        w = AttentionDiffWidget(
            (model, tok), text=text, mask=first_mask, sparsity=0.5, per_layer=args.per_layer, layer=15
        )
        arrivals = Arrivals(w)
        w.wait(None)
        for move in args.moves:
            mask, *values = move.split(":")
            if len(values) == 2:
                w.mask, w.sparsity = mask, float(values[0])
                w.wait(None)
            arrivals.reset()
            with w.hold_trait_notifications():
                w.mask, w.sparsity = mask, float(values[-1])
            w.wait(None)
            idle = time.perf_counter() - arrivals.start
            if w.status.get("error"):
                raise RuntimeError(w.status["error"])
            achieved = w.result.metrics.achieved_sparsity if w.result else float("nan")
            rows.append((move, arrivals.view, arrivals.headline, idle, achieved))
        changes = []
        for layer in (3, 27, 9, 21)[: args.layer_changes]:
            arrivals.reset()
            w.layer = layer
            if not arrivals.view_sent.wait(600):
                raise RuntimeError(f"no view arrived; status {w.status}")
            changes.append(arrivals.view)
            w.wait(None)
        w.close()
    teardown_test_comm()
    forward = seconds(in_a_thread(plain_forward(model, tok, text)))  # after the session: not in its memory peak

    curve = "on" if args.per_layer else "off"
    print(f"default model, {args.tokens} tokens, per-layer curve {curve}; one bare dense forward {forward:.1f} s")
    print(f"{'move':<24} {'main view':>16} {'headline metrics':>18} {'idle':>16} {'achieved':>9}")
    for move, view, headline, idle, achieved in rows:

        def cell(t: float | None) -> str:
            return "–" if t is None else f"{t / forward:.2f} ({t:.1f} s)"

        print(f"{move:<24} {cell(view):>16} {cell(headline):>18} {cell(idle):>16} {achieved:>9.3f}")
    shown = ", ".join(f"{t:.2f} s" for t in changes if t is not None)
    print(f"layer change to the new main view: {shown}")
    print(f"peak resident memory above the loaded model: {(peak.peak - base) / 2**30:.2f} GB")


if __name__ == "__main__":
    main()
