"""Adapting a model to a sparse mask: LoRA adapters (``peft``) trained under the mask by self-distillation, and
cached on disk.

The question it answers: a mask forced on a model trained densely shows degradation; what would a model *trained*
under the mask do? DeepSeek-V3.2 made DSA by continuing to train a dense model under its mask; :func:`adapt` does
the same in miniature. The student is a copy of the model with LoRA adapters on its attention projections, run
with the mask in every layer exactly as the sparse pass applies it (the same :func:`~.capture.attention_active`
path, the same per-layer budgets for score-dependent masks). The teacher is the user's model itself, dense and
untouched. The loss is KL(teacher's next-token distribution ‖ student's), averaged over the positions of a text.

Training data: by default text the dense model writes itself, continuing the prompts in
:data:`~.texts.ADAPTATION_PROMPTS` (sampled with a seed, cached), so that the student is distilled on the teacher's
own distribution and nothing is downloaded; texts passed by the user are added. The text a comparison evaluates
must not be among them (:meth:`Adaptation.trained_on`, checked by :func:`~attnsparse_widget.compare`).

:func:`adaptation_steps` is the generator, its settings one :class:`Training` (the pipeline's "adapting" stage
iterates it, and the widget's Cancel closes it); :func:`adapt` runs it to the end with a tqdm bar. Nothing is
written until training has finished, and then in one atomic rename, so an interrupted run leaves no half-written
file; the user's model is only ever run, never changed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
import warnings
import weakref
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.pytorch_utils import Conv1D

from . import masks as mask_library
from .capture import Plan, attention_active
from .files import write_atomically
from .introspect import check_supported, layer_indexer, layer_stack
from .models import PathLike, cache_root, display_name, resolve_model
from .passes import model_is_causal
from .texts import ADAPTATION_PROMPTS
from .tokens import max_positions

Tensor = torch.Tensor
FORMAT_VERSION = 1  # part of every cache key: bump when training changes in a way that changes the adapters
DEFAULT_STEPS = 200
DEFAULT_RANK = 16
DEFAULT_LR = 1e-3
DEFAULT_MAX_TOKENS = 128  # training texts are cut to this many tokens (a step's cost grows with it)
SAMPLE_TOKENS = 112  # new tokens the model writes per prompt for the default training data
STEP_FORWARDS = 3.5  # a training step costs about this many plain forward passes (benchmarks/bench_adapt.py: 3.4-3.6)


@dataclass(frozen=True)
class AdaptProgress:
    """Where an adaptation is: ``done`` of ``total`` units of ``phase`` ("samples": the model writing its training
    texts; "training": optimiser steps; "cached": read from disk). ``result`` is set on the last item."""

    phase: str
    done: int
    total: int
    loss: float | None = None
    elapsed: float = 0.0
    result: Adaptation | None = None


@dataclass
class Adaptation:
    """LoRA adapters trained under a mask (:func:`adapt`), and how they were trained.

    ``losses`` is the training curve (KL per step, nats per position); ``texts`` the training texts as tokenised
    and cut to ``max_tokens``. :meth:`model` gives the adapted model (a copy of the base model with the adapters
    merged into its attention projections); pass the adaptation to :func:`~attnsparse_widget.compare` as
    ``adapted=`` to add the adapted pass to a comparison.
    """

    model_name: str
    fingerprint: str  # of the base model's config and weights: an adaptation applies to that model only
    mask_id: str
    mask_params: dict[str, Any]  # the user's mask parameters (the budget is sized per text from ``sparsity``)
    sparsity: float
    steps: int
    seed: int
    rank: int
    alpha: float
    targets: list[str]  # the attention projections that carry adapters (full module names)
    lr: float
    max_tokens: int
    texts: list[str]
    n_tokens: int  # training tokens, all texts once
    losses: list[float]
    seconds: float  # wall time of the training (of the first run when read from the cache)
    adapters: dict[str, Tensor] = field(repr=False)  # peft's state dict of the LoRA weights
    path: Path | None = None  # the cache file
    from_cache: bool = False
    _built: tuple[weakref.ref[PreTrainedModel], PreTrainedModel] | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        first, last = (self.losses[0], self.losses[-1]) if self.losses else (math.nan, math.nan)
        return (
            f"Adaptation({self.mask_id} at {self.sparsity:.0%} on {self.model_name}: {self.steps} steps, LoRA rank "
            f"{self.rank} on {len(self.targets)} projections, {len(self.texts)} texts / {self.n_tokens} tokens, "
            f"loss {first:.3g} → {last:.3g}, {self.seconds:.0f} s{', from cache' if self.from_cache else ''})"
        )

    def summary(self) -> str:
        """A readable account of what was trained, on what, and how the loss went."""
        params = ", ".join(f"{k}={v}" for k, v in self.mask_params.items())
        marks = sorted({0, len(self.losses) // 4, len(self.losses) // 2, len(self.losses) - 1})
        curve = ", ".join(f"step {i + 1}: {self.losses[i]:.3g}" for i in marks if 0 <= i < len(self.losses))
        lines = [
            f"Adapted {self.model_name} to {self.mask_id}({params}) at sparsity {self.sparsity:.0%}",
            f"  LoRA rank {self.rank}, alpha {self.alpha:g}, on {len(self.targets)} attention projections "
            f"({', '.join(sorted({t.rsplit('.', 1)[-1] for t in self.targets}))})",
            f"  {self.steps} steps of AdamW at lr {self.lr:g}, seed {self.seed}, one text per step",
            f"  data: {len(self.texts)} texts, {self.n_tokens} tokens (cut to {self.max_tokens} tokens each)",
            f"  objective: KL(dense model ‖ adapted model under the mask), per position; loss {curve}",
            f"  trained in {self.seconds:.1f} s" + (f"; read from {self.path}" if self.from_cache else ""),
        ]
        return "\n".join(lines)

    def trained_on(self, text: str) -> bool:
        """Whether ``text`` overlaps the training data: it contains a training text, or is contained in one
        (whitespace-insensitive)."""
        probe = _squash(text)
        if not probe:
            return False
        return any(probe in t or t in probe for t in map(_squash, self.texts))

    def check_held_out(self, text: str) -> None:
        """Raise ValueError when ``text`` is among the training texts (:meth:`trained_on`): its adapted perplexity
        would measure memorisation."""
        if self.trained_on(text):
            raise ValueError(
                "this text is among the adaptation's training texts, so its adapted perplexity would measure "
                "memorisation, not what training under the mask recovers: compare on a held-out text, or adapt "
                "without this text"
            )

    def check_applies(self, base: PreTrainedModel) -> None:
        """Raise ValueError unless ``base`` is the model these adapters were trained on (same config and weights)."""
        if model_fingerprint(base) != self.fingerprint:
            raise ValueError(
                f"this adaptation was trained on another model ({self.model_name}, weights {self.fingerprint[:12]}), "
                f"not on this {display_name(base)}: adapt it itself, aw.adapt(model, ...)"
            )

    def model(self, base: PreTrainedModel) -> PreTrainedModel:
        """The adapted model: a copy of ``base`` with the adapters merged into its attention projections (its other
        weights share ``base``'s memory; nothing of ``base`` is changed). Built once per base model."""
        if self._built is not None and self._built[0]() is base:
            return self._built[1]
        self.check_applies(base)
        student, peft_model = _student(base, self.targets, self.rank, self.alpha)
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(peft_model, self.adapters)
        merged: PreTrainedModel = peft_model.merge_and_unload()
        merged.attnsparse_name = f"{self.model_name} + adapters ({self.mask_id} {self.sparsity:.0%})"  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
        self._built = (weakref.ref(base), merged)
        return merged


# --------------------------------------------------------------------------------------------------- the student
def attention_projections(model: PreTrainedModel) -> list[str]:
    """Full names of the linear projections of every attention module in the model's blocks (``q_proj``...``o_proj``
    for Llama-like models, ``c_attn`` and ``c_proj`` for GPT-2)."""
    stack = layer_stack(model)
    if stack is None:
        raise ValueError(f"{type(model).__name__}: its list of blocks was not found, so nothing can be adapted")
    prefix = next(name for name, module in model.named_modules() if module is stack)
    found = []
    for i, block in enumerate(stack):
        for name, module in block.named_modules():
            if "attention" not in type(module).__name__.lower() and not name.endswith(("attn", "attention")):
                continue
            for child, sub in module.named_children():
                if isinstance(sub, (nn.Linear, Conv1D)):
                    found.append(f"{prefix}.{i}.{name}.{child}" if name else f"{prefix}.{i}.{child}")
    return sorted(set(found))


def _choose_targets(model: PreTrainedModel, targets: Sequence[str] | None) -> list[str]:
    available = attention_projections(model)
    if targets is None:
        chosen = available
    else:
        if isinstance(targets, str):
            targets = [targets]
        short = sorted({name.rsplit(".", 1)[-1] for name in available})
        unknown = [t for t in targets if t not in short]
        if unknown:
            raise ValueError(f"targets {unknown} are not attention projections of this model; choose from {short}")
        chosen = [name for name in available if name.rsplit(".", 1)[-1] in targets]
    if not chosen:
        raise ValueError(f"{type(model).__name__} has no linear attention projections to put adapters on")
    return chosen


def _student(
    base: PreTrainedModel, targets: list[str], rank: int, alpha: float, seed: int = 0
) -> tuple[PreTrainedModel, Any]:
    """A copy of ``base`` with fresh LoRA adapters on ``targets`` (initialised from ``seed``): (the model the
    adapters live in, the peft wrapper). The copy's weights outside the targets share ``base``'s memory as new,
    frozen parameters (``base``'s own parameters and their flags are untouched); the targets' weights are copied,
    because merging the adapters writes into them."""
    from peft import LoraConfig, get_peft_model

    target_params = {id(p) for name in targets for p in base.get_submodule(name).parameters()}
    memo: dict[int, Any] = {}
    for p in base.parameters():
        if id(p) not in target_params and id(p) not in memo:
            memo[id(p)] = nn.Parameter(p.detach(), requires_grad=False)
    tokenizer = getattr(base, "attnsparse_tokenizer", None)
    if tokenizer is not None:
        memo[id(tokenizer)] = tokenizer
    student = copy.deepcopy(base, memo)
    for p in student.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int; LoRA's scale alpha / r takes any number
        lora_dropout=0.0,
        target_modules=targets,
        fan_in_fan_out=any(isinstance(student.get_submodule(t), Conv1D) for t in targets),
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft reads transformers' deprecated checkpointing flag
        torch.manual_seed(seed)
        peft_model = get_peft_model(student, config)
    inner: PreTrainedModel = peft_model.get_base_model()  # type: ignore[assignment]  # the model it wraps
    return inner, peft_model


# --------------------------------------------------------------------------------------------------- the data
def own_samples(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    prompts: Sequence[str] = ADAPTATION_PROMPTS,
    new_tokens: int = SAMPLE_TOKENS,
    cache_dir: PathLike | None = None,
) -> list[str]:
    """The model's own continuations of ``prompts`` (nucleus sampling, p = 0.95, from ``seed``), each with its
    prompt; cached on disk per model fingerprint, prompts, seed and length."""
    key = _digest(
        {
            "v": FORMAT_VERSION,
            "model": model_fingerprint(model),
            "prompts": list(prompts),
            "seed": seed,
            "n": new_tokens,
        }
    )
    path = cache_root(cache_dir) / "adapters" / f"samples-{key[:20]}.json"
    if path.is_file():
        try:
            return list(json.loads(path.read_text())["texts"])
        except (OSError, ValueError, KeyError):
            pass  # unreadable: make them again
    encoded = [tokenizer(p, return_tensors="pt").input_ids[0].tolist() for p in prompts]
    width = max(len(e) for e in encoded)
    limit = max_positions(model)
    new_tokens = min(new_tokens, limit - width) if limit is not None else new_tokens
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else 0
    ids = torch.tensor([[pad] * (width - len(e)) + list(e) for e in encoded])  # left padding: all end together
    attention = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    eos = getattr(tokenizer, "eos_token_id", None)
    with (
        torch.random.fork_rng(devices=[]),
        torch.inference_mode(),
        attention_active(model, Plan(layer_of=layer_indexer(model))),
    ):
        torch.manual_seed(seed)
        out = model.generate(  # type: ignore[operator]  # GenerationMixin.generate, mistyped through nn.Module
            input_ids=ids.to(model.device),
            attention_mask=attention.to(model.device),
            do_sample=True,
            top_p=0.95,
            top_k=0,
            temperature=1.0,
            max_new_tokens=new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
        )
    texts: list[str] = []
    for prompt, row in zip(prompts, out[:, width:].tolist(), strict=True):
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(prompt + str(tokenizer.decode(row, skip_special_tokens=True)))
    write_atomically(path, json.dumps({"prompts": list(prompts), "seed": seed, "texts": texts}).encode())
    return texts


# --------------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Training:
    """How an adaptation is trained: every setting of :func:`adapt` but the model, the mask and its sparsity (see
    there for each). One object carries them to :func:`adaptation_steps` and to the pipeline's "adapting" stage
    (:attr:`~attnsparse_widget.pipeline.Request.train`)."""

    steps: int = DEFAULT_STEPS
    texts: Sequence[str] | None = None
    seed: int = 0
    rank: int = DEFAULT_RANK
    alpha: float | None = None
    targets: Sequence[str] | None = None
    lr: float = DEFAULT_LR
    max_tokens: int = DEFAULT_MAX_TOKENS
    own_data: bool = True
    cache: bool = True
    cache_dir: PathLike | None = None


def adaptation_steps(
    model: Any = None,
    mask: str = "sink_window",
    sparsity: float = 0.8,
    training: Training = Training(),  # noqa: B008  # frozen: one shared default is safe
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    **mask_params: Any,
) -> Generator[AdaptProgress, None, None]:
    """:func:`adapt` as a generator of :class:`AdaptProgress` (its settings in ``training``); the last item's
    ``result`` is the :class:`Adaptation`. Closing it early abandons the training: nothing is written, nothing
    changed."""
    t = training
    steps, texts, seed, rank, alpha, targets, lr, max_tokens, own_data, cache, cache_dir = (
        t.steps,
        t.texts,
        t.seed,
        t.rank,
        t.alpha,
        t.targets,
        t.lr,
        t.max_tokens,
        t.own_data,
        t.cache,
        t.cache_dir,
    )
    model, tok = resolve_model(model, tokenizer)
    check_supported(model)
    _check_arguments(model, mask, sparsity, steps, rank, lr, max_tokens, mask_params)
    chosen = _choose_targets(model, targets)
    alpha = float(2 * rank if alpha is None else alpha)

    data: list[str] = []
    if own_data:
        yield AdaptProgress("samples", 0, 1)
        data += own_samples(model, tok, seed, cache_dir=cache_dir)
    data += [t for t in (texts or []) if isinstance(t, str) and t.strip()]
    if texts is not None and (isinstance(texts, str) or not all(isinstance(t, str) for t in texts)):
        raise TypeError("texts must be a list of strings")
    if not data:
        raise ValueError("no training texts: pass texts=[...] or leave own_data=True")
    limit = max_positions(model)
    cut_at = min(max_tokens, limit) if limit is not None else max_tokens
    encoded = [tok(t, return_tensors="pt").input_ids[:, :cut_at] for t in data]
    encoded = [e for e in encoded if e.shape[1] >= 2]
    if not encoded:
        raise ValueError("every training text is shorter than two tokens")
    cut = [str(tok.decode(e[0], skip_special_tokens=True)) for e in encoded]

    fingerprint = model_fingerprint(model)
    settings = {
        "v": FORMAT_VERSION,
        "model": fingerprint,
        "mask": mask,
        "params": {k: repr(v) for k, v in sorted(mask_params.items())},
        "sparsity": sparsity,
        "steps": steps,
        "seed": seed,
        "rank": rank,
        "alpha": alpha,
        "targets": chosen,
        "lr": lr,
        "max_tokens": max_tokens,
        "data": _digest([e[0].tolist() for e in encoded]),
    }
    key = _digest(settings)
    path = cache_root(cache_dir) / "adapters" / f"{_slug(display_name(model))}-{mask}-{key[:20]}.safetensors"

    def made(adapters: dict[str, Tensor], losses: list[float], seconds: float, from_cache: bool) -> Adaptation:
        return Adaptation(
            model_name=display_name(model),
            fingerprint=fingerprint,
            mask_id=mask,
            mask_params=dict(mask_params),
            sparsity=sparsity,
            steps=steps,
            seed=seed,
            rank=rank,
            alpha=alpha,
            targets=chosen,
            lr=lr,
            max_tokens=max_tokens,
            texts=cut,
            n_tokens=sum(e.shape[1] for e in encoded),
            losses=losses,
            seconds=seconds,
            adapters=adapters,
            path=path if cache else None,
            from_cache=from_cache,
        )

    if cache and path.is_file():
        found = _read(path)
        if found is not None:
            adapters, meta = found
            yield AdaptProgress("cached", 1, 1, result=made(adapters, meta["losses"], meta["seconds"], True))
            return

    start = time.perf_counter()  # the training's wall time (the model's samples are made, or read, before)
    student, peft_model = _student(model, chosen, rank, alpha, seed)
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    order = _order(len(encoded), steps, seed)
    teacher_plan = Plan(layer_of=layer_indexer(model))
    layer_of = layer_indexer(student)
    causal = True
    losses: list[float] = []
    yield AdaptProgress("training", 0, steps)
    for step, index in enumerate(order):
        ids = encoded[index].to(student.device)
        with torch.inference_mode(), attention_active(model, teacher_plan):
            teacher = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        teacher = teacher.clone()  # out of inference mode, to be used in a graph
        resolved = mask_library.resolve(mask, ids.shape[1], sparsity, causal, warn=False, **mask_params)
        target = sparsity if mask_library.calibrated_per_layer(resolved) else None
        plan = Plan(layer_of=layer_of, mask=resolved, target_sparsity=target, seed=seed)
        with attention_active(student, plan):
            logits = student(input_ids=ids).logits[0].float()
        if step == 0 and not plan.first_changed:
            raise ValueError(_drops_nothing(mask, sparsity, ids.shape[1]))
        log_q = torch.log_softmax(logits, dim=-1)
        loss = (teacher.exp() * (teacher - log_q)).sum(-1).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
        yield AdaptProgress("training", step + 1, steps, losses[-1], time.perf_counter() - start)

    from peft import get_peft_model_state_dict

    adapters = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    seconds = time.perf_counter() - start
    if cache:
        _write(path, adapters, {"losses": losses, "seconds": seconds, "settings": settings})
    result = made(adapters, losses, seconds, False)
    yield AdaptProgress("training", steps, steps, losses[-1], seconds, result)


def adapt(
    model: Any = None,
    mask: str = "sink_window",
    sparsity: float = 0.8,
    *,
    steps: int = DEFAULT_STEPS,
    texts: Sequence[str] | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    seed: int = 0,
    progress: bool = True,
    rank: int = DEFAULT_RANK,
    alpha: float | None = None,
    targets: Sequence[str] | None = None,
    lr: float = DEFAULT_LR,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    own_data: bool = True,
    cache: bool = True,
    cache_dir: PathLike | None = None,
    **mask_params: Any,
) -> Adaptation:
    """Train LoRA adapters so that ``model`` under ``mask`` at ``sparsity`` behaves like ``model`` dense.

    A copy of the model gets LoRA adapters (``peft``) on its attention projections and is trained with the mask
    applied in every layer, as the sparse pass of :func:`~attnsparse_widget.compare` applies it, to match the dense
    model's next-token distributions: the loss is KL(dense ‖ adapted under the mask) per position
    (self-distillation; the teacher is ``model`` itself, which is only run, never changed). One text per step,
    AdamW with a linear warm-up (the first tenth of the steps) and a linear decay to 0, gradients clipped at norm 1.

    Args:
        model: as for :func:`~attnsparse_widget.compare` (None: the embedded default model). Causal language models
            only: an encoder has no next-token distribution to distil.
        mask: a mask id (``masks.available()``); ``sparsity``: the fraction of allowed pairs it drops, sized for
            each training text's length as the sparse pass sizes it; ``**mask_params``: its other parameters.
        steps: optimiser steps (>= 1).
        texts: training texts of your own, added to the model's own samples (``own_data=False``: used alone).
        seed: seeds the model's samples, the adapters' initialisation and the order of the texts.
        progress: show a tqdm progress bar.
        rank, alpha: LoRA rank and scaling numerator (default ``alpha = 2 * rank``).
        targets: short names of the attention projections to adapt (e.g. ``["q_proj", "k_proj"]``); None: all of
            them (``attention_projections(model)``).
        lr: AdamW's peak learning rate.
        max_tokens: training texts are cut to this many tokens.
        cache: read and write the adapters under the cache directory (``$ATTNSPARSE_CACHE_DIR`` or the user cache),
            keyed by the model's weights, the mask, its parameters, sparsity, steps, seed, the data and the LoRA
            settings: the same call a second time is read back, not trained.
        cache_dir: the cache directory (see :func:`~attnsparse_widget.models.cache_root`).

    Returns:
        an :class:`Adaptation` (training curve, wall time, data size); pass it as ``compare(..., adapted=...)``.
    """
    from tqdm.auto import tqdm

    bar = None
    last: AdaptProgress | None = None
    try:
        training = Training(steps, texts, seed, rank, alpha, targets, lr, max_tokens, own_data, cache, cache_dir)
        for last in adaptation_steps(model, mask, sparsity, training, tokenizer=tokenizer, **mask_params):
            if progress and last.phase == "training":
                if bar is None:
                    bar = tqdm(total=last.total, desc=f"adapting to {mask}", unit="step")
                bar.n = last.done
                if last.loss is not None:
                    bar.set_postfix(loss=f"{last.loss:.4f}", refresh=False)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    assert last is not None and last.result is not None
    return last.result


def estimate_seconds(model: PreTrainedModel, steps: int, max_tokens: int = DEFAULT_MAX_TOKENS) -> float:
    """About how long ``steps`` training steps take: one dense forward at ``max_tokens`` tokens, timed now, times
    :data:`STEP_FORWARDS` per step."""
    ids = torch.zeros(1, max_tokens, dtype=torch.long, device=model.device)
    with torch.inference_mode(), attention_active(model, Plan(layer_of=layer_indexer(model))):
        model(input_ids=ids[:, :8])  # warm-up
        start = time.perf_counter()
        model(input_ids=ids)
        forward = time.perf_counter() - start
    return steps * STEP_FORWARDS * forward


# --------------------------------------------------------------------------------------------------- helpers
def _check_arguments(
    model: PreTrainedModel,
    mask: Any,
    sparsity: Any,
    steps: Any,
    rank: Any,
    lr: Any,
    max_tokens: Any,
    mask_params: dict[str, Any],
) -> None:
    if not model_is_causal(model) or getattr(model, "get_output_embeddings", lambda: None)() is None:
        raise ValueError(
            f"adapt needs a causal language model (it distils next-token distributions); {type(model).__name__} "
            f"has none: pass a decoder such as the default model"
        )
    if not isinstance(mask, str):
        raise TypeError(f"mask must be a mask id (str), e.g. 'sink_window'; got {type(mask).__name__}")
    cls = mask_library.get(mask, **mask_params)  # unknown ids and parameters raise with the valid ones
    if cls.budget is not None and cls.budget in mask_params:
        raise ValueError(
            f"pass the sparsity, not {cls.budget}=: the budget is sized from it for each training text's length"
        )
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be a number in (0, 1): the fraction of pairs the mask drops; got {sparsity!r}")
    if not cls.score_dependent and isinstance(max_tokens, int) and max_tokens >= 2:
        keep = mask_library.build(mask, max_tokens, sparsity, **mask_params)
        if keep.sum() >= max_tokens * (max_tokens + 1) // 2:  # every causal pair: nothing to adapt to
            raise ValueError(_drops_nothing(mask, sparsity, max_tokens))
    for name, value, low in (("steps", steps, 1), ("rank", rank, 1), ("max_tokens", max_tokens, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")


def _drops_nothing(mask: str, sparsity: float, n_tokens: int) -> str:
    return (
        f"mask {mask!r} at sparsity {sparsity} drops no query-key pair on the training texts ({n_tokens} tokens): "
        f"there is nothing to adapt to; raise the sparsity or choose another mask"
    )


def _order(n: int, steps: int, seed: int) -> list[int]:
    """Which text each step trains on: shuffled epochs over the ``n`` texts, from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps:
        order += torch.randperm(n, generator=generator).tolist()
    return order[:steps]


_fingerprints: weakref.WeakKeyDictionary[nn.Module, tuple[int, str]] = weakref.WeakKeyDictionary()


def model_fingerprint(model: PreTrainedModel) -> str:
    """A digest of the model's config and every weight (remembered while the weights are not modified)."""
    version = sum(p._version for p in model.parameters())
    known = _fingerprints.get(model)
    if known is not None and known[0] == version:
        return known[1]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(model.config.to_json_string(use_diff=False).encode())
    for name, p in model.state_dict().items():
        digest.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        digest.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    value = digest.hexdigest()
    _fingerprints[model] = (version, value)
    return value


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name.split("/")[-1])[:40]


def _squash(text: str) -> str:
    return " ".join(text.split())


def _write(path: Path, adapters: dict[str, Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save

    write_atomically(path, save(adapters, metadata={"attnsparse": json.dumps(meta)}))


def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """The adapters and their record, or None when the file cannot be read (it is trained again and replaced)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["attnsparse"])
            adapters = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  # safe_open is not a mapping
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        return None
    return adapters, meta
