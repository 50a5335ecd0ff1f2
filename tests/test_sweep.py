"""Sweeps: every combination, a table against direct compare() calls, the degradation plot, and a real Dask
cluster of local processes as the executor."""

from __future__ import annotations

import math

import pytest

import attnsparse_widget as aw
from attnsparse_widget.sweep import COLUMNS

pytestmark = pytest.mark.model

MASKS = ["sliding_window", "sink_window", "topk"]
SPARSITIES = [0.3, 0.5, 0.7, 0.8, 0.9]


@pytest.fixture(scope="module")
def table(default_model):
    return aw.sweep(default_model, aw.sample_texts(), masks=MASKS, sparsities=SPARSITIES, progress=False)


def test_every_combination_once_in_a_stable_order(table):
    assert len(table) == 4 * 3 * 5
    assert [(r["text"], r["mask"], r["requested_sparsity"]) for r in table] == [
        (t, m, s) for t in range(4) for m in MASKS for s in SPARSITIES
    ]
    assert all(set(r) == set(COLUMNS) for r in table)


def test_records_equal_a_direct_compare(table, default_model):
    r = next(r for r in table if r["text"] == 1 and r["mask"] == "topk" and r["requested_sparsity"] == 0.7)
    res = aw.compare(
        default_model, aw.sample_texts()[1], mask="topk", sparsity=0.7, per_layer=False, continuation_tokens=0
    )
    assert r["sparse_ppl"] == res.metrics.sparse_ppl and r["achieved_sparsity"] == res.metrics.achieved_sparsity
    assert math.isclose(r["delta_ppl"], r["sparse_ppl"] - r["dense_ppl"])
    assert r["mask_label"] == res.mask_label and r["n_tokens"] == len(res.tokens)


def test_degradation_has_the_expected_shape(table):
    """More sparsity, more perplexity (on average over the texts), for the window; top-k degrades least."""
    mean = {(s["mask"], s["requested_sparsity"]): s["sparse_ppl"] for s in table.summary()}
    window = [mean[("sliding_window", s)] for s in SPARSITIES]
    assert window == sorted(window)
    assert mean[("topk", 0.9)] < mean[("sink_window", 0.9)] < mean[("sliding_window", 0.9)]


def test_pandas_and_plot(table):
    df = table.to_pandas()
    assert list(df.columns) == list(COLUMNS) and len(df) == 60
    fig = aw.plot_sweep(table)
    assert [t.name for t in fig.data][:3] == MASKS and len(fig.data[0].x) == 5
    assert list(fig.data[0].x) == sorted(fig.data[0].x)  # achieved sparsity grows with the request
    dense = [r["dense_ppl"] for r in table if r["mask"] == MASKS[0] and r["requested_sparsity"] == 0.3]
    assert fig.data[3].name.startswith("dense") and math.isclose(fig.data[3].y[0], sum(dense) / len(dense))
    assert fig.layout.yaxis.type == "log" and not fig.layout.annotations  # nothing placed in log units by mistake
    window = [r["sparse_ppl"] for r in table if r["mask"] == MASKS[0] and r["requested_sparsity"] == 0.9]
    assert math.isclose(fig.data[0].y[-1] + fig.data[0].error_y.array[-1], max(window))  # bars span the texts
    every = [r["sparse_ppl"] for r in table] + [fig.data[3].y[0]]
    lo, hi = fig.layout.yaxis.range  # set, so that plotly's log autorange cuts no bar's end
    assert lo < math.log10(min(every)) and math.log10(max(every)) < hi
    assert aw.plot_sweep(table, y="delta_ppl").layout.yaxis.title.text == "delta ppl"
    with pytest.raises(ValueError, match="y must be"):
        aw.plot_sweep(table, y="nope")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(texts="just one string"), "list of non-empty strings"),
        (dict(texts=[]), "texts"),
        (dict(masks=["windoww"]), "unknown mask"),
        (dict(sparsities=[1.2]), r"\[0, 1\)"),
        (dict(masks=[]), "masks"),
    ],
)
def test_bad_input(kwargs, pattern):
    args = {"texts": ["a b c"], "masks": ["topk"], "sparsities": [0.5], **kwargs}
    with pytest.raises((ValueError, TypeError), match=pattern):
        aw.sweep(None, progress=False, **args)


# How far the same computation may land in another process. Float32 sums come out in a different order wherever a
# kernel is chosen by the machine (instruction set, threads, memory alignment): the model's outputs move by about
# 1e-7 relative. Patterns fixed by positions (windows, sinks) are smooth in those outputs: measured across
# instruction sets (AVX2 vs AVX-512, the whole table below) their perplexities moved by at most 1.5e-6. Patterns
# chosen by the scores (top-k) are not: two keys whose scores tie within 1e-7 can swap places, which moves that
# row's attention by the weight of one key; measured across instruction sets, top-k perplexities moved by up to
# 2.8e-4 (the achieved sparsity not at all). The selections are the same computation in both processes; only float
# noise decides near-ties. (Measured 2026-12-03 with ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS and
# ONEDNN_MAX_CPU_ISA set to AVX2 against the AVX-512 default, one process each.)
POSITIONAL_RTOL = 1e-5
SCORE_DEPENDENT_RTOL = 1e-3


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_table(table):
    """The sweep on a real Dask cluster of two local worker processes gives the in-process table: the same rows,
    masks and budgets; the perplexities equal within the float noise each kind of pattern allows (see above)."""
    distributed = pytest.importorskip("distributed")  # a test extra: always installed by the setup
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = aw.sweep(
            None, aw.sample_texts(), masks=MASKS, sparsities=SPARSITIES, executor=client.get_executor(), progress=False
        )
        workers = client.run(lambda: __import__("os").getpid())
    assert len(workers) == 2
    assert [(r["text"], r["mask"], r["requested_sparsity"]) for r in remote] == [
        (r["text"], r["mask"], r["requested_sparsity"]) for r in table
    ]
    for a, b in zip(remote, table, strict=True):
        assert (a["mask_label"], a["n_tokens"], a["out_of_reach"]) == (
            b["mask_label"],
            b["n_tokens"],
            b["out_of_reach"],
        )
        assert math.isclose(a["dense_ppl"], b["dense_ppl"], rel_tol=POSITIONAL_RTOL), (a, b)
        score_dependent = aw.masks.get(a["mask"]).score_dependent
        assert math.isclose(a["achieved_sparsity"], b["achieved_sparsity"], abs_tol=1e-3 if score_dependent else 1e-12)
        rtol = SCORE_DEPENDENT_RTOL if score_dependent else POSITIONAL_RTOL
        assert math.isclose(a["sparse_ppl"], b["sparse_ppl"], rel_tol=rtol), (a, b)
