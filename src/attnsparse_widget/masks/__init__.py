"""The mask library: every sparse pattern by id, with its rule, paper and parameters.

>>> from attnsparse_widget import masks
>>> [m["id"] for m in masks.available()][:3]
['dense', 'sliding_window', 'dilated_window']
>>> masks.build("sliding_window", 6, window=2).astype(int)[3]
array([0, 0, 1, 1, 0, 0])
"""

from __future__ import annotations

import difflib
import inspect
import textwrap
import warnings
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, Literal

import numpy as np
import torch

from .base import (
    LONG_TEXT_TOKENS,
    SPARSITY_TOLERANCE,
    Mask,
    MaskContext,
    SparsityOutOfReach,
    calibrated_per_layer,
    check_sparsity,
    sparsity_of,
    sparsity_shortfall,
)
from .bigbird import BigBird
from .blocks import NSA, BlockTopK, MoBA, Quest
from .selection import DSA, H2O, TopK, VerticalSlash
from .sparse_transformer import Fixed, Strided
from .windows import Chunked, Dense, DilatedWindow, GlobalLocal, SinkWindow, SlidingWindow

_ORDER: tuple[type[Mask], ...] = (
    Dense,
    SlidingWindow,
    DilatedWindow,
    Chunked,
    SinkWindow,
    GlobalLocal,
    BigBird,
    Strided,
    Fixed,
    TopK,
    DSA,
    NSA,
    VerticalSlash,
    BlockTopK,
    MoBA,
    H2O,
    Quest,
)
REGISTRY: dict[str, type[Mask]] = {cls.id: cls for cls in _ORDER}

__all__ = [
    "LONG_TEXT_TOKENS",
    "REGISTRY",
    "SPARSITY_TOLERANCE",
    "Mask",
    "MaskContext",
    "SparsityOutOfReach",
    "available",
    "build",
    "calibrated_per_layer",
    "get",
    "ids",
    "paper_sizes",
    "resolve",
    "sparsity_of",
    "sparsity_shortfall",
]


def ids() -> list[str]:
    """Every mask id, in the library's teaching order."""
    return list(REGISTRY)


def available() -> list[dict[str, Any]]:
    """One record per mask: id, one-line description, paper, budget parameter, and parameters with defaults."""
    out = []
    for cls in REGISTRY.values():
        out.append(
            {
                "id": cls.id,
                "description": cls.description,
                "paper": cls.paper,
                "rule": inspect.getdoc(cls) or "",
                "budget": cls.budget,
                "score_dependent": cls.score_dependent,
                "supports_encoder": cls.supports_encoder,
                "params": {f.name: f.default for f in fields(cls)},
                "paper_params": dict(cls.paper_params),
            }
        )
    return out


def get(name: str | Mask, **params: Any) -> Mask:
    """The pattern ``name`` with ``params`` (unknown ids and parameters get a message listing the valid ones)."""
    if isinstance(name, Mask):
        if params:
            raise TypeError(f"pass parameters to the mask's constructor, not alongside an instance: got {params}")
        return name
    if not isinstance(name, str):
        raise TypeError(f"mask must be a mask id (str) or a Mask instance, got {type(name).__name__}")
    cls = REGISTRY.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown mask {name!r}.{hint} Valid ids: {', '.join(REGISTRY)}")
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - valid)
    if unknown:
        listed = ", ".join(sorted(valid)) or "none"
        raise ValueError(f"mask {name!r} has no parameter {', '.join(map(repr, unknown))}; its parameters: {listed}")
    return cls(**params)


def resolve(
    name: str | Mask,
    n_keys: int,
    sparsity: float | str | None,
    causal: bool = True,
    *,
    warn: bool = True,
    **params: Any,
) -> Mask:
    """The pattern with its budget set: from ``sparsity`` if given, else from ``params``/defaults; ``"paper"``
    (:data:`PAPER`): every parameter, the budget included, from the paper (:func:`at_paper`).

    Passing both ``sparsity`` and the budget parameter is ambiguous and raises. From ``LONG_TEXT_TOKENS`` keys on,
    parameters not passed take the paper's sizes where the defaults are shrunk for short texts
    (:func:`paper_sizes`). ``warn=False``: no :class:`SparsityOutOfReach` warning from this estimate (for a
    budget the sparse pass calibrates again on the real scores, :func:`calibrated_per_layer`, and judges by its
    outcome, :func:`sparsity_shortfall`).
    """
    if sparsity == PAPER:
        return at_paper(name, n_keys, **params)[0]
    mask = get(name, **{**paper_sizes(name, n_keys, params), **params})
    if sparsity is None:
        return mask
    fraction = check_sparsity(sparsity)
    if mask.budget is not None and mask.budget in params:
        raise ValueError(
            f"pass either sparsity={sparsity} or {mask.budget}={params[mask.budget]} for {mask.id!r}, not both: "
            f"the sparsity slider sets {mask.budget}"
        )
    return mask.with_sparsity(fraction, n_keys, causal, warn=warn)


PAPER: Literal["paper"] = "paper"  # sparsity="paper": the papers' own parameters, budget included (at_paper)


def at_paper(name: str | Mask, n_keys: int, **params: Any) -> tuple[Mask, str | None]:
    """The pattern as its paper ships it, for a text of ``n_keys`` tokens: every parameter of
    ``Mask.paper_params``, the budget included (DSA's k = 2048, NSA's 16 blocks of 64 and a 512-key window,
    Quest's 1024-token budget, StreamingLLM's 4 sinks in a 2048-token cache), ``params`` overriding them; and what
    to tell the user, or None: a pattern whose paper gives no sizes takes its defaults, and a text no longer than
    the paper's budget keeps every pair that budget covers (both are said, with the values used)."""
    mask = get(name)
    paper = dict(type(mask).paper_params)
    sized = get(mask.id, **{**paper, **params})
    used = ", ".join(f"{f.name}={getattr(sized, f.name)}" for f in fields(sized))
    if not paper:
        return sized, f"{mask.id} has no budget from its paper: sparsity='paper' used its defaults ({used})"
    budget = type(mask).budget
    if budget is not None and budget in paper and int(getattr(sized, budget)) >= n_keys:
        return sized, (
            f"the text ({n_keys} tokens) is no longer than {mask.id}'s paper budget ({budget}="
            f"{getattr(sized, budget)}): every pair within it is kept ({used})"
        )
    return sized, None


def paper_sizes(name: str | Mask, n_keys: int, params: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The paper's sizes a mask takes at ``n_keys`` keys for the parameters not in ``params``: the values of
    ``Mask.paper_params`` that differ from the defaults (shrunk for short texts), the budget aside, from
    :data:`LONG_TEXT_TOKENS` on; none below (nor for a mask instance)."""
    if isinstance(name, Mask) or name not in REGISTRY or n_keys < LONG_TEXT_TOKENS:
        return {}
    cls = REGISTRY[name]
    defaults = {f.name: f.default for f in fields(cls)}
    return {
        k: v for k, v in cls.paper_params.items() if k != cls.budget and v != defaults[k] and k not in (params or {})
    }


def build(
    name: str | Mask,
    seq_len: int,
    sparsity: float | None = None,
    scores: Any = None,
    causal: bool = True,
    *,
    layer: int = 0,
    n_heads: int = 1,
    seed: int = 0,
    **params: Any,
) -> np.ndarray:
    """The final boolean keep-mask of pattern ``name`` over ``seq_len`` tokens.

    Returns ``[T, T]``, or ``[H, T, T]`` when the pattern differs per head (``scores`` given as ``[H, T, T]``, or a
    head-dependent pattern with ``n_heads > 1``). Score-dependent patterns need ``scores`` (attention logits); with
    a ``sparsity``, their budget is sized on these scores (:meth:`Mask.budget_for_scores`, as a sparse pass sizes
    each layer's), and a request it cannot meet within 0.02 on them is warned about with what they gave.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, got {seq_len!r}")
    score_t = None
    if scores is not None:
        score_t = torch.as_tensor(np.asarray(scores), dtype=torch.float32)
        if score_t.dim() not in (2, 3) or tuple(score_t.shape[-2:]) != (seq_len, seq_len):
            raise ValueError(f"scores must have shape [T, T] or [H, T, T] with T={seq_len}, got {tuple(score_t.shape)}")
        n_heads = score_t.shape[0] if score_t.dim() == 3 else n_heads
    ctx = MaskContext(causal=causal, layer=layer, n_heads=n_heads, seed=seed)
    on_scores = sparsity is not None and score_t is not None
    mask = resolve(name, seq_len, sparsity, causal, warn=not on_scores, **params)
    calibrated = on_scores and calibrated_per_layer(mask)
    if calibrated:
        assert sparsity is not None and score_t is not None
        mask = mask.with_budget(mask.budget_for_scores(sparsity, score_t, ctx))
    keep = mask.keep(seq_len, scores=score_t, ctx=ctx)
    if on_scores and mask.budget is not None:
        assert sparsity is not None
        achieved = sparsity_of(keep, causal)
        budgets = {layer: mask.budget_value} if calibrated else None
        shortfall = sparsity_shortfall(mask, sparsity, achieved, seq_len, causal, budgets=budgets)
        if shortfall is not None:
            warnings.warn(shortfall, SparsityOutOfReach, stacklevel=2)
    if keep.shape[0] == 1 and (score_t is None or score_t.dim() == 2):
        keep = keep[0]
    return keep.cpu().numpy()


PAPER_TABLE_TOKENS = 8192  # the length MASKS.md shows the papers' parameters at (the default model's context)


def reference_markdown() -> str:
    """MASKS.md: every mask's rule, paper, parameters and slider mapping, from the docstrings (the one source)."""
    lines = [
        "# The masks",
        "",
        "Generated from the code by `python -m attnsparse_widget.masks > MASKS.md`; every rule below is the",
        "docstring of the class that implements it. Conventions (sparse-patterns.md §0): `i` is the query position,",
        "`j` the key position; the engine always applies `(M(i, j) & allowed(i, j)) | (i == j)`, where `allowed` is",
        "`j <= i` for causal models (plus the model's own padding and sliding-window mask), so no row is ever empty",
        "and no future key is ever kept. Sparsity = 1 − kept / allowed, measured on the mask actually applied.",
        "",
        "| id | budget (slider) | parameters (defaults) | encoder | description |",
        "|---|---|---|---|---|",
    ]
    for info in available():
        params = ", ".join(f"`{k}={v}`" for k, v in info["params"].items()) or "–"
        enc = "yes" if info["supports_encoder"] else "no"
        lines.append(f"| `{info['id']}` | {info['budget'] or '–'} | {params} | {enc} | {info['description']} |")
    lines += [
        "",
        f"## At the papers' own parameters, at {PAPER_TABLE_TOKENS} tokens",
        "",
        *textwrap.wrap(
            "The defaults above are sized for texts of a few hundred tokens, where a paper's own sizes drop nothing "
            f"or everything. At {PAPER_TABLE_TOKENS} tokens (the default model's full context) they act as "
            f"published. From {LONG_TEXT_TOKENS} tokens on, the sizes in bold are the defaults "
            '(`masks.paper_sizes`); the slider still sets the budget. `sparsity="paper"` (in `compare`, `show`, '
            "`sweep`, the widget's *paper* box and `--sparsity paper`) runs a mask at all of these, its budget "
            "included, and reports the sparsity that gives (`masks.at_paper`). Sparsity of score-dependent masks: on "
            "the surrogate scores of `Mask.realised_sparsity` (the budget fixes it for `dsa`; on a model it depends on "
            "the scores for the others).",
            110,
            break_on_hyphens=False,
        ),
        "",
        f"| id | the paper's parameters | sparsity at {PAPER_TABLE_TOKENS} | defaults for short texts |",
        "|---|---|---|---|",
    ]
    for info in available():
        paper = info["paper_params"]
        if not paper:
            continue
        sizes = paper_sizes(info["id"], LONG_TEXT_TOKENS)
        shown = ", ".join(f"**`{k}={v}`**" if k in sizes else f"`{k}={v}`" for k, v in paper.items())
        sparsity = get(info["id"], **paper).realised_sparsity(PAPER_TABLE_TOKENS)
        short = ", ".join(f"`{k}={info['params'][k]}`" for k in paper)
        lines.append(f"| `{info['id']}` | {shown} | {sparsity:.4f} | {short} |")
    for info in available():
        kind = "score-dependent (reads the layer's logits)" if info["score_dependent"] else "static (positions only)"
        lines += ["", f"## `{info['id']}`", "", f"*{info['paper']}* — {kind}.", "", info["rule"]]
    return "\n".join(lines) + "\n"
