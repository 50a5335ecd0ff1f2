"""``attnsparse``: the command line.

attnsparse compare --text "..." --mask sink_window --sparsity 0.5
attnsparse compare --text "..." --mask dsa --sparsity paper   # DSA as DeepSeek ships it (k = 2048)
attnsparse masks                      # every mask id with its description and parameters
attnsparse app [--port 8866]          # the widget as a standalone web app (Voila), on 127.0.0.1
attnsparse app --explore              # the attention cost explorer as the app
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import masks

DEFAULT_TEXT = (
    "Attention lets every token look back at every earlier token. Sparse attention keeps only some of those "
    "pairs: a window of recent tokens, a few global ones, or the highest-scoring keys. This tool shows which "
    "pairs were dropped and what that did to the model's predictions."
)


def _parse_value(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw.lower(), raw)


def _mask_params(pairs: Sequence[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--param expects NAME=VALUE (e.g. --param sinks=4), got {pair!r}")
        params[name] = _parse_value(raw)
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnsparse", description="See what sparse attention does to a model.")
    sub = parser.add_subparsers(dest="command", required=True)

    cmp = sub.add_parser("compare", help="run a text densely and with a sparse mask, print the metrics")
    cmp.add_argument("--text", default=DEFAULT_TEXT, help="input text (default: a short paragraph)")
    cmp.add_argument("--model", default=None, help="hub id or local path (default: embedded SmolLM2-135M)")
    cmp.add_argument("--mask", default="sink_window", help=f"mask id, one of: {', '.join(masks.ids())}")
    cmp.add_argument(
        "--sparsity",
        type=_sparsity,
        default=None,
        help="fraction of allowed pairs dropped, [0, 1); or 'paper': the mask's paper's own budget and parameters",
    )
    cmp.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a mask parameter")
    cmp.add_argument("--tokens", type=int, default=20, help="greedy continuation length (default 20)")
    cmp.add_argument("--max-tokens", type=int, default=None, help="truncate the text to this many tokens")
    cmp.add_argument("--no-per-layer", action="store_true", help="skip the per-layer perplexity curves")
    cmp.add_argument(
        "--time-attention",
        action="store_true",
        help="measure the attention's time on this machine, dense against the mask on FlexAttention",
    )
    cmp.add_argument("--text-file", default=None, help="read the input text from this file (instead of --text)")
    cmp.add_argument("--json", action="store_true", help="print the metrics as JSON")

    sub.add_parser("masks", help="list every mask with its description and parameters")

    app = sub.add_parser("app", help="serve the widget as a standalone web app (Voila), one per browser session")
    app.add_argument("--port", type=int, default=8866, help="port to serve on (default 8866)")
    app.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1, this machine only; another address exposes it, with a warning)",
    )
    app.add_argument("--model", default=None, help="hub id or local path (default: embedded SmolLM2-135M)")
    app.add_argument("--text", default=None, metavar="FILE", help="a file with the text the app opens on")
    app.add_argument("--open", action="store_true", help="open the app in a browser")
    app.add_argument("--no-per-layer", action="store_true", help="start with the per-layer curve switched off")
    app.add_argument(
        "--explore",
        action="store_true",
        help="serve the attention cost explorer instead (--model: a preset such as DeepSeek-V3, default SmolLM2-135M)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "masks":
        for info in masks.available():
            params = ", ".join(f"{k}={v}" for k, v in info["params"].items()) or "-"
            print(f"{info['id']:<16}{info['description']}\n{'':<16}params: {params}; budget: {info['budget']}")
        return 0
    if args.command == "app":
        return _app(args)

    from .pipeline import Request, stages

    text = args.text if args.text_file is None else _read_text(args.text_file, "--text-file")
    if text is None:
        return 2
    start = time.perf_counter()
    progress = sys.stderr.isatty() and not args.json  # a live line of the stage being computed, on a terminal
    try:
        request = Request(
            text=text,
            mask=args.mask,
            sparsity=args.sparsity,
            mask_params=_mask_params(args.param),
            per_layer=not args.no_per_layer,
            continuation_tokens=args.tokens,
            max_tokens=args.max_tokens,
            time_attention=args.time_attention,
        )
        for step in stages(args.model, request):
            if progress:
                print(f"\r{step.stage}: {step.done}/{step.total}\033[K", end="", file=sys.stderr, flush=True)
    except (ValueError, TypeError, ImportError) as err:
        print(f"attnsparse: error: {err}", file=sys.stderr)
        return 2
    finally:
        if progress:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
    res = step.result
    if args.json:
        print(json.dumps({"mask": res.mask_label, **res.metrics.to_dict(), "continuations": res.continuations}))
    else:
        print(res.summary())
        print(f"\n({time.perf_counter() - start:.1f} s)")
    return 0


def _read_text(path: str, option: str) -> str | None:
    """The text in ``path``, or None after saying on stderr why it cannot be read (the caller exits with 2)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as err:
        print(f"attnsparse: error: cannot read {option}: {err}", file=sys.stderr)
        return None


def _sparsity(value: str) -> float | str:
    """``--sparsity``: a number, or "paper"."""
    if value == "paper":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) or 'paper', got {value!r}") from None


def _app(args: argparse.Namespace) -> int:
    from .app import serve

    text = None if args.text is None else _read_text(args.text, "--text")
    if args.text is not None and text is None:
        return 2
    try:
        return serve(
            port=args.port,
            host=args.host,
            model=args.model,
            text=text,
            open_browser=args.open,
            per_layer=not args.no_per_layer,
            explore=args.explore,
        )
    except (ValueError, ImportError) as err:
        print(f"attnsparse: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
