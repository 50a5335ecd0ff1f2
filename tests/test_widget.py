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
from attnsparse_widget import pipeline
from attnsparse_widget import widget as widget_module
from attnsparse_widget.widget import AttentionDiffWidget

pytestmark = pytest.mark.model

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


def trace(w, name):
    """The decoded z of the main figure's trace ``name`` (NaN where blank), as the frontend composes it: the dense
    values come in the ``dense_map`` trait, which must belong to the view shown."""
    view = w.view
    if name == "dense":
        assert [w.dense_map[k] for k in ("layer", "head", "region")] == [view[k] for k in ("layer", "head", "region")]
        return f16(w.dense_map["z"])
    return f16(next(d for d in view["figure"]["data"] if d["name"] == name)["z"])


def test_first_render_state(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, mask="sink_window", sparsity=0.5)
    assert w.status["busy"] is False and w.status["error"] is None
    n = len(TEXT)
    assert w.info["n_tokens"] == n and w.info["n_layers"] == 3 and w.info["n_heads"] == 4
    assert abs(w.metrics["achieved_sparsity"] - 0.5) < 0.05
    assert len(w.metrics["per_layer_delta_ppl"]) == 3 and len(w.metrics["cumulative_delta_ppl"]) == 3
    dense, sparse = trace(w, "dense"), trace(w, "sparse")
    assert dense.shape == (n, n) and w.view["factor"] == 1
    res = w.result
    allowed = np.tril(np.ones((n, n), bool))
    np.testing.assert_allclose(dense[allowed], res.attention(0).mean(0)[allowed], atol=1e-3)  # float16, head mean
    assert np.isnan(dense[~allowed]).all()  # the future is blank
    all_kept = res.keep_mask(0).all(0)  # the mean over heads: a cell is dropped only where every head drops it
    none_kept = ~res.keep_mask(0).any(0) & allowed
    np.testing.assert_allclose(sparse[all_kept], res.attention(0, "sparse").mean(0)[all_kept], atol=1e-3)
    # dropped cells show minus the dense probability they lost
    np.testing.assert_allclose(sparse[none_kept], -np.maximum(res.attention(0).mean(0)[none_kept], 1e-6), atol=1e-3)
    assert (sparse[none_kept] < 0).all() and (sparse[all_kept] >= 0).all()
    assert w.view["states"]["dtype"] == "u1" and w.view["figure"]["layout"]["title"]["text"].startswith("L0 mean")
    assert w.layer_chart["data"][0]["type"] == "bar" and len(w.layer_chart["data"][0]["y"]) == 3
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
    assert ["view", "figure", "data", 1, "z", "data"] in buffer_paths  # the sparse map
    assert not any(p[0] == "dense_map" for p in buffer_paths)  # the dense map is as it was: not sent again
    w.comm.messages.clear()
    w.layer = 1
    sent = [kwargs.get("data", args[0] if args else {}) for args, kwargs in w.comm.messages]
    updates = [d for d in sent if d.get("method") == "update"]
    assert ["dense_map", "z", "data"] in [p for u in updates for p in u.get("buffer_paths", [])]  # another layer
    for u in updates:  # no attention values as JSON lists of floats
        view = u["state"].get("view")
        if view:
            for d in view["figure"]["data"]:
                assert "z" not in d or ("data" not in d["z"] and set(d["z"]) == {"shape", "dtype"})


def sent_updates(w, act):
    """The state updates the widget sends while ``act()`` runs: (time.monotonic(), state with its buffers in)."""
    sent = []
    original = w.comm.send

    def send(*args, **kwargs):
        data = kwargs.get("data", args[0] if args else {})
        state = dict(data.get("state", {}))
        for path, buf in zip(data.get("buffer_paths", []), kwargs.get("buffers") or [], strict=True):
            state[f"{path[0]}:{'/'.join(map(str, path[1:]))}"] = bytes(buf)
        sent.append((time.monotonic(), state))
        return original(*args, **kwargs)

    w.comm.send = send
    try:
        act()
    finally:
        w.comm.send = original
    return sent


def test_an_interaction_sends_each_payload_once_and_progress_at_most_ten_a_second(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, mask="sink_window", sparsity=0.3, per_layer=True)
    for act in (lambda: setattr(w, "sparsity", 0.7), lambda: setattr(w, "layer", 2), lambda: setattr(w, "head", 1)):
        sent = sent_updates(w, act)
        payloads = [(key, repr(value)) for _, state in sent for key, value in state.items()]
        assert len(payloads) == len(set(payloads)), "a payload went twice"
        statuses = [(at, state["status"]) for at, state in sent if "status" in state]
        within = [
            at
            for (at, s), (_, before) in zip(statuses[1:], statuses[:-1], strict=True)
            if s["stage"] == before["stage"] and 0 < (s.get("progress") or 0) < 1
        ]
        assert all(b - a >= widget_module.PROGRESS_INTERVAL_S for a, b in zip(within, within[1:], strict=False))
    assert sent_updates(w, lambda: setattr(w, "head", 1)) == []  # the same value: nothing at all
    # a new sparsity or mask leaves the text's tokens and the dense values alone: they are not sent again
    for act in (lambda: setattr(w, "sparsity", 0.5), lambda: setattr(w, "mask", "sliding_window")):
        assert not {"tokens", "dense_map", "info:tokens"} & {k for _, state in sent_updates(w, act) for k in state}
    assert "tokens" in {k for _, state in sent_updates(w, lambda: setattr(w, "text", TEXT + " again")) for k in state}
    # the throttled curve still ends complete, in the chart and in the metrics
    assert None not in w.metrics["per_layer_delta_ppl"] and len(w.metrics["per_layer_delta_ppl"]) == 3
    bars = w.layer_chart["data"][0]
    assert bars["type"] == "bar" and len(bars["y"]) == 3 and None not in bars["y"]


def test_progress_within_a_stage_goes_at_most_once_per_interval(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT)
    steps = [("per-layer curve", i / 50) for i in range(51)] + [("continuations", 0.5), ("continuations", 1.0)]
    sent = [w._progress_due(stage, fraction) for stage, fraction in steps]  # fifty steps at once
    # the stage's first step, its end, the next stage's first step and its end; nothing between
    assert [s for s, ok in zip(steps, sent, strict=True) if ok] == [steps[0], steps[50], steps[51], steps[52]]
    time.sleep(widget_module.PROGRESS_INTERVAL_S)
    assert w._progress_due("continuations", 0.7)  # once the interval has passed, the next step goes


def test_sparsity_and_mask_changes_rerun_only_the_sparse_pass(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, mask="sink_window", sparsity=0.3)
    first = w.result
    before = trace(w, "sparse")
    w.sparsity = 0.8
    assert w.result.dense.layer_outputs is first.dense.layer_outputs  # dense pass reused (snapshots copy its lists)
    assert w.metrics["achieved_sparsity"] > 0.6
    assert not np.array_equal(before, trace(w, "sparse"), equal_nan=True)
    # the frontend sets a trait the way a dropdown change does
    w._handle_msg(
        {"content": {"data": {"method": "update", "state": {"mask": "topk"}, "buffer_paths": []}}, "buffers": []}
    )
    assert w.result.mask.id == "topk" and w.info["mask"] == "topk"
    assert abs(w.metrics["achieved_sparsity"] - 0.8) < 0.05


def test_view_changes_run_no_model(tiny, monkeypatch):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT)
    calls = []
    monkeypatch.setattr(pipeline, "prepare", lambda *a, **k: calls.append(1))
    w.layer = 2
    w.head = 3
    w.zoom = [10, 30, 0, 20]
    assert calls == []
    assert w.view["layer"] == 2 and w.view["head"] == 3 and w.view["region"] == [10, 30, 0, 20]
    expected = np.where(np.tril(np.ones((40, 40), bool))[10:30, 0:20], w.result.attention(2)[3, 10:30, 0:20], np.nan)
    np.testing.assert_allclose(trace(w, "dense"), expected, atol=1e-3)


def test_long_input_is_pooled_and_zoom_gives_full_resolution(tiny):
    text = "abcdefghij" * 30  # 300 tokens: above the 256-cell overview
    w = AttentionDiffWidget(tiny, threaded=False, text=text, mask="sliding_window", sparsity=0.9)
    assert w.view["factor"] == 2 and w.dense_map["z"]["shape"] == [150, 150]
    w.zoom = [200, 300, 150, 300]
    assert w.view["factor"] == 1 and w.dense_map["z"]["shape"] == [100, 150] and w.dense_map["region"] == w.zoom


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
    real = pipeline.prepare

    def slow(*args, **kwargs):
        seen.append(args[1].sparsity)  # prepare(model, request)
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare", slow)
    for s in np.linspace(0.2, 0.9, 15):
        w.sparsity = float(round(s, 2))
    w.wait()
    assert len(seen) <= 3, seen  # not one run per change
    assert seen[-1] == 0.9 and w.result.metrics.requested_sparsity == 0.9
    assert w.status["busy"] is False and w.status["request"] == w._session.generation


def test_stale_results_are_never_published(tiny, monkeypatch):
    """A slow request overtaken by a newer one must not overwrite the newer result."""
    w = AttentionDiffWidget(tiny, text=TEXT, sparsity=0.2).wait()
    gate = threading.Event()
    real = pipeline.prepare

    def gated(*args, **kwargs):
        if args[1].sparsity == 0.3:
            gate.wait(5)  # the old request finishes late
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "prepare", gated)
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
    assert w.next_tokens["top"]["dense"][0][1] > 0


def test_view_changes_during_the_per_layer_curve_do_not_stop_it(tiny, monkeypatch):
    """Clicking a layer while the curve fills in shows that layer at once and the curve still completes."""
    real = pipeline.iter_per_layer
    started = threading.Event()

    def slow(*args, **kwargs):
        for item in real(*args, **kwargs):
            started.set()
            time.sleep(0.05)
            yield item

    monkeypatch.setattr(pipeline, "iter_per_layer", slow)
    w = AttentionDiffWidget(tiny, text=TEXT, sparsity=0.5)
    assert started.wait(30)
    w.layer = 2
    deadline = time.monotonic() + 30
    while w.view.get("layer") != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.view["layer"] == 2 and w.status["busy"] is True  # shown while the curve is still running
    w.wait()
    assert len(w.metrics["per_layer_delta_ppl"]) == 3 and len(w.metrics["cumulative_delta_ppl"]) == 3
    assert w.status["busy"] is False and w.status["request"] == w._session.generation


def test_export_button_sends_a_gif_download_and_export_gif_writes_one(tiny, tmp_path):
    from PIL import Image

    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, head=1, export_path=str(tmp_path / "button.gif"))
    w.comm.messages.clear()
    w._handle_msg({"content": {"data": {"method": "custom", "content": {"type": "export_gif"}}}, "buffers": []})
    sent = [(args, kwargs) for args, kwargs in w.comm.messages if kwargs.get("data", {}).get("method") == "custom"]
    assert len(sent) == 1
    content, buffers = sent[0][1]["data"]["content"], sent[0][1]["buffers"]
    assert content["type"] == "download" and content["filename"].endswith(".gif") and content["mime"] == "image/gif"
    assert bytes(buffers[0]).startswith(b"GIF89a") and (tmp_path / "button.gif").read_bytes() == bytes(buffers[0])
    report = w.export_gif(tmp_path / "method.gif", duration_ms=300)
    with Image.open(report.path) as gif:
        assert gif.n_frames == 3 and gif.info["duration"] == 300 and gif.info["loop"] == 0
    assert w.status["error"] is None and w.status["busy"] is False


def test_export_png_writes_the_view_on_screen(tiny, tmp_path):
    """``w.export_png`` pictures the layer and head the widget shows: the same picture as the comparison's own
    export of that layer and head, and a different one for another layer."""
    from PIL import Image

    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, layer=1, head=0, per_layer=False)
    shown = w.export_png(tmp_path / "shown.png")
    with Image.open(shown) as png:
        assert png.size == (2400, 960)  # the side-by-side view at scale 2
    same = w.result.export_png(tmp_path / "same.png", layer=1, head=0)
    other = w.result.export_png(tmp_path / "other.png", layer=0, head=0)
    assert shown.read_bytes() == same.read_bytes() != other.read_bytes()


def test_long_texts_skip_the_per_layer_curve_until_asked(tiny, monkeypatch):
    """Over CURVE_TOKENS the curve would replay about two passes per layer (minutes): the widget switches the box
    off with a note, and computes the curve once the box is ticked again, for this text and the next ones."""
    monkeypatch.setattr(widget_module, "CURVE_TOKENS", 20)
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, mask="sink_window", sparsity=0.5)
    assert len(TEXT) > 20
    assert w.per_layer is False and w.metrics["per_layer_delta_ppl"] is None
    assert "per-layer curve is not computed" in w.info["note"]
    w.per_layer = True  # asked for
    assert len(w.metrics["per_layer_delta_ppl"]) == 3
    w.sparsity = 0.6
    assert w.per_layer is True and len(w.metrics["per_layer_delta_ppl"]) == 3
    short = AttentionDiffWidget(tiny, threaded=False, text=TEXT[:15], mask="sink_window", sparsity=0.5)
    assert short.per_layer is True and len(short.metrics["per_layer_delta_ppl"]) == 3


def test_the_mask_tab_can_time_the_attention(tiny):
    w = AttentionDiffWidget(tiny, threaded=False, text=TEXT, mask="sliding_window", sparsity=0.7, per_layer=False)
    assert w.metrics["attention_time_dense"] is None
    w.time_attention = True  # the checkbox: the current result is timed, nothing else runs again
    m = w.metrics
    assert m["attention_time_dense"] > 0 and m["attention_time_sparse"] > 0 and m["attention_kernel"]
    assert 0.0 <= m["attention_tiles_skipped"] <= 1.0


def test_in_colab_the_widget_computes_in_the_kernels_own_thread(tiny, monkeypatch):
    """Colab holds widget messages sent from a background thread (googlecolab/colabtools#3373): there the widget
    picks threaded=False itself; anywhere else it computes in a worker thread."""
    import sys
    import types

    elsewhere = AttentionDiffWidget(tiny, text=TEXT)
    assert elsewhere._threaded
    elsewhere.wait(None)
    elsewhere.close()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    w = AttentionDiffWidget(tiny, text=TEXT)
    assert not w._threaded and w.status["busy"] is False and w.metrics  # computed before the constructor returned
