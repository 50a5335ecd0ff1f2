"""The same engine on a CUDA device (``model.to("cuda")``): exactness of the fast path there, and what the masks buy
in time at the default model's lengths, measured in one run. Never required: everything else runs on a CPU.

    python benchmarks/bench_gpu.py [--lengths 2048 4096 8192] [--sparsity 0.9] [--weights default|random]
                                   [--config-dir DIR]

On the first CUDA device (a CPU when there is none, for trying the script):
  0. the model: the embedded default model (``--weights default``), or the default model's architecture with
     random weights (``--weights random``, config and tokenizer read from ``--config-dir``, a folder holding the
     converted model's ``config.json`` and tokenizer files): for a machine the 98 MB GGUF cannot reach. Times do
     not depend on the weights; perplexities then mean nothing and are not printed.
  1. exactness at 1024 tokens, sinks + window at the given sparsity: the sparse forward through FlexAttention and
     through SDPA with the mask against the eager masked path on the same device (max |Δ logit| relative to the
     largest logit, and the relative perplexity difference on the text's own next tokens).
  2. at each length: one dense forward (the model's own SDPA) against the sparse forward (a window at the given
     sparsity, nothing captured) through FlexAttention, SDPA with the mask and the eager masked path; one attention
     call per mask (bench_kernels.py's part 1); the first ``compare(per_layer=False, continuation_tokens=0)`` and a
     mask change on the cached text, split by stage; peak device memory.
Each time is the median of 3 calls after a warm-up (which compiles flex); CUDA is synchronised around every call.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_kernels import MASKS, eager_masked
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import attnsparse_widget as aw
from attnsparse_widget import kernels, masks
from attnsparse_widget.capture import Plan, attention_active, layer_indexer
from attnsparse_widget.models import cache_root
from attnsparse_widget.pipeline import stages
from attnsparse_widget.widget import AttentionDiffWidget


def synced_once(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call of ``fn``, the device synchronised before and after."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def synced_seconds(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median of ``repeat`` :func:`synced_once` after one warm-up call."""
    synced_once(fn)
    return statistics.median(synced_once(fn) for _ in range(repeat))


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
        model.random_weights = True  # perplexities mean nothing
    return model.to(device), tok


def ids_of(tok: Any, n: int, device: torch.device) -> torch.Tensor:
    return tok(aw.long_text(tok, n), return_tensors="pt").input_ids.to(device)


def sparse_forward(model: Any, ids: torch.Tensor, mask: masks.Mask, kernel: str | None, full: bool = False) -> Any:
    plan = Plan(layer_of=layer_indexer(model), mask=mask, kernel=kernel)
    with torch.inference_mode(), attention_active(model, plan):
        return model(input_ids=ids, use_cache=False, **({} if full else {"logits_to_keep": 1})).logits


def exactness(model: Any, tok: Any, device: torch.device, sparsity: float) -> None:
    n = 1024
    ids = ids_of(tok, n, device)
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


def whole_model(model: Any, tok: Any, n: int, device: torch.device, sparsity: float) -> None:
    ids = ids_of(tok, n, device)
    mask = masks.resolve("sliding_window", n, sparsity)

    def dense() -> object:
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False, logits_to_keep=1)

    unit = synced_seconds(dense)
    print(f"   whole model, sliding_window at {sparsity}, nothing captured: dense forward {1000 * unit:.1f} ms", end="")
    for kernel in ("flex", "sdpa", "eager"):
        took = synced_seconds(lambda kernel=kernel: sparse_forward(model, ids, mask, kernel))
        print(f"; {kernel} {1000 * took:.1f} ms ({unit / took:.2f} x)", end="")
    print()


def one_call(model: Any, tok: Any, n: int, device: torch.device, sparsity: float) -> None:
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = config.hidden_size // heads
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(1, heads, n, dim, generator=g, device=device)
    k = torch.randn(1, kv_heads, n, dim, generator=g, device=device)
    v = torch.randn(1, kv_heads, n, dim, generator=g, device=device)
    dense = synced_seconds(
        lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    )
    parts = []
    for mask_id in MASKS:
        keep = kernels.keep_on_random_scores(masks.resolve(mask_id, n, sparsity), n, heads, dim).to(device)
        flex = synced_seconds(lambda keep=keep: kernels.flex(q, k, v, keep, dim**-0.5))
        sdpa = synced_seconds(lambda keep=keep: kernels.sdpa(q, k, v, keep, dim**-0.5))
        eager = synced_seconds(lambda keep=keep: eager_masked(q, k, v, keep))
        parts.append(f"{mask_id} flex {dense / flex:.2f} x, sdpa {dense / sdpa:.2f} x, eager {dense / eager:.2f} x")
    print(f"   one attention call: dense SDPA {1000 * dense:.2f} ms; " + "; ".join(parts))


def comparisons(model: Any, tok: Any, n: int, device: torch.device, sparsity: float) -> None:
    run = (model, tok)
    text = aw.long_text(tok, n)
    aw.clear_cache()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    first = synced_once(lambda: aw.compare(run, text, "sink_window", sparsity, per_layer=False, continuation_tokens=0))
    spent: dict[str, float] = {}
    start = time.perf_counter()
    res = None
    for progress in stages(run, text, "sink_window", sparsity - 0.05, per_layer=False, continuation_tokens=0):
        now = time.perf_counter()
        spent[progress.stage] = spent.get(progress.stage, 0.0) + now - start
        start = now
        res = progress.result
    assert res is not None
    change = sum(spent.values())
    layer, q0 = res.n_layers // 2, n // 2
    head = synced_once(lambda: res.attention(layer, "sparse", head=0))
    zoom = synced_once(lambda: res.maps(layer, region=(q0, q0 + 512, q0 - 256, q0 + 256)))
    peak = torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else math.nan
    m = res.metrics
    by_stage = ", ".join(f"{stage} {s:.2f} s" for stage, s in spent.items())
    print(
        f"   compare, sink_window: first (dense + sparse pass) {first:.2f} s; mask change {change:.2f} s ({by_stage})"
    )
    print(f"   one head's full map {head:.2f} s, a 512 x 512 zoom {zoom:.2f} s; peak device memory {peak:.2f} GB")
    if not getattr(model, "random_weights", False):
        print(f"   achieved {m.achieved_sparsity:.4f}, dense ppl {m.dense_ppl:.3f}, sparse ppl {m.sparse_ppl:.3f}")
    else:
        print(f"   achieved {m.achieved_sparsity:.4f} (random weights: perplexities not shown)")


def widget(model: Any, tok: Any, n: int, device: torch.device, sparsity: float) -> None:
    """The widget on the device (a dummy comm, no browser): a slider move until it is idle, and no error."""
    try:  # a comm that records nothing; without ipykernel the widget gets comm's own dummy anyway
        from ipywidgets.widgets.tests.utils import setup_test_comm

        setup_test_comm()
    except ImportError:
        pass
    w = AttentionDiffWidget((model, tok), text=aw.long_text(tok, n), mask="sink_window", sparsity=sparsity)
    w.wait(None)
    took = synced_once(lambda: (setattr(w, "sparsity", sparsity - 0.05), w.wait(None)))
    error = w.status.get("error") or "none"
    print(f"   widget: a slider move until idle (per-layer curve off above 2048 tokens) {took:.2f} s; error: {error}")
    w.close()


PARTS = (whole_model, one_call, comparisons, widget)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--weights", choices=("default", "random"), default="default")
    parser.add_argument("--config-dir", type=Path, default=None)
    parser.add_argument("--parts", nargs="+", default=[p.__name__ for p in PARTS], help="of part 2, these only")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {name}, flex usable: {kernels.flex_usable(device.type)}")
    model, tok = load(args.weights, args.config_dir, device)
    exactness(model, tok, device, args.sparsity)
    print("2. by length (x: dense time / that path's time; above 1: faster than dense)")
    for n in args.lengths:
        print(f" T = {n}")
        for part in (p for p in PARTS if p.__name__ in args.parts):
            try:  # one part failing says where, and the others still run
                part(model, tok, n, device, args.sparsity)
            except Exception:  # noqa: BLE001
                print(traceback.format_exc(limit=-6))


if __name__ == "__main__":
    main()
