"""The widget's Python side without a browser: traitlet round trips through a dummy comm, binary payloads,
coalescing of rapid changes, and errors shown in the widget."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm
from tiny_models import ToyTokenizer, build

import attnsparse_widget as aw
from attnsparse_widget import widget as widget_module
from attnsparse_widget.widget import AttentionDiffWidget

TEXT = "the quick brown fox jumps over the lazy dog and runs far away"


@pytest.fixture(autouse=True)
def dummy_comm():
    setup_test_comm()
    yield
    teardown_test_comm()


@pytest.fixture(scope="module")
def tiny():
    return build("llama"), ToyTokenizer()


def f16(entry):
    rows, cols = entry["shape"]
    assert isinstance(entry["data"], bytes) and entry["dtype"] == "f2"
    return np.frombuffer(entry["data"], np.float16).reshape(rows, cols).astype(np.float32)


def test_first_render_state(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, mask="sink_window", sparsity=0.5)
    assert w.status["busy"] is False and w.status["error"] is None
    n = len(TEXT)
    assert w.info["n_tokens"] == n and w.info["n_layers"] == 3 and w.info["n_heads"] == 4
    assert abs(w.metrics["achieved_sparsity"] - 0.5) < 0.05
    assert len(w.metrics["per_layer_delta_ppl"]) == 3 and len(w.metrics["cumulative_delta_ppl"]) == 3
    dense, sparse, keep = f16(w.view["dense"]), f16(w.view["sparse"]), f16(w.view["keep"])
    assert dense.shape == (n, n) and w.view["factor"] == 1
    res = w.result
    np.testing.assert_allclose(dense, res.attention(0).mean(0), atol=1e-3)  # float16 of the head mean
    np.testing.assert_allclose(keep, res.keep_mask(0).mean(0), atol=1e-3)
    assert np.all(sparse[keep == 0] == 0)
    assert w.gallery["dense"]["shape"] == [3 * w.gallery["cell"], 4 * w.gallery["cell"]]
    assert len(w.gallery["kl"]) == 12
    assert [c["id"] for c in w.catalog] == aw.masks.ids()


def test_payloads_travel_as_binary_buffers(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT)
    w.comm.messages.clear()
    w.sparsity = 0.7
    sent = [kwargs.get("data", args[0] if args else {}) for args, kwargs in w.comm.messages]
    updates = [d for d in sent if d.get("method") == "update"]
    buffer_paths = [p for u in updates for p in u.get("buffer_paths", [])]
    assert ["view", "dense", "data"] in buffer_paths and ["view", "sparse", "data"] in buffer_paths
    for u in updates:  # no attention values as JSON lists of floats
        view = u["state"].get("view")
        if view:
            assert "data" not in view["dense"]


def test_sparsity_and_mask_changes_rerun_only_the_sparse_pass(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, mask="sink_window", sparsity=0.3)
    first = w.result
    before = f16(w.view["sparse"])
    w.sparsity = 0.8
    assert w.result.dense is first.dense  # dense pass reused
    assert w.metrics["achieved_sparsity"] > 0.6
    assert not np.array_equal(before, f16(w.view["sparse"]))
    # the frontend sets a trait the way a dropdown change does
    w._handle_msg({"content": {"data": {"method": "update", "state": {"mask": "topk"}, "buffer_paths": []}},
                   "buffers": []})
    assert w.result.mask.id == "topk" and w.info["mask"] == "topk"
    assert abs(w.metrics["achieved_sparsity"] - 0.8) < 0.05


def test_view_changes_run_no_model(tiny, monkeypatch):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT)
    calls = []
    monkeypatch.setattr(widget_module, "compare", lambda *a, **k: calls.append(1))
    w.layer = 2
    w.head = 3
    w.zoom = [10, 30, 0, 20]
    assert calls == []
    assert w.view["layer"] == 2 and w.view["head"] == 3 and w.view["region"] == [10, 30, 0, 20]
    np.testing.assert_allclose(f16(w.view["dense"]), w.result.attention(2)[3, 10:30, 0:20], atol=1e-3)


def test_long_input_is_pooled_and_zoom_gives_full_resolution(tiny):
    text = "abcdefghij" * 30  # 300 tokens: above the 256-cell overview
    w = AttentionDiffWidget(tiny, threaded=False, text=text, mask="sliding_window", sparsity=0.9)
    assert w.view["factor"] == 2 and w.view["dense"]["shape"] == [150, 150]
    w.zoom = [200, 300, 150, 300]
    assert w.view["factor"] == 1 and w.view["dense"]["shape"] == [100, 150]


def test_errors_show_in_the_widget_and_it_stays_usable(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT)
    w.text = "   "
    assert "empty" in w.status["error"] and w.status["busy"] is False
    w.text = TEXT
    assert w.status["error"] is None
    w.mask = "no_such_mask"
    assert "unknown mask" in w.status["error"]
    w.mask = "sink_window"
    w.sparsity = 1.5
    assert "sparsity" in w.status["error"]
    w.sparsity = 0.5
    assert w.status["error"] is None and w.result is not None


def test_rapid_changes_coalesce_to_the_latest(tiny, monkeypatch):
    w = AttentionDiffWidget(tiny, text=TEXT, sparsity=0.1).wait()
    seen = []
    real = widget_module.compare

    def slow(*args, **kwargs):
        seen.append(kwargs["sparsity"])
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(widget_module, "compare", slow)
    for s in np.linspace(0.2, 0.9, 15):
        w.sparsity = float(round(s, 2))
    w.wait()
    assert len(seen) <= 3, seen  # not one run per change
    assert seen[-1] == 0.9 and w.result.metrics.requested_sparsity == 0.9
    assert w.status["busy"] is False and w.status["request"] == w._generation


def test_stale_results_are_never_published(tiny, monkeypatch):
    """A slow request overtaken by a newer one must not overwrite the newer result."""
    w = AttentionDiffWidget(tiny, text=TEXT, sparsity=0.2).wait()
    gate = threading.Event()
    real = widget_module.compare

    def gated(*args, **kwargs):
        if kwargs["sparsity"] == 0.3:
            gate.wait(5)  # the old request finishes late
        return real(*args, **kwargs)

    monkeypatch.setattr(widget_module, "compare", gated)
    w.sparsity = 0.3
    time.sleep(0.1)
    w.sparsity = 0.6
    gate.set()
    w.wait()
    assert w.result.metrics.requested_sparsity == 0.6
    assert w.metrics["requested_sparsity"] == 0.6


def test_show_on_the_default_model(default_model):
    w = aw.show(default_model[0], "Attention sinks hold the first tokens.", mask="topk", sparsity=0.6).wait(300)
    assert w.status["error"] is None
    assert w.info["model"].startswith("SmolLM2") and w.info["n_layers"] == 30
    assert len(w.metrics["per_layer_delta_ppl"]) == 30
    assert w.view["next_tokens"]["dense"][0][1] > 0
