"""What one move of the sparsity slider sends to the browser: messages and bytes, by trait, measured in one run.

    .venv/bin/python benchmarks/bench_messages.py [--lengths 512 8192] [--mask sink_window]

On the embedded default model, a widget as the app and the notebooks make it (threaded, the per-layer curve on: the
widget switches it off by itself above 2048 tokens), a dummy comm in place of the browser. At each length T, one
move from 50 % to 60 % until the widget is idle again:
  - the messages sent and their bytes (JSON state plus binary buffers), in all and by trait;
  - payloads sent twice (the same trait with the same value, buffers included): should be none;
  - status messages within any one second (progress is throttled to ten a second within a stage; a stage's start
    and end always go).
Every message goes to every page connected to the kernel, and a page whose connection is gone has its messages
buffered by the Jupyter server until it reconnects or its kernel ends: these bytes are what a page costs.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import time
from typing import Any

from common import default_model, fmt_bytes, text_of
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm

from attnsparse_widget.widget import AttentionDiffWidget


def record(widget: AttentionDiffWidget) -> list[tuple[float, dict[str, Any], list[Any], list[bytes]]]:
    """Every state update the widget sends from now on: (time, state, buffer paths, buffers)."""
    sent: list[tuple[float, dict[str, Any], list[Any], list[bytes]]] = []
    original = widget.comm.send

    def send(*args: Any, **kwargs: Any) -> Any:
        data = kwargs.get("data", args[0] if args else {})
        if isinstance(data, dict) and data.get("method") == "update":
            buffers = [bytes(b) for b in kwargs.get("buffers") or []]
            sent.append((time.perf_counter(), data.get("state", {}), data.get("buffer_paths", []), buffers))
        return original(*args, **kwargs)

    widget.comm.send = send
    return sent


def summary(sent: list[tuple[float, dict[str, Any], list[Any], list[bytes]]]) -> dict[str, Any]:
    by_trait: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    seen: set[tuple[str, str]] = set()
    twice = 0
    total = 0
    for _, state, paths, buffers in sent:
        total += len(json.dumps(state, default=str).encode()) + sum(len(b) for b in buffers)
        for key, value in state.items():
            own = b"".join(b for p, b in zip(paths, buffers, strict=True) if p[0] == key)
            digest = hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode() + own).hexdigest()
            twice += (key, digest) in seen
            seen.add((key, digest))
            by_trait[key][0] += 1
            by_trait[key][1] += len(json.dumps(value, default=str).encode()) + len(own)
    statuses = [at for at, state, _, _ in sent if "status" in state]
    per_second = max((sum(1 for u in statuses if s <= u < s + 1) for s in statuses), default=0)
    return {"messages": len(sent), "bytes": total, "twice": twice, "status_per_s": per_second, "by_trait": by_trait}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 8192])
    parser.add_argument("--mask", default="sink_window")
    args = parser.parse_args()
    model = default_model()
    setup_test_comm()
    try:
        for n in args.lengths:
            w = AttentionDiffWidget(model, text=text_of(model[1], n), mask=args.mask, sparsity=0.5)
            w.wait(None)
            sent = record(w)
            start = time.perf_counter()
            w.sparsity = 0.6
            w.wait(None)
            seconds = time.perf_counter() - start
            s = summary(sent)
            print(
                f"T={n}: one slider move, {seconds:.1f} s until idle (per-layer curve {'on' if w.per_layer else 'off'})"
                f": {s['messages']} messages, {fmt_bytes(s['bytes'])}; payloads sent twice: {s['twice']}; "
                f"status messages in the busiest second: {s['status_per_s']}"
            )
            for key, (count, size) in sorted(s["by_trait"].items(), key=lambda kv: -kv[1][1]):
                print(f"    {key:<12} {count:>4} messages {fmt_bytes(size):>10}")
            w.close()
    finally:
        teardown_test_comm()


if __name__ == "__main__":
    main()
