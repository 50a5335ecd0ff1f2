"""The same engine on a CUDA device (``model.to("cuda")``): exactness of the fast path there, and what the masks buy
in time at the default model's lengths, measured in one run. Never required: everything else runs on a CPU.

    python benchmarks/bench_gpu.py [--lengths 2048 4096 8192] [--sparsity 0.9] [--weights default|random]
                                   [--config-dir DIR]

On the first CUDA device (a CPU when there is none, for trying the script):
  0. the model: the embedded default model (``--weights default``), or the default model's architecture with
     random weights (``--weights random``, config and tokenizer read from ``--config-dir``, a folder holding the
     converted model's ``config.json`` and tokenizer files): for a machine the 98 MB GGUF cannot reach. Times do
     not depend on the weights; with random ones the perplexities printed mean nothing.
  1. exactness at 1024 tokens, sinks + window at the given sparsity: the sparse forward through FlexAttention and
     through SDPA with the mask against the eager masked path on the same device (max |Δ logit| relative to the
     largest logit, and the relative perplexity difference on the text's own next tokens).
  2. one attention call per mask and length: bench_kernels.py's part 1, on the device.
  3. at each length: the whole model, dense against the window's sparse forward on each path (bench_kernels.py's
     part 2); the comparisons of bench_long.py (the first compare, a mask change split by stage, one head's map, a
     zoom, peak memory); the widget, a slider move until it is idle.
CUDA is synchronised around every timed call (common.seconds).
"""

from __future__ import annotations

import argparse
import math
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_kernels import one_call, whole_forward
from bench_long import one_length as long_comparisons
from common import ids_of, seconds, text_of
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import attnsparse_widget as aw
from attnsparse_widget import kernels, masks
from attnsparse_widget.capture import Plan, attention_active
from attnsparse_widget.introspect import layer_indexer
from attnsparse_widget.models import cache_root
from attnsparse_widget.widget import AttentionDiffWidget


def load(weights: str, config_dir: Path | None, device: torch.device) -> tuple[Any, Any]:
    """The default model, or its architecture with random weights (seeded), on ``device``, in float32."""
    if weights == "default":
        model, tok = aw.load_model()
    else:
        folder = config_dir or next(cache_root().glob("SmolLM2-*"))
        config = AutoConfig.from_pretrained(folder)
        config._attn_implementation = "sdpa"
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(folder)
    return model.to(device), tok


def sparse_forward(model: Any, ids: torch.Tensor, mask: masks.Mask, kernel: str | None, full: bool = False) -> Any:
    plan = Plan(layer_of=layer_indexer(model), mask=mask, kernel=kernel)
    with torch.inference_mode(), attention_active(model, plan):
        return model(input_ids=ids, use_cache=False, **({} if full else {"logits_to_keep": 1})).logits


def exactness(model: Any, tok: Any, device: torch.device, sparsity: float) -> None:
    n = 1024
    ids = ids_of(model, tok, text_of(tok, n))
    mask = masks.resolve("sink_window", n, sparsity)
    ref = sparse_forward(model, ids, mask, "eager", full=True)[0].double()
    ref_nll = torch.nn.functional.cross_entropy(ref[:-1], ids[0, 1:])
    print(f"1. exactness at {n} tokens on {device}, {mask.label()} (against the eager masked path there)")
    for kernel in ("flex", "sdpa"):
        out = sparse_forward(model, ids, mask, kernel, full=True)[0].double()
        nll = torch.nn.functional.cross_entropy(out[:-1], ids[0, 1:])
        logits_err = float((out - ref).abs().max() / ref.abs().max())
        ppl_err = abs(math.exp(float(nll)) / math.exp(float(ref_nll)) - 1)
        print(f"   {kernel:<5} max |Δ logit| / max |logit| {logits_err:.2e}; perplexity relative {ppl_err:.2e}")


def widget(model: Any, tok: Any, n: int, sparsity: float) -> None:
    """The widget on the device (a dummy comm, no browser): a slider move until it is idle, and no error."""
    try:  # a comm that records nothing; without ipykernel the widget gets comm's own dummy anyway
        from ipywidgets.widgets.tests.utils import setup_test_comm

        setup_test_comm()
    except ImportError:
        pass
    w = AttentionDiffWidget((model, tok), text=aw.long_text(tok, n), mask="sink_window", sparsity=sparsity)
    w.wait(None)
    took = seconds(lambda: (setattr(w, "sparsity", sparsity - 0.05), w.wait(None)))
    error = w.status.get("error") or "none"
    print(f"   widget: a slider move until idle (per-layer curve off above 2048 tokens) {took:.2f} s; error: {error}")
    w.close()


PARTS: dict[str, Callable[[Any, Any, int, float], None]] = {  # part 3, each at every length
    "whole_model": whole_forward,
    "comparisons": lambda model, tok, n, sparsity: long_comparisons((model, tok), n, "sink_window", sparsity),
    "widget": widget,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--weights", choices=("default", "random"), default="default")
    parser.add_argument("--config-dir", type=Path, default=None)
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="of part 3, these only")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, flex usable: {kernels.flex_usable(device.type)}")
    model, tok = load(args.weights, args.config_dir, device)
    exactness(model, tok, device, args.sparsity)
    print()
    one_call(args.lengths, args.sparsity, device.type)
    print("\n3. by length")
    for n in args.lengths:
        print(f" T = {n}")
        for name in args.parts:
            try:  # one part failing says where, and the others still run
                PARTS[name](model, tok, n, args.sparsity)
            except Exception:  # noqa: BLE001
                print(traceback.format_exc(limit=-6))


if __name__ == "__main__":
    main()
