"""The user's model and machine, left as they were: after ``compare``, the widget, a sweep or an export, also ones
that raised or were interrupted (KeyboardInterrupt in the middle of a forward pass), the model has its own attention
implementation, no leftover hooks, forward overrides or registry state, and bit-for-bit the same outputs; two
widgets on two different models do not interfere; long sessions keep memory flat and leave no browser behind."""

from __future__ import annotations

import contextlib
import gc
import threading

import numpy as np
import psutil
import pytest
import torch
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm
from model_state import assert_unchanged, snapshot
from tiny_models import ToyTokenizer, build

import attnsparse_widget as aw
from attnsparse_widget.dense_cache import release_free_memory
from attnsparse_widget.export import export_gif
from attnsparse_widget.introspect import layer_stack
from attnsparse_widget.result import Comparison
from attnsparse_widget.widget import AttentionDiffWidget

pytestmark = pytest.mark.unit

TEXT = "the quick brown fox jumps over the lazy dog"
IDS = torch.randint(3, 90, (1, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def comm():
    setup_test_comm()
    yield
    teardown_test_comm()


@contextlib.contextmanager
def interrupt_at_call(model, n: int, error: BaseException):
    """Raise ``error`` inside a forward pass: at the ``n``-th time block 1 of ``model`` starts (counting from 1)."""
    calls = [0]

    def hook(_module, _args):
        calls[0] += 1
        if calls[0] == n:
            raise error

    handle = layer_stack(model)[1].register_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def run_compare(model):
    aw.compare((model, ToyTokenizer()), TEXT, mask="topk", sparsity=0.5, continuation_tokens=3)


def run_widget(model):
    w = AttentionDiffWidget((model, ToyTokenizer()), threaded=False, text=TEXT, mask="h2o", sparsity=0.6)
    w.sparsity = 0.8
    w.layer = 1
    w.close()


def run_sweep(model):
    aw.sweep(
        (model, ToyTokenizer()),
        [TEXT, TEXT[::-1]],
        masks=["sink_window", "topk"],
        sparsities=[0.3, 0.7],
        progress=False,
    )


def run_adapt(model):
    """Adapters trained under the mask (the user's model is the teacher), then a comparison's adapted pass."""
    adaptation = aw.adapt(
        (model, ToyTokenizer()),
        "sink_window",
        0.5,
        steps=2,
        texts=[TEXT * 3],
        own_data=False,
        progress=False,
        cache=False,
    )
    aw.compare((model, ToyTokenizer()), TEXT[::-1], "sink_window", 0.5, adapted=adaptation, continuation_tokens=3)


OPERATIONS = {"compare": run_compare, "widget": run_widget, "sweep": run_sweep, "adapt": run_adapt}


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_model_unchanged_after(comm, operation, family):
    model = build(family)
    model.train()  # the user's mode comes back too
    before = snapshot(model, IDS)
    OPERATIONS[operation](model)
    assert_unchanged(model, IDS, before)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("out of memory")], ids=["interrupt", "error"])
@pytest.mark.parametrize("at_call", [1, 4])
def test_model_unchanged_after_an_interrupted_pass(comm, operation, error, at_call):
    """Interrupted in the first pass, or later (a sparse pass, a replay for the per-layer curve)."""
    model = build("llama")
    before = snapshot(model, IDS)
    aw.clear_cache()
    with interrupt_at_call(model, at_call, error) as calls:
        if operation == "widget" and not isinstance(error, KeyboardInterrupt):  # shown in the widget, not raised
            w = AttentionDiffWidget((model, ToyTokenizer()), threaded=False, text=TEXT, mask="h2o", sparsity=0.6)
            assert "out of memory" in w.status["error"]
            w.close()
        else:
            with pytest.raises(type(error)):
                OPERATIONS[operation](model)
    assert calls[0] == at_call
    assert_unchanged(model, IDS, before)
    run_compare(model)  # and it still works
    assert_unchanged(model, IDS, before)


def test_an_interrupted_widget_runs_the_next_change(comm):
    model, tok = build("llama"), ToyTokenizer()
    w = AttentionDiffWidget((model, tok), threaded=False, text=TEXT, per_layer=False)
    with interrupt_at_call(model, 1, KeyboardInterrupt()), pytest.raises(KeyboardInterrupt):
        w.sparsity = 0.8
    assert "interrupted" in w.status["error"] and w.status["busy"] is False
    w.sparsity = 0.7
    assert w.status["error"] is None and abs(w.metrics["achieved_sparsity"] - 0.7) < 0.05
    w.close()


def test_model_unchanged_after_exports_also_interrupted(comm, tmp_path):
    model = build("llama")
    before = snapshot(model, IDS)
    res = aw.compare((model, ToyTokenizer()), TEXT * 8, mask="sink_window", sparsity=0.5, continuation_tokens=2)
    res.export_gif(tmp_path / "a.gif", duration_ms=100)
    res.export_png(tmp_path / "a.png", layer=1)
    res.to_html(tmp_path / "a.html")

    def stop(done, _total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_gif(res, tmp_path / "b.gif", progress=stop)
    assert not (tmp_path / "b.gif").exists()  # nothing half-written
    assert_unchanged(model, IDS, before)
    assert not chromium_processes()  # the browser session was closed, interrupted or not


def chromium_processes() -> list[psutil.Process]:
    """Chromium processes started by this test process (alive or zombie)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "chrom" in child.name().lower() or any("chrom" in part.lower() for part in child.cmdline()[:1]):
                found.append(child)
    return found


def test_two_widgets_on_two_models_do_not_interfere(comm):
    """Two threaded widgets on two different models, driven at the same time: each shows exactly what compare()
    gives for its own settings, and neither model is changed."""
    models = {"llama": build("llama"), "gpt2": build("gpt2")}
    befores = {k: snapshot(m, IDS) for k, m in models.items()}
    settings = {"llama": ("sink_window", 0.6), "gpt2": ("topk", 0.4)}
    widgets = {
        k: AttentionDiffWidget((m, ToyTokenizer()), text=TEXT, mask="sliding_window", sparsity=0.2)
        for k, m in models.items()
    }

    def drive(key):
        w = widgets[key]
        mask, sparsity = settings[key]
        for s in (0.3, 0.5, 0.9, sparsity):
            w.sparsity = s
        w.mask = mask

    threads = [threading.Thread(target=drive, args=(k,)) for k in widgets]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for key, w in widgets.items():
        w.wait(300)
        mask, sparsity = settings[key]
        alone = aw.compare((models[key], ToyTokenizer()), TEXT, mask=mask, sparsity=sparsity)
        assert w.status["error"] is None and w.result.mask == alone.mask
        assert w.metrics["sparse_ppl"] == pytest.approx(alone.metrics.sparse_ppl, rel=1e-6)
        assert w.metrics["per_layer_delta_ppl"] == pytest.approx(alone.metrics.per_layer_delta_ppl, rel=1e-5)
        np.testing.assert_array_equal(w.result.attention(1, "sparse"), alone.attention(1, "sparse"))
        w.close()
    for key, model in models.items():
        assert_unchanged(model, IDS, befores[key])


# -------------------------------------------------------------------------------------------- long sessions
def rss_mb() -> float:
    gc.collect()
    release_free_memory()
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.slow
def test_two_hundred_updates_keep_memory_flat(comm):
    """A widget driven through 200 updates (sparsity, mask, layer, head, text): the resident set after the first
    50 and after all 200 differ by less than 40 MB, and no old result stays alive."""
    gc.collect()
    earlier = {id(o) for o in gc.get_objects() if type(o) is Comparison}  # other tests' results
    model, tok = build("llama"), ToyTokenizer()
    w = AttentionDiffWidget((model, tok), threaded=False, text=TEXT * 3, per_layer=True)
    kinds = ["sink_window", "topk", "h2o", "nsa", "bigbird"]
    rss = []
    for i in range(200):
        step = i % 5
        if step == 0:
            w.sparsity = 0.1 + 0.8 * ((i * 7) % 10) / 10
        elif step == 1:
            w.mask = kinds[(i // 5) % len(kinds)]
        elif step == 2:
            w.layer = i % 3
        elif step == 3:
            w.head = (i % 5) - 1
        else:
            w.text = (TEXT + f" number {i % 4}") * 3
        assert w.status["error"] is None, w.status
        w.comm.messages.clear()  # the test comm keeps every message it sent (a kernel's comm does not)
        if i in (49, 199):
            rss.append(rss_mb())
    growth = rss[1] - rss[0]
    assert growth < 40, f"resident set grew {growth:.1f} MB from update 50 to update 200"
    gc.collect()
    results = [o for o in gc.get_objects() if type(o) is Comparison and id(o) not in earlier]
    assert len(results) <= 2, f"{len(results)} comparisons alive"  # the one on screen (and at most a stray one)
    w.close()


@pytest.mark.slow
def test_exports_leave_no_browser_behind(tmp_path):
    model = build("llama")
    res = aw.compare((model, ToyTokenizer()), TEXT, mask="sink_window", sparsity=0.5, continuation_tokens=0)
    before = {p.pid for p in chromium_processes()}
    for i in range(3):
        res.export_gif(tmp_path / f"{i}.gif", layers=[0, 2], duration_ms=100)
        res.export_png(tmp_path / f"{i}.png")
    left = [p for p in chromium_processes() if p.pid not in before]
    assert not left, [(p.pid, p.status()) for p in left]


# ------------------------------------------------------------------------------------------------- writing
def test_exports_write_only_where_asked_and_never_overwrite(tmp_path, monkeypatch):
    model = build("llama")
    res = aw.compare((model, ToyTokenizer()), TEXT, mask="sink_window", sparsity=0.5, continuation_tokens=0)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out"
    res.export_gif(out / "layers.gif", layers=[0], duration_ms=100)
    res.export_png(out / "layer.png")
    res.to_html(out / "page.html")
    assert sorted(p.name for p in out.iterdir()) == ["layer.png", "layers.gif", "page.html"]
    assert list(work.iterdir()) == []  # nothing written anywhere else we can see
    for call, name in (
        (lambda p, **k: res.export_gif(p, layers=[0], **k), "layers.gif"),
        (lambda p, **k: res.export_png(p, **k), "layer.png"),
        (lambda p, **k: res.to_html(p, **k), "page.html"),
    ):
        target = out / name
        stamp = target.read_bytes()
        with pytest.raises(FileExistsError, match="overwrite=True"):
            call(target)
        assert target.read_bytes() == stamp
        call(target, overwrite=True)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        res.to_html(out)


def test_widget_export_path_is_never_overwritten_silently(comm, tmp_path):
    model = build("llama")
    target = tmp_path / "mine.gif"
    target.write_bytes(b"the user's own file")
    w = AttentionDiffWidget(
        (model, ToyTokenizer()), threaded=False, text=TEXT, per_layer=False, export_path=str(target)
    )
    w._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "export_gif"}}}, "buffers": []})
    assert "already exists" in w.status["error"] and "export_overwrite" in w.status["error"]
    assert target.read_bytes() == b"the user's own file"
    with pytest.raises(FileExistsError):
        w.export_gif()
    w.export_overwrite = True
    w._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "export_gif"}}}, "buffers": []})
    assert w.status["error"] is None and target.read_bytes()[:6] == b"GIF89a"
    w.close()
