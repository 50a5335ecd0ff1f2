"""What a notebook holds is immutable: the widget's worker is held back at every stage of the pipeline, and a
``result`` read, an export and a cancel (a newer request) happen right there. Nothing half-filled is ever seen, and
a snapshot once read never changes afterwards."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm
from tiny_models import ToyTokenizer, build

import attnsparse_widget as aw
from attnsparse_widget import pipeline
from attnsparse_widget.figures import map_view, view_title
from attnsparse_widget.result import Comparison
from attnsparse_widget.widget import AttentionDiffWidget

pytestmark = pytest.mark.model

# longer than the 256-cell overview (one token a character): the sparse pass goes view first, and its other
# layers' maps are a stage of their own
TEXTS = tuple(
    (sentence + " ") * 5
    for sentence in (
        "the quick brown fox jumps over the lazy dog and runs far away",
        "a river bends around the old mill and the miller counts his sacks",
        "snow fell on the roofs of the village all through the long night",
    )
)
HELD = 30  # seconds a held worker waits at most (the test fails long before, if something blocks)


@pytest.fixture(autouse=True)
def dummy_comm():
    setup_test_comm()
    yield
    teardown_test_comm()


@pytest.fixture(scope="module")
def tiny():
    return build("llama"), ToyTokenizer()


@pytest.fixture(scope="module")
def adaptation(tiny):
    return aw.adapt(
        tiny, "sliding_window", 0.5, steps=2, texts=["one two three four five six"], own_data=False, progress=False
    )


class Gate:
    """Holds the widget's worker at the second step of ``stage`` once ``armed`` (the first step's snapshot is on
    screen by then: mid-stage), or inside the sparse pass: ``arrived`` is set there, and the worker goes on when
    ``go`` is."""

    def __init__(self, stage: str) -> None:
        self.stage, self.armed = stage, False
        self.arrived, self.go = threading.Event(), threading.Event()

    def hold(self) -> None:
        if self.armed:
            self.armed = False
            self.arrived.set()
            assert self.go.wait(HELD), "the test never let the worker go"

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_prepare, real_later = pipeline.prepare, pipeline.later_stages

        def prepare(*args, **kwargs):
            if self.stage == pipeline.SPARSE_PASS:
                self.hold()  # during the sparse pass: the previous snapshot is on screen
            return real_prepare(*args, **kwargs)

        def later_stages(res, request):
            seen = 0
            for progress in real_later(res, request):
                seen += progress.stage == self.stage
                if seen == 2:
                    self.hold()
                yield progress

        monkeypatch.setattr(pipeline, "prepare", prepare)
        monkeypatch.setattr(pipeline, "later_stages", later_stages)


def check_whole(res: Comparison) -> None:
    """A snapshot is consistent: every stage it says is done has all its values, and none it lacks has any (the
    per-layer curve may be part way, as the chart shows it filling in, but never longer than the layers)."""
    m, n = res.metrics, res.n_layers
    assert pipeline.SPARSE_PASS in res.done and m.achieved_sparsity is not None
    headline = pipeline.NEXT_TOKEN_METRICS in res.done
    assert (m.sparse_ppl is not None) == headline and (m.top1_agreement is not None) == headline
    assert (pipeline.ATTENTION_MAPS in res.done) == res.sparse.store.complete
    assert all(res.maps(layer)[0]["sparse"].shape == res.maps(0)[0]["sparse"].shape for layer in range(n))
    recall = pipeline.ATTENTION_METRICS in res.done
    assert (m.mass_recall is not None) == recall and (m.kl_per_head is not None) == recall
    if recall:
        assert len(m.mass_recall) == n and all(len(h) == res.n_heads for h in m.kl_per_head)
    adapted = pipeline.ADAPTED_PASS in res.done
    assert (res.adapted is not None) == adapted and (m.adapted_ppl is not None) == adapted
    if adapted and recall:
        assert m.adapted_mass_recall is not None and len(m.adapted_mass_recall) == n
    continued = pipeline.CONTINUATIONS in res.done
    assert bool(res.continuations) == continued
    if continued:
        assert set(res.continuations) == set(res.passes())
    timed = pipeline.ATTENTION_TIME in res.done
    assert (m.attention_time_dense is not None) == timed and (m.attention_time_sparse is not None) == timed
    if pipeline.PER_LAYER in res.done:
        assert len(m.per_layer_delta_ppl) == n and len(m.cumulative_delta_ppl) == n
    elif m.per_layer_delta_ppl is not None:  # part way: every view of the snapshot still draws (its title too)
        assert len(m.per_layer_delta_ppl) <= n and len(m.cumulative_delta_ppl) <= n
        for layer in range(n):
            map_view(res, layer, -1)
            view_title(res, map_view(res, layer, -1), per_layer=True)


def frozen(res: Comparison) -> tuple:
    """Everything a later stage could change on a comparison, copied."""
    passes = {name: (list(p.continuation), p.cache is None, dict(p.budgets)) for name, p in res.passes().items()}
    return repr(res.metrics), dict(res.continuations), set(res.done), res.adapted is None, passes  # repr: NaN == NaN


STAGES = tuple(s for s in pipeline.STAGES if s != pipeline.ADAPTING)  # the adaptation is given (adapting: below)


@pytest.mark.parametrize("stage", STAGES)
def test_read_export_and_cancel_while_the_worker_is_held_at_each_stage(
    tiny, adaptation, stage, monkeypatch, tmp_path: Path
):
    w = AttentionDiffWidget(
        tiny, adapted=adaptation, text=TEXTS[0], mask="sliding_window", sparsity=0.5, time_attention=True
    ).wait(120)
    first = w.result
    assert first is not None and set(first.done) == set(STAGES)
    first_state = frozen(first)
    gate = Gate(stage)
    gate.install(monkeypatch)
    gate.armed = True
    w.text = TEXTS[1]  # a new text: every stage runs again, and the worker stops at `stage`
    assert gate.arrived.wait(HELD), f"the worker never reached {stage!r}"
    try:
        held = w.result
        assert held is not None
        check_whole(held)
        if stage == pipeline.SPARSE_PASS:
            assert held is first  # the previous result stays on screen while the next pass runs
        else:
            assert held.text == TEXTS[1] and stage not in held.done and held is not first
        held_state = frozen(held)
        # an export reads the snapshot on screen and returns while the worker is still held
        done = threading.Event()
        paths: list[Path] = []

        def export() -> None:
            paths.append(held.export_png(tmp_path / "held.png", layer=1))
            if stage != pipeline.SPARSE_PASS:  # the widget's own export: its main view is on screen
                paths.append(w.export_png(tmp_path / "shown.png"))
            done.set()

        threading.Thread(target=export, daemon=True).start()
        assert done.wait(HELD), "an export waited for the held worker"
        assert all(p.stat().st_size > 1000 for p in paths)
        assert not gate.go.is_set() and w.result is held  # nothing was published meanwhile
        w.text = TEXTS[2]  # a newer request: the held run is abandoned
    finally:
        gate.go.set()
    w.wait(120)
    last = w.result
    assert last is not None and last.text == TEXTS[2] and set(last.done) == set(STAGES)
    check_whole(last)
    assert last.sparse.store.complete
    assert w.status["error"] is None and w.status["busy"] is False
    # nothing anyone read was changed by what ran after it
    for res, state in ((first, first_state), (held, held_state)):
        assert frozen(res) == state
    np.testing.assert_array_equal(first.attention(1), first.attention(1))  # still readable, not released


def test_read_export_and_cancel_while_the_worker_is_held_adapting(tiny, monkeypatch, tmp_path: Path):
    """The Adapt button's training (stage "adapting" on the comparison on screen), held at its second step: the
    snapshot on screen is whole, an export returns, and Cancel ends the training with the other stages done; Adapt
    again adds the adapted pass to the same comparison, with no pass run again. Nothing read changes afterwards."""
    monkeypatch.setenv("ATTNSPARSE_CACHE_DIR", str(tmp_path))  # the widget's adapters and samples go here
    w = AttentionDiffWidget(tiny, text=TEXTS[0], mask="sliding_window", sparsity=0.5, per_layer=False).wait(120)
    first = w.result
    assert first is not None and first.adaptation is None
    first_state = frozen(first)
    gate = Gate(pipeline.ADAPTING)
    gate.install(monkeypatch)
    gate.armed = True
    w.adapt(3)
    assert gate.arrived.wait(HELD), "the worker never reached the adapting stage"
    try:
        held = w.result
        assert held is not None and w.adaptation["state"] == "training"
        check_whole(held)
        assert held.adaptation is None and pipeline.ADAPTED_PASS not in held.done
        held_state = frozen(held)
        done = threading.Event()
        paths: list[Path] = []

        def export() -> None:
            paths.append(w.export_png(tmp_path / "shown.png"))
            done.set()

        threading.Thread(target=export, daemon=True).start()
        assert done.wait(HELD), "an export waited for the training"
        assert paths[0].stat().st_size > 1000
        w.cancel_adaptation()
    finally:
        gate.go.set()
    w.wait(120)
    assert w.adaptation["state"] == "cancelled" and w.adapted is None and w.status["busy"] is False
    cancelled = w.result
    assert cancelled is not None and cancelled.adapted is None and pipeline.ATTENTION_METRICS in cancelled.done
    check_whole(cancelled)
    runs = w._runs
    w.adapt(2)
    w.wait(120)
    assert w.adaptation["state"] == "ready" and w.adapted is not None and w.status["error"] is None
    last = w.result
    assert last is not None and pipeline.ADAPTED_PASS in last.done and set(last.continuations) == set(last.passes())
    check_whole(last)
    assert w._runs == runs and last.sparse.layer_outputs is first.sparse.layer_outputs  # the same sparse pass
    assert last.metrics.adapted_mass_recall is not None and last.metrics.mass_recall == first.metrics.mass_recall
    for res, state in ((first, first_state), (held, held_state)):
        assert frozen(res) == state
    w.close()


def test_compare_hands_back_the_final_snapshot_and_the_steps_hand_out_snapshots(tiny):
    """Every progress carries its own snapshot: a step's result does not change when the pipeline goes on."""
    seen = []
    for progress in pipeline.stages(tiny, pipeline.Request(TEXTS[0], "sliding_window", 0.5, continuation_tokens=3)):
        seen.append((progress, frozen(progress.result)))
    assert len({id(p.result) for p, _ in seen}) == len(seen)
    for progress, state in seen:
        check_whole(progress.result)
        assert frozen(progress.result) == state
    assert not seen[0][0].result.sparse.store.complete  # view first: the other layers' maps came later
    assert set(seen[-1][0].result.done) == {
        pipeline.SPARSE_PASS,
        pipeline.NEXT_TOKEN_METRICS,
        pipeline.ATTENTION_MAPS,
        pipeline.ATTENTION_METRICS,
        pipeline.CONTINUATIONS,
        pipeline.PER_LAYER,
    }
