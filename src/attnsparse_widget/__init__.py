"""attnsparse-widget: see what sparse attention does to a real transformer.

>>> import attnsparse_widget as aw
>>> model, tok = aw.load_model()                      # embedded SmolLM2-135M-Instruct, offline
>>> res = aw.compare(model, "The cat sat on the mat.", mask="sink_window", sparsity=0.5, tokenizer=tok)
>>> res.metrics.achieved_sparsity, res.metrics.delta_ppl
>>> aw.show(model, "The cat sat on the mat.", mask="sink_window", sparsity=0.5)   # the widget, in a notebook
"""

from __future__ import annotations

from . import costs, masks
from .adapt import Adaptation, adapt
from .compare import compare
from .dense_cache import clear_cache
from .explorer import CostExplorer, explore
from .export import ExportError
from .introspect import UnsupportedModelError
from .metrics import Metrics
from .models import load_model
from .result import Comparison
from .sweep import SweepTable, plot_sweep, sweep
from .texts import long_text, sample_texts
from .widget import AttentionDiffWidget, show

__all__ = [
    "Adaptation",
    "AttentionDiffWidget",
    "Comparison",
    "CostExplorer",
    "ExportError",
    "Metrics",
    "SweepTable",
    "UnsupportedModelError",
    "adapt",
    "clear_cache",
    "compare",
    "costs",
    "explore",
    "load_model",
    "long_text",
    "masks",
    "plot_sweep",
    "sample_texts",
    "show",
    "sweep",
]
__version__ = "0.1.0"
