"""The figures the widget draws and the exports render (figures.py), checked against the comparison they show."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_models import ToyTokenizer, build

import attnsparse_widget as aw
from attnsparse_widget import figures as F
from attnsparse_widget.payload import with_binary_arrays

pytestmark = pytest.mark.unit

TEXT = "sparse attention keeps some pairs <and> drops the rest"


@pytest.fixture(scope="module")
def res():
    return aw.compare(
        (build("llama"), ToyTokenizer()), TEXT, mask="sliding_window", sparsity=0.6, continuation_tokens=0
    )


def by_name(fig, name):
    return next(d for d in fig["data"] if d["name"] == name)


def test_main_figure_shows_each_pair_as_the_comparison_has_it(res):
    view = F.map_view(res, 1, head=2)
    fig = F.main_figure(view, res.tokens, "t")
    assert [d["name"] for d in fig["data"]] == ["dense", "sparse", "sparse − dense"]
    dense, sparse, keep = res.attention(1)[2], res.attention(1, "sparse")[2], res.keep_mask(1)[2]
    allowed = res.allowed_mask(1)
    dropped = allowed & ~keep
    np.testing.assert_array_equal(by_name(fig, "dense")["z"][allowed], dense[allowed])
    assert np.isnan(by_name(fig, "dense")["z"][~allowed]).all()
    np.testing.assert_array_equal(by_name(fig, "sparse")["z"][keep], sparse[keep])
    lost = np.maximum(dense[dropped], 1e-6)  # the weight each dropped pair lost, below zero on the same heatmap
    np.testing.assert_array_equal(by_name(fig, "sparse")["z"][dropped], -lost)
    assert by_name(fig, "sparse")["zmin"] == -by_name(fig, "sparse")["zmax"]
    np.testing.assert_allclose(by_name(fig, "sparse − dense")["z"][allowed], (sparse - dense)[allowed], atol=1e-7)
    assert all(d["hoverinfo"] == "none" for d in fig["data"])
    assert fig["layout"]["xaxis"]["ticktext"] == [F.plotly_safe(t) for t in res.tokens]
    assert F.plotly_safe("<b>\n") == "&lt;b&gt;↵"  # tokens shown literally, whitespace visible


@pytest.mark.parametrize(
    "panels", [("dense",), ("sparse",), ("diff",), ("dense", "sparse", "diff"), ("sparse", "diff")]
)
def test_panels_and_colorbars_do_not_overlap(res, panels):
    fig = F.main_figure(F.map_view(res, 0), res.tokens, "t", panels)
    axes = [v["domain"] for k, v in sorted(fig["layout"].items()) if k.startswith("xaxis")]
    assert len(axes) == len(panels)
    bars = [d["colorbar"]["x"] for d in fig["data"] if "colorbar" in d]
    spans = sorted([tuple(a) for a in axes] + [(b, b + 0.045) for b in bars])
    assert spans[0][0] >= 0 and spans[-1][1] <= 1.0 + 1e-9
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(spans, spans[1:], strict=False))  # neighbours


def test_bad_panels_are_refused(res):
    with pytest.raises(ValueError, match="panels"):
        F.main_figure(F.map_view(res, 0), res.tokens, "t", ("dense", "heads"))


def test_long_inputs_are_pooled_and_regions_come_at_full_resolution():
    r = aw.compare(
        (build("llama"), ToyTokenizer()),
        "abcdefghij" * 30,
        mask="sink_window",
        sparsity=0.8,
        per_layer=False,
        continuation_tokens=0,
    )
    view = F.map_view(r, 0)
    assert view.factor == 2 and view.dense.shape == (150, 150)
    np.testing.assert_allclose(view.dense[3, 1], r.attention(0).mean(0)[6:8, 2:4].mean(), rtol=1e-5)
    assert set(np.unique(view.states())) <= {F.NOT_ALLOWED, F.KEPT, F.PARTLY_KEPT, F.DROPPED}
    assert F.PARTLY_KEPT in view.states()  # pooled cells across the window's edge
    zoom = F.map_view(r, 0, region=[200, 300, 150, 300])
    assert zoom.factor == 1 and zoom.dense.shape == (100, 150) and zoom.region == (200, 300, 150, 300)


def test_heavy_drops_are_the_heaviest_dropped_pairs(res):
    view = F.map_view(res, 2, head=0)
    drops = F.heavy_drops(view, limit=3)
    dropped = res.allowed_mask(2) & ~res.keep_mask(2)[0]
    weights = np.sort(res.attention(2)[0][dropped])[::-1][:3]
    np.testing.assert_allclose([d["w"] for d in drops], weights)
    for d in drops:
        assert dropped[d["q"], d["k"]]


def test_layer_and_mask_figures(res):
    fig = F.layer_figure([0.1, None, 2.0], [0.1], [1.0, 0.9, 0.8], 3, selected=2)
    assert fig["data"][0]["y"] == [0.1, None, 2.0] and fig["data"][0]["marker"]["line"]["width"] == [0, 0, 2.5]
    mask = F.mask_figure(F.map_view(res, 0), "m")
    z = mask["data"][0]["z"]
    assert np.isnan(z[0, 1]) and set(np.unique(z[~np.isnan(z)])) <= {0.0, 1.0}


def test_encode_sends_arrays_as_bytes():
    out = with_binary_arrays({"a": np.eye(2, dtype=np.float32), "b": [np.zeros((1, 3), np.uint8)], "c": (1, 2)})
    assert out["a"]["dtype"] == "f2" and np.frombuffer(out["a"]["data"], np.float16).tolist() == [1, 0, 0, 1]
    assert out["b"][0] == {"shape": [1, 3], "dtype": "u1", "data": bytes(3)} and out["c"] == [1, 2]
