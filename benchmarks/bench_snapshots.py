"""What an export costs while the widget still computes, and what a layer change costs, measured in one run.

    .venv/bin/python benchmarks/bench_snapshots.py [--tokens 512] [--mask sink_window] [--repeat 3]

On the embedded default model (SmolLM2-135M, 30 layers x 9 heads), a widget with the per-layer curve on, at T
tokens:
  1. ``w.sparsity`` moves (0.5 → 0.6); as soon as the main view is on screen (``w.wait(until="view")``),
     ``w.export_png(path)`` runs while the worker goes on with the later stages. Printed: its seconds against the
     same export of the finished result (the export's own time; target: about 1), and the seconds the export
     waited before snapshots (the later stages still running at that point, measured as the time until idle).
  2. the layer change: ``w.layer`` set until the new main view is sent, seconds (target at 8192: <= 2 s), against
     one bare forward.
Times are medians of --repeat runs; ratios are what to read.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import bare_forward, default_model, in_a_thread, median_seconds, text_of
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm

from attnsparse_widget.widget import AttentionDiffWidget


def view_sent(widget: AttentionDiffWidget) -> threading.Event:
    """An event set whenever the widget sends a main view (its comm's messages, watched)."""
    event = threading.Event()
    comm = widget.comm
    original = comm.send

    def send(*args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data", args[0] if args else {})
        if isinstance(data, dict) and "view" in data.get("state", {}):
            event.set()
        return original(*args, **kwargs)

    comm.send = send
    return event


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--mask", default="sink_window")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    model, tok = default_model()
    setup_test_comm()
    text = text_of(tok, args.tokens)
    floor = median_seconds(in_a_thread(bare_forward(model, tok, text, args.mask, 0.5)), args.repeat)
    w = AttentionDiffWidget((model, tok), text=text, mask=args.mask, sparsity=0.5, per_layer=True)
    sent = view_sent(w)
    folder = Path(tempfile.mkdtemp(prefix="bench-snapshots-"))
    w.wait(None)
    mid, rest, finished = [], [], []
    for i, sparsity in enumerate((0.6, 0.5, 0.65, 0.55, 0.7)[: args.repeat]):
        w.sparsity = sparsity
        w.wait(None, until="view")
        start = time.perf_counter()
        w.export_png(folder / f"mid{i}.png", overwrite=True)
        mid.append(time.perf_counter() - start)
        busy = w.status.get("busy")
        w.wait(None)
        rest.append(time.perf_counter() - start)
        if not busy:
            print(f"  (run {i}: the worker was already idle when the export returned)")
        start = time.perf_counter()
        w.export_png(folder / f"done{i}.png", overwrite=True)
        finished.append(time.perf_counter() - start)
    changes = []
    for layer in (15, 3, 27, 9, 21)[: args.repeat]:
        w.wait(None)
        sent.clear()
        start = time.perf_counter()
        w.layer = layer
        if not sent.wait(600):
            raise RuntimeError(f"no view arrived; status {w.status}")
        changes.append(time.perf_counter() - start)
    w.wait(None)
    w.close()
    teardown_test_comm()

    med = statistics.median
    print(f"default model, {args.tokens} tokens, mask {args.mask}, per-layer curve on; one bare forward {floor:.2f} s")
    print(
        f"export_png mid-computation: {med(mid):.2f} s; of the finished result {med(finished):.2f} s; "
        f"ratio {med(mid) / med(finished):.2f} (target about 1)"
    )
    waited = med(rest) - med(mid)
    print(f"  the stages still running when it returned took another {waited:.1f} s (what it waited before)")
    print(f"layer change to the new main view sent: {med(changes):.2f} s = {med(changes) / floor:.2f} forwards")


if __name__ == "__main__":
    main()
