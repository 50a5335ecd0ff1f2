"""adapt(): LoRA adapters trained under the mask, and the adapted pass of a comparison.

Oracles: untrained (zero) adapters give exactly the post-hoc pass; the adapted pass equals the peft model (adapters
unmerged, built here with peft's own API) run by transformers' stock eager attention with the explicit additive
keep-mask; the held-out next-token KL drops; the user's model stays bit for bit what it was.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from model_state import assert_unchanged, snapshot
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from tiny_models import ToyTokenizer, build, configs
from transformers import AutoModelForCausalLM, BertConfig, BertModel

import attnsparse_widget as aw
from attnsparse_widget import masks, pipeline
from attnsparse_widget.adapt import Training, adaptation_steps, attention_projections, own_samples

pytestmark = pytest.mark.model

MIN = torch.finfo(torch.float32).min
TRAIN = [
    "the lighthouse keeper wrote in his log every evening and the storm came from the west",
    "to make the bread mix the flour and the salt in a large bowl then add the water",
    "dear anna thank you for your letter and for the photographs of the garden",
    "in the winter of that year the river froze from bank to bank and the children walked",
]
HELD_OUT = "the miller who had watched the water for forty years said he had never seen the ice so thick"
IDS = torch.randint(3, 90, (1, 12), generator=torch.Generator().manual_seed(1))


class Tokenizer(ToyTokenizer):
    """The toy tokenizer with a decode that inverts it on plain ASCII text (so that ``trained_on`` can be checked)."""

    def decode(self, ids, **_kw) -> str:
        return "".join(chr(i - 3 if i - 3 >= 32 else i - 3 + 93) for i in ids)


def sharp_llama() -> torch.nn.Module:
    """A tiny Llama with large initial weights: peaked attention and next-token distributions, so that a mask
    costs something measurable and adapting can win it back (the default initialisation is nearly uniform)."""
    config = configs()["llama"]
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def sharp():
    return sharp_llama(), Tokenizer()


def quick_adapt(model_tok, tmp_path: Path | None = None, **kwargs):
    settings = dict(steps=3, texts=TRAIN, own_data=False, progress=False, cache=tmp_path is not None)
    settings.update(kwargs)
    return aw.adapt(model_tok, "sliding_window", 0.7, cache_dir=tmp_path, **settings)


def zeroed(adaptation):
    """The adaptation with every LoRA weight set to 0 (the adapters as peft initialises B: no change at all)."""
    out = copy.copy(adaptation)
    out.adapters = {k: torch.zeros_like(v) for k, v in adaptation.adapters.items()}
    out._built = None
    return out


# ----------------------------------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("mask_id", ["sliding_window", "topk"])
def test_zero_adapters_give_exactly_the_post_hoc_pass(sharp, mask_id):
    model, tok = sharp
    adaptation = zeroed(
        aw.adapt(sharp, mask_id, 0.6, steps=1, texts=TRAIN, own_data=False, progress=False, cache=False)
    )
    res = aw.compare(sharp, HELD_OUT, mask_id, 0.6, adapted=adaptation, per_layer=False, continuation_tokens=4)
    for layer in range(res.n_layers):
        assert np.array_equal(res.attention(layer, "adapted"), res.attention(layer, "sparse"))
        assert np.array_equal(res.keep_mask(layer, "adapted"), res.keep_mask(layer))
    m = res.metrics
    assert m.adapted_ppl == m.sparse_ppl and m.recovered == 0.0
    assert m.adapted_next_token_kl == pytest.approx(m.next_token_kl, rel=1e-6)
    assert m.adapted_kl_per_head == m.kl_per_head and m.adapted_mass_recall_per_head == m.mass_recall_per_head
    assert res.continuations["adapted"] == res.continuations["sparse"]


def peft_reference(base, adaptation):
    """The adapted model as peft builds it from the saved adapters (unmerged), with eager attention."""
    reference = copy.deepcopy(base)
    config = LoraConfig(
        r=adaptation.rank, lora_alpha=adaptation.alpha, lora_dropout=0.0, target_modules=adaptation.targets
    )
    peft_model = get_peft_model(reference, config)
    set_peft_model_state_dict(peft_model, adaptation.adapters)
    inner = peft_model.get_base_model()
    inner.set_attn_implementation("eager")
    return inner.eval()


def test_adapted_pass_equals_the_peft_model_with_the_explicit_additive_mask(sharp, tmp_path):
    model, tok = sharp
    adaptation = quick_adapt(sharp, steps=8)
    res = aw.compare(sharp, HELD_OUT, "sliding_window", 0.7, adapted=adaptation, per_layer=False)
    ids = res.adapted.ids
    n = ids.shape[1]
    keep = torch.as_tensor(masks.build(res.mask, n, n_heads=1)) & torch.ones(n, n, dtype=torch.bool).tril()
    explicit = torch.where(keep, 0.0, MIN)[None, None]
    with torch.no_grad():
        out = peft_reference(model, adaptation)(input_ids=ids, attention_mask=explicit, output_attentions=True)
    for layer, ref in enumerate(out.attentions):
        np.testing.assert_allclose(res.attention(layer, "adapted"), ref[0].numpy(), atol=1e-5)
    logits = res.adapted.logits(torch.arange(n))
    torch.testing.assert_close(logits, out.logits[0], atol=1e-4, rtol=1e-4)
    # and it is not the post-hoc pass: the adapters changed something
    assert not np.allclose(res.attention(1, "adapted"), res.attention(1, "sparse"), atol=1e-4)


def test_adaptation_lowers_the_held_out_kl_on_a_tiny_model(sharp):
    adaptation = quick_adapt(sharp, steps=30, lr=3e-3)
    res = aw.compare(sharp, HELD_OUT, "sliding_window", 0.7, adapted=adaptation, per_layer=False)
    m = res.metrics
    assert not adaptation.trained_on(HELD_OUT)
    assert m.adapted_next_token_kl < 0.95 * m.next_token_kl  # measured: 1.24 → 1.12
    assert m.adapted_ppl < m.sparse_ppl and m.recovered is not None and m.recovered > 0.2
    assert len(adaptation.losses) == 30 and np.mean(adaptation.losses[-10:]) < np.mean(adaptation.losses[:10])


def test_training_is_deterministic_for_a_seed(sharp):
    first, second = quick_adapt(sharp, steps=4), quick_adapt(sharp, steps=4)
    assert first.losses == second.losses
    assert all(torch.equal(first.adapters[k], second.adapters[k]) for k in first.adapters)
    other = quick_adapt(sharp, steps=4, seed=1)
    assert other.losses != first.losses


# -------------------------------------------------------------------------------------------------- the cache
def test_the_cache_round_trips_and_the_second_call_is_read_back(sharp, tmp_path):
    first = quick_adapt(sharp, tmp_path, steps=4)
    assert not first.from_cache and first.path is not None and first.path.is_file()
    second = quick_adapt(sharp, tmp_path, steps=4)
    assert second.from_cache and second.path == first.path
    assert second.losses == first.losses and second.seconds == first.seconds
    assert set(second.adapters) == set(first.adapters)
    assert all(torch.equal(first.adapters[k], second.adapters[k]) for k in first.adapters)
    a = aw.compare(sharp, HELD_OUT, "sliding_window", 0.7, adapted=first, per_layer=False, continuation_tokens=0)
    b = aw.compare(sharp, HELD_OUT, "sliding_window", 0.7, adapted=second, per_layer=False, continuation_tokens=0)
    assert a.metrics.adapted_ppl == b.metrics.adapted_ppl
    # another setting is another file
    assert quick_adapt(sharp, tmp_path, steps=5).path != first.path
    # a damaged file is trained again and replaced
    first.path.write_bytes(b"not safetensors")
    again = quick_adapt(sharp, tmp_path, steps=4)
    assert not again.from_cache and again.losses == first.losses
    assert not list(tmp_path.rglob("*.part"))


def test_the_models_own_samples_are_cached_and_seeded(sharp, tmp_path):
    model, tok = sharp
    prompts = ["the storm", "a river in winter"]
    first = own_samples(model, tok, 0, prompts, new_tokens=12, cache_dir=tmp_path)
    assert len(first) == 2 and all(t.startswith(p) and len(t) > len(p) for t, p in zip(first, prompts, strict=True))
    assert own_samples(model, tok, 0, prompts, new_tokens=12, cache_dir=tmp_path) == first
    assert len(list((tmp_path / "adapters").glob("samples-*.json"))) == 1
    assert own_samples(model, tok, 1, prompts, new_tokens=12, cache_dir=tmp_path) != first


def test_an_interrupted_adaptation_writes_nothing_and_changes_nothing(tmp_path):
    model = build("llama")
    model.train()
    before = snapshot(model, IDS)
    training = Training(steps=50, texts=TRAIN, own_data=False, cache_dir=tmp_path)
    steps = adaptation_steps((model, ToyTokenizer()), "sink_window", 0.5, training)
    for progress in steps:
        if progress.phase == "training" and progress.done == 3:
            break
    steps.close()  # a Cancel in the widget
    with pytest.raises(KeyboardInterrupt):
        for progress in adaptation_steps((model, ToyTokenizer()), "sink_window", 0.5, training):
            if progress.done == 2:
                raise KeyboardInterrupt
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
    assert_unchanged(model, IDS, before)


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_the_users_model_is_unchanged_after_adapt_and_the_adapted_pass(family, tmp_path):
    model = build(family)
    model.train()
    requires_grad = [p.requires_grad for p in model.parameters()]
    before = snapshot(model, IDS)
    adaptation = quick_adapt((model, ToyTokenizer()), tmp_path, steps=2)
    res = aw.compare(
        (model, ToyTokenizer()),
        HELD_OUT,
        "sliding_window",
        0.7,
        adapted=adaptation,
        per_layer=False,
        continuation_tokens=2,
    )
    assert set(res.continuations) == {"dense", "sparse", "adapted"}
    assert_unchanged(model, IDS, before)
    assert [p.requires_grad for p in model.parameters()] == requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_attention_projections_per_family():
    assert attention_projections(build("gpt2")) == [
        f"transformer.h.{i}.attn.{n}" for i in range(3) for n in ("c_attn", "c_proj")
    ]
    names = attention_projections(build("llama"))
    assert len(names) == 12 and {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    chosen = quick_adapt((build("llama"), ToyTokenizer()), steps=1, targets=["q_proj", "v_proj"])
    assert {t.rsplit(".", 1)[-1] for t in chosen.targets} == {"q_proj", "v_proj"}


# --------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be an int >= 1"),
        ({"sparsity": 0.0}, "sparsity must be a number in (0, 1)"),
        ({"lr": -1.0}, "lr must be a positive number"),
        ({"targets": ["gate_proj"]}, "not attention projections"),
        ({"window": 4}, "pass the sparsity, not window="),
        ({"texts": [], "own_data": False}, "no training texts"),
    ],
)
def test_bad_arguments_say_what_was_wrong(sharp, kwargs, message):
    settings = {"steps": 2, "texts": TRAIN, "own_data": False, "progress": False, "cache": False} | kwargs
    sparsity = settings.pop("sparsity", 0.7)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        aw.adapt(sharp, "sliding_window", sparsity, **settings)


def test_a_mask_that_drops_nothing_is_refused(sharp, tmp_path):
    with pytest.raises(ValueError, match="drops no query-key pair"):
        aw.adapt(sharp, "dense", 0.5, steps=2, texts=TRAIN, own_data=False, progress=False, cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.safetensors"))


def test_an_encoder_is_refused():
    encoder = BertModel(
        BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    )
    with pytest.raises(ValueError, match="needs a causal language model"):
        aw.adapt((encoder, ToyTokenizer()), steps=2, texts=TRAIN, own_data=False, progress=False, cache=False)


def test_compare_refuses_a_training_text_and_another_models_adaptation(sharp):
    adaptation = quick_adapt(sharp, steps=1)
    with pytest.raises(ValueError, match="among the adaptation's training texts"):
        aw.compare(sharp, TRAIN[1], "sliding_window", 0.7, adapted=adaptation)
    with pytest.raises(ValueError, match="trained on another model"):
        aw.compare((build("llama"), ToyTokenizer()), HELD_OUT, "sliding_window", 0.7, adapted=adaptation)
    res = aw.compare(sharp, HELD_OUT, "sink_window", 0.5, adapted=adaptation, per_layer=False, continuation_tokens=0)
    assert any("trained under sliding_window at 70%" in note for note in res.metrics.notes)
    with pytest.raises(ValueError, match="no adapted pass"):
        aw.compare(sharp, HELD_OUT, "sink_window", 0.5, per_layer=False).attention(0, "adapted")


def test_trained_on_with_the_default_tokenizer(default_model, tmp_path):
    """The default model end to end, briefly: two short texts, two steps; the check sees through re-tokenising."""
    texts = ["The keeper lit the lamp at dusk.", "Bread needs flour, water, salt and time."]
    adaptation = aw.adapt(
        default_model, "sink_window", 0.6, steps=2, texts=texts, own_data=False, progress=False, cache_dir=tmp_path
    )
    assert adaptation.trained_on("Bread needs flour,  water, salt and time.")
    assert adaptation.trained_on("Preface. The keeper lit the lamp at dusk. And then?")
    assert not adaptation.trained_on(aw.sample_texts()[0])
    text = repr(adaptation) + adaptation.summary()
    assert "sink_window" in text and "2 steps" in text and "LoRA rank 16" in text


@pytest.mark.parametrize("mask_id", ["sliding_window", "topk"])
def test_adapted_attention_metrics_measured_in_the_pass_match_numpy(sharp, mask_id, monkeypatch):
    """Texts longer than the overview keep no maps: the adapted pass measures recall and KL against the dense pass's
    queries and keys as it runs; float64 numpy from the full-resolution maps must agree."""
    from attnsparse_widget import store as store_module

    adaptation = quick_adapt(sharp, steps=3)
    aw.clear_cache()
    monkeypatch.setattr(store_module, "retains", lambda *args, **kwargs: False)
    res = aw.compare(sharp, HELD_OUT, mask_id, 0.6, adapted=adaptation, per_layer=False, continuation_tokens=0)
    aw.clear_cache()
    assert res.adapted.store.compared
    recall, kl = [], []
    for layer in range(res.n_layers):
        p = res.attention(layer).astype(np.float64)
        q = res.attention(layer, which="adapted").astype(np.float64)
        recall.append((p * res.keep_mask(layer, "adapted")).sum(-1).mean(-1).tolist())
        with np.errstate(divide="ignore", invalid="ignore"):
            kl.append(np.where(q > 0, q * np.log(q / np.maximum(p, 1e-30)), 0).sum(-1).mean(-1).tolist())
    np.testing.assert_allclose(res.metrics.adapted_mass_recall_per_head, recall, rtol=1e-5)
    np.testing.assert_allclose(res.metrics.adapted_kl_per_head, kl, rtol=1e-4, atol=1e-6)
    assert res.metrics.adapted_kl != res.metrics.kl


# ------------------------------------------------------------------------------------------ the pipeline's stage
def test_the_pipeline_adapts_as_a_stage_as_adapt_then_compare_does(sharp):
    """Request.train: the "adapting" stage trains after the sparse pass (one step of the stage per training step,
    each carrying the training's progress), then the adapted pass and its metrics follow; the comparison equals
    adapt() then compare(adapted=...) with the same settings (training is deterministic for a seed)."""
    settings = dict(steps=3, texts=TRAIN, own_data=False, cache=False)
    request = pipeline.Request(
        text=HELD_OUT,
        mask="sliding_window",
        sparsity=0.7,
        per_layer=False,
        continuation_tokens=2,
        train=Training(**settings),
    )
    progress = list(pipeline.stages(sharp, request))
    order = list(dict.fromkeys(p.stage for p in progress))
    assert order == [s for s in pipeline.STAGES if s in order] and pipeline.ADAPTING in order
    assert order.index(pipeline.ADAPTING) < order.index(pipeline.ADAPTED_PASS)
    adapting = [p for p in progress if p.stage == pipeline.ADAPTING]
    assert [p.done for p in adapting] == [0, 0, 1, 2, 3, 3] and adapting[0].training is None
    assert [p.training.loss is not None for p in adapting[2:]] == [True] * 4
    assert all(p.result.adaptation is None for p in adapting[:-1]) and adapting[-1].result.adaptation is not None
    res = progress[-1].result
    adaptation = aw.adapt(sharp, "sliding_window", 0.7, progress=False, **settings)
    direct = aw.compare(
        sharp, HELD_OUT, "sliding_window", 0.7, per_layer=False, continuation_tokens=2, adapted=adaptation
    )
    assert res.adaptation.losses == adaptation.losses
    m, d = res.metrics, direct.metrics
    assert m.adapted_ppl == pytest.approx(d.adapted_ppl, rel=1e-6) and m.recovered == pytest.approx(d.recovered)
    np.testing.assert_allclose(m.adapted_kl_per_head, d.adapted_kl_per_head, rtol=1e-5, atol=1e-7)
    assert res.continuations == direct.continuations and set(res.continuations) == {"dense", "sparse", "adapted"}
    # a training text is refused, as compare() refuses it
    with pytest.raises(ValueError, match="among the adaptation's training texts"):
        list(
            pipeline.stages(
                sharp,
                pipeline.Request(
                    text=TRAIN[0], mask="sliding_window", sparsity=0.7, per_layer=False, train=Training(**settings)
                ),
            )
        )


# --------------------------------------------------------------------------------------------------- the widget
@pytest.fixture
def comm(monkeypatch, tmp_path):
    from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm

    monkeypatch.setenv("ATTNSPARSE_CACHE_DIR", str(tmp_path))  # the widget's adapters and samples go here
    setup_test_comm()
    yield
    teardown_test_comm()


def test_the_widget_adapts_and_shows_the_adapted_pass(comm, sharp):
    from attnsparse_widget.widget import AttentionDiffWidget

    w = AttentionDiffWidget(sharp, threaded=False, text=HELD_OUT, mask="sliding_window", sparsity=0.7, per_layer=False)
    assert w.adaptation["state"] == "none" and w.adaptation["seconds_per_step"] > 0
    assert w.metrics["adapted_ppl"] is None and w.view["masked"] == "sparse"
    w.adapt(4)
    assert w.adaptation["state"] == "ready" and w.adaptation["done"] == 4 and w.adaptation["mask"] == "sliding_window"
    assert w.adapted is not None and len(w.adapted.losses) == 4
    assert w.metrics["adapted_ppl"] > 0 and set(w.metrics["continuations"]) == {"dense", "sparse", "adapted"}
    assert "adapted" in w.next_tokens["top"]
    w.compare_with = "adapted"
    assert w.view["masked"] == "adapted" and w.gallery["masked"] == "adapted"
    assert "adapted" in json_text(w.view["figure"])
    # another sparsity: the adapters do not apply, the view falls back to the post-hoc pass
    w.sparsity = 0.5
    assert w.metrics["adapted_ppl"] is None and w.view["masked"] == "sparse"
    w.sparsity = 0.7  # and back: read from memory, no training
    assert w.metrics["adapted_ppl"] is not None and w.view["masked"] == "adapted"
    w.close()


def json_text(figure) -> str:
    return " ".join(str(a.get("text", "")) for a in figure["layout"].get("annotations", []))


def test_the_widget_cancels_an_adaptation(comm, sharp):
    from attnsparse_widget.widget import AttentionDiffWidget

    model, _ = sharp
    before = snapshot(model, IDS)
    w = AttentionDiffWidget(sharp, text=HELD_OUT, mask="sliding_window", sparsity=0.7, per_layer=False).wait()
    seen = []
    w.observe(lambda change: seen.append(change["new"]), names=["adaptation"])
    w.adapt(400)
    for _ in range(600):
        if any(s.get("phase") == "training" and s.get("done", 0) >= 2 for s in seen):
            break

        time.sleep(0.05)
    w.cancel_adaptation()
    w.wait()
    assert w.adaptation["state"] == "cancelled" and w.adapted is None
    assert w.status["busy"] is False and w.metrics["adapted_ppl"] is None
    assert not list(Path(os.environ["ATTNSPARSE_CACHE_DIR"]).rglob("*.safetensors"))
    assert_unchanged(model, IDS, before)
    w.close()


def test_the_widget_reports_a_failed_adaptation(comm, sharp):
    from attnsparse_widget.widget import AttentionDiffWidget

    w = AttentionDiffWidget(sharp, threaded=False, text=HELD_OUT, mask="dense", per_layer=False)
    w.adapt(2)
    assert w.adaptation["state"] == "failed" and "drops no query-key pair" in w.adaptation["error"]
    assert "drops no query-key pair" in w.status["error"] and w.status["busy"] is False
    w.close()


def test_sweep_adds_adapted_columns(sharp, monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNSPARSE_CACHE_DIR", str(tmp_path))
    table = aw.sweep(sharp, [HELD_OUT], masks=["sliding_window"], sparsities=[0.0, 0.7], adapt_steps=3, progress=False)
    plain, adapted = table
    assert plain["adapted_ppl"] is None and plain["recovered"] is None  # sparsity 0: nothing to adapt to
    direct = aw.compare(
        sharp, HELD_OUT, "sliding_window", 0.7, adapted=aw.adapt(sharp, "sliding_window", 0.7, steps=3, progress=False)
    )
    assert adapted["adapted_ppl"] == pytest.approx(direct.metrics.adapted_ppl, rel=1e-6)
    assert adapted["recovered"] == pytest.approx(direct.metrics.recovered, rel=1e-5)
    fig = aw.plot_sweep(table)
    assert any(trace.name == "sliding_window, adapted" for trace in fig.data)
    assert table.to_pandas()["adapted_ppl"].notna().sum() == 1
    with pytest.raises(ValueError, match="adapt_steps must be None or an int"):
        aw.sweep(sharp, [HELD_OUT], masks=["sliding_window"], sparsities=[0.7], adapt_steps=0, progress=False)


def test_exports_show_the_adapted_pass(sharp, tmp_path):
    adaptation = quick_adapt(sharp, steps=3)
    res = aw.compare(sharp, HELD_OUT, "sliding_window", 0.7, adapted=adaptation, per_layer=False)
    page = res.to_html(which="adapted")
    assert "adapted, under the mask" in page and "perplexity adapted" in page  # the panel title, the table
    png = res.export_png(tmp_path / "adapted.png", layer=1, which="adapted")
    assert png.read_bytes()[:4] == b"\x89PNG"
    gif = res.export_gif(tmp_path / "adapted.gif", layers=[0, 2], which="adapted", size=(600, 240))
    assert gif.frames == 2
    plain = aw.compare(sharp, HELD_OUT, "sliding_window", 0.7, per_layer=False)
    with pytest.raises(ValueError, match="no adapted pass"):
        plain.export_png(tmp_path / "none.png", which="adapted")
    assert not (tmp_path / "none.png").exists()
