"""``CostExplorer``: what one attention layer costs, as a picture of its tensors and operations (seed 003), driven
by a model's config, a batch of requests and, from a comparison, the real text length and the realised mask.

``aw.explore()`` opens it on the embedded default model; ``aw.explore("DeepSeek-V3")`` on a preset;
``aw.explore(config)`` on any transformers config or dict; ``aw.explore(res)`` on a comparison: its model's config,
its text's length and the keep-mask of its shown layer (counted as it is), next to the attention time measured on
this machine. The arithmetic is :mod:`.costs`'s; the browser draws what :func:`~.cost_graph.graph_payload` sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anywidget
import numpy as np
import traitlets as t

from . import costs
from .bundle import css, esm
from .contract import Empty, ExplorerGraph, ExplorerSettings
from .cost_graph import graph_payload, settings_of
from .export import svg_to_png
from .files import write_atomically

REALISED = "realised"  # the mask setting of an explorer opened on a comparison: its realised keep-mask
# the settings a preset sets (the rest, the batch and how it runs, stay when the preset changes)
MODEL_KEYS = ("variant", "hidden", "heads", "kv_heads", "head_dim", "layers", "rope", "q_lora_rank", "kv_lora_rank",
              "qk_nope", "qk_rope", "v_head", "index_heads", "index_head_dim", "index_topk")  # fmt: skip


@dataclass(frozen=True)
class PackedMask:
    """A keep-mask as the explorer holds it between changes: eight pairs a byte (``np.packbits`` along the keys),
    unpacked for each recost (50 ms for ``[9, 8192, 8192]``: 604 MB unpacked, 75 MB held)."""

    bits: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def of(cls, keep: np.ndarray) -> PackedMask:
        keep = np.asarray(keep, dtype=bool)
        bits = np.packbits(keep, axis=-1)
        bits.flags.writeable = False
        return cls(bits, keep.shape)

    def unpacked(self) -> np.ndarray:
        return np.unpackbits(self.bits, axis=-1, count=self.shape[-1]).view(bool)


class CostExplorer(anywidget.AnyWidget):
    """The cost explorer widget (see the module docstring). ``settings`` holds every control; ``state`` is a plain
    copy that ``aw.explore(**state)`` restores; ``export_svg`` / ``export_png`` write the picture."""

    _esm = esm()
    _css = css()
    _kind = t.Unicode("cost-explorer").tag(sync=True)
    settings = t.Dict().tag(sync=True)
    graph = t.Dict().tag(sync=True)
    error = t.Unicode("").tag(sync=True)

    def __init__(self, settings: ExplorerSettings, *, keep: np.ndarray | None = None,
                 measured: dict[str, float | None] | None = None, **kwargs: Any) -> None:  # fmt: skip
        self._keep = None if keep is None else PackedMask.of(keep)
        self._measured = measured
        super().__init__(settings=dict(settings), **kwargs)
        self._recost()

    @t.observe("settings")
    def _settings_changed(self, change: Any) -> None:
        old, new = dict(change["old"] or {}), dict(change["new"] or {})
        if new.get("preset") != old.get("preset") and new.get("preset") in costs.PRESETS:
            # another preset: its dims, the batch and the rest of the settings kept
            model = settings_of(new["preset"])
            self.settings = {**new, **{k: model[k] for k in MODEL_KEYS}}  # type: ignore[literal-required]
            return  # observed again with the preset's dims
        old.pop("selected", None), new.pop("selected", None)
        if old != new:  # a click only selects: the costs stay
            self._recost()

    def _recost(self) -> None:
        """Cost the settings; bad ones keep the last picture and say what was wrong in ``error``."""
        settings = cast(ExplorerSettings, self.settings)
        keep = self._keep.unpacked() if self._keep is not None and settings.get("mask") == REALISED else None
        try:
            self.graph = dict(graph_payload(settings, keep=keep, measured=self._measured))
            self.error = ""
        except (ValueError, KeyError, TypeError) as err:
            self.error = str(err)

    @property
    def state(self) -> dict[str, Any]:
        """The settings as a plain dict: ``aw.explore(**explorer.state)`` opens the same picture."""
        return dict(self.settings)

    @property
    def current(self) -> ExplorerGraph | Empty:
        """What the explorer draws now (:class:`~attnsparse_widget.contract.ExplorerGraph`)."""
        return cast(ExplorerGraph, self.graph)

    def export_svg(self, path: str | Path) -> Path:
        """Write the picture (the SVG the browser shows: blocks, labels and arrows) to ``path``."""
        target = Path(path)
        write_atomically(target, self._picture().encode("utf-8"))
        return target

    def export_png(self, path: str | Path, scale: float = 2.0) -> Path:
        """Write the picture as a PNG (the same SVG rendered by kaleido's Chromium) to ``path``."""
        svg = self._picture()
        width, height = (int(float(v)) for v in re.findall(r'width="([\d.]+)" height="([\d.]+)"', svg)[0])
        target = Path(path)
        write_atomically(target, svg_to_png(svg, width, height, scale))
        return target

    def _picture(self) -> str:
        if not self.graph:
            raise RuntimeError(f"nothing to export: the settings could not be costed ({self.error})")
        return str(self.graph["svg"])


def explore(config_or_comparison: Any = None, *, layer: int | None = None, **settings: Any) -> CostExplorer:
    """Open the cost explorer (:class:`CostExplorer`).

    ``config_or_comparison``: None (the embedded default model), a preset name (``costs.PRESETS``), a transformers
    config or model, a dict of config keys, or a :class:`~attnsparse_widget.result.Comparison` (its model, one
    prefill of its text, and the realised keep-mask of ``layer``, its middle layer by default). ``settings``: any
    key of :class:`~attnsparse_widget.contract.ExplorerSettings` (``requests=[[8192, 1]]``, ``tp=2``,
    ``flash=True``, ...), e.g. a saved ``explorer.state``."""
    from .result import Comparison

    keep = measured = None
    if isinstance(config_or_comparison, Comparison):
        res = config_or_comparison
        model = res.dense.the_model()
        base = settings_of(model.config, preset=res.model_name, requests=[[len(res.tokens)] * 2], mask=REALISED)
        shown = res.n_layers // 2 if layer is None else layer
        keep = _held(res.keep_mask(shown))
        measured = {"dense": res.metrics.attention_time_dense, "sparse": res.metrics.attention_time_sparse}
    elif config_or_comparison is None:
        base = settings_of("SmolLM2-135M")
    elif isinstance(config_or_comparison, str) and config_or_comparison not in costs.PRESETS:
        base = settings_of(_hub_config(config_or_comparison), preset=config_or_comparison)
    elif isinstance(config_or_comparison, str):
        base = settings_of(config_or_comparison)
    else:
        base = settings_of(config_or_comparison)
    unknown = set(settings) - set(base)
    if unknown:
        raise ValueError(
            f"unknown explorer settings {sorted(unknown)}: use keys of ExplorerSettings ({', '.join(base)})"
        )
    return CostExplorer(cast(ExplorerSettings, {**base, **settings}), keep=keep, measured=measured)


def _held(keep: np.ndarray) -> np.ndarray:
    """A realised keep-mask as the explorer counts it: one ``[T, T]`` when every head keeps the same pairs (a static
    pattern: the same counts from 1/H of the memory and the work), else the ``[H, T, T]`` it is (a score-dependent
    pattern chooses per head)."""
    if keep.ndim == 3 and all(np.array_equal(keep[0], head) for head in keep[1:]):
        return np.ascontiguousarray(keep[0])
    return keep


def _hub_config(name: str) -> Any:
    """The config of a hub id or local folder that is not a preset (read with transformers: the network for a hub
    id), with the presets named when it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{name!r} is neither a preset ({', '.join(costs.PRESETS)}) nor a config transformers could read "
            f"({type(err).__name__}: {err}); pass a preset name, a config object or a dict"
        ) from err
