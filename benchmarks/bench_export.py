"""6. GIF export of every layer: seconds per frame and in total, measured in one run.

    .venv/bin/python benchmarks/bench_export.py [--lengths 128 512 2048]

On the embedded default model (30 layers), ``res.export_gif()`` with the default view (dense | sparse | sparse −
dense, mean of heads, 1200 x 480 pixels): one kaleido (Debian Chromium) session renders the 30 frames, imageio
writes the GIF. The time includes the browser's start; long texts are drawn from their 256 x 256 overview.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import LENGTHS, default_model, text_of

from attnsparse_widget.pipeline import ATTENTION_MAPS, Request, run_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    args = parser.parse_args()

    model, tok = default_model()
    print("GIF of all 30 layers, side by side, mean of heads, 1200 x 480")
    print(f"{'T':>5} {'frames':>7} {'total':>8} {'per frame':>10} {'size':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.lengths:
            request = Request(text_of(tok, n), "sink_window", 0.5, continuation_tokens=0)
            res = run_until((model, tok), request, ATTENTION_MAPS)
            report = res.export_gif(Path(tmp) / f"{n}.gif")
            size = report.path.stat().st_size / 1e6
            print(
                f"{n:>5} {report.frames:>7} {report.seconds:>7.1f}s {report.seconds_per_frame:>9.2f}s {size:>7.1f} MB"
            )


if __name__ == "__main__":
    main()
