"""``AttentionDiffWidget``: the notebook view of a comparison. Python owns the state and the computation; the
frontend (``js/``) renders and reports intent by setting the input traits.

Changing ``text`` re-runs both passes, changing ``mask``/``sparsity``/``mask_params`` only the sparse pass (the
dense pass is cached), and changing ``layer``/``head``/``zoom`` runs no model at all. The Adapt control trains
LoRA adapters under the current mask (the pipeline's "adapting" stage on the comparison on screen, with progress
and Cancel), then adds its adapted pass; ``compare_with`` switches the views between the post-hoc and the adapted
pass. Requests coalesce: a worker thread always computes the latest state, abandons stale work between steps, and
never publishes a stale result. The per-layer perplexity curve fills in after the main view, one layer at a time.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import anywidget
import traitlets as t

from . import masks, pipeline
from .adapt import DEFAULT_STEPS, Adaptation, Training, estimate_seconds
from .bundle import css, esm
from .contract import AdaptState, DenseMap, Empty, Figure, Gallery, Info, MetricsPayload, NextTokenView, Status, View
from .explorer import CostExplorer, explore
from .export import gif_bytes
from .files import writable, write_atomically
from .messages import CAVEAT, curve_skipped_note
from .models import display_name, resolve_model
from .payload import (
    adapt_payload,
    failed_status,
    gallery_payload,
    info_payload,
    layer_chart_payload,
    metrics_payload,
    next_tokens_payload,
    status_payload,
    view_payload,
)
from .pipeline import Stages
from .result import Comparison
from .session import Session
from .tokens import max_positions

DEFAULT_TEXT = (
    "The lighthouse keeper wrote in his log every evening. The storm came from the west, and the ships stayed in "
    "the harbour until the wind turned."
)
_MODEL_INPUTS = ("text", "mask", "sparsity", "paper_budget", "mask_params", "max_tokens")
# the widget analyses a text up to the model's positions (max_position_embeddings); this many for a model that
# states none
MAX_TOKENS = 8192
CONTINUATION_TOKENS = 20  # greedy tokens generated under each regime
# the per-layer curve replays about two forward passes per layer: over this many tokens (minutes on a laptop CPU,
# about 40 min at 8192 for the default model) it runs only when the box is ticked again (see _skips_curve)
CURVE_TOKENS = 2048
PAINT_GRACE_S = 0.4  # at most this long, the later stages wait for the browser to paint the main view
# progress within a stage (the status, the filling per-layer chart, the adaptation's steps, the GIF's frames) goes to
# the browser at most once per this many seconds: ten a second reads as live, and every message goes to every page
# of the kernel and is buffered for a page whose connection is gone
PROGRESS_INTERVAL_S = 0.1
_VIEW_INPUTS = ("layer", "head", "zoom", "position", "compare_with")
# the stages whose end adds metrics (sent once, when the stage ends: the per-layer chart shows the curve filling in)
METRIC_STAGES = (
    pipeline.NEXT_TOKEN_METRICS,
    pipeline.PER_LAYER,
    pipeline.CONTINUATIONS,
    pipeline.ATTENTION_TIME,
    pipeline.ADAPTED_PASS,
)


class AttentionDiffWidget(anywidget.AnyWidget):
    """Dense vs sparse attention of one model on one text, with controls that re-run the engine."""

    _esm = esm()
    _css = css()

    # inputs: set from Python or by the frontend's controls
    text = t.Unicode(DEFAULT_TEXT).tag(sync=True)
    mask = t.Unicode("sink_window").tag(sync=True)
    sparsity = t.Float(0.5).tag(sync=True)
    mask_params = t.Dict().tag(sync=True)
    layer = t.Int(0).tag(sync=True)
    head = t.Int(-1).tag(sync=True)  # -1: the mean over heads
    zoom = t.List(t.Int(), default_value=[]).tag(sync=True)  # [q0, q1, k0, k1] or [] for the whole map
    position = t.Int(-1).tag(sync=True)  # query position of the next-token top-5 (-1: the last)

    # outputs: computed here, drawn by the frontend; their shapes are the contract with js/ (contract.py): the casts
    # make mypy check what is assigned to them (reading them stays untyped)
    catalog: t.List[Any] = t.List().tag(sync=True)
    caveat = t.Unicode(CAVEAT).tag(sync=True)
    info = cast("t.TraitType[Any, Info | Empty]", t.Dict().tag(sync=True))
    tokens = t.List(t.Unicode()).tag(sync=True)  # the tokens as readable strings (apart from info: sent once a text)
    metrics = cast("t.TraitType[Any, MetricsPayload | Empty]", t.Dict().tag(sync=True))
    view = cast("t.TraitType[Any, View | Empty]", t.Dict().tag(sync=True))
    dense_map = cast("t.TraitType[Any, DenseMap | Empty]", t.Dict().tag(sync=True))  # the view's dense values
    next_tokens = cast("t.TraitType[Any, NextTokenView | Empty]", t.Dict().tag(sync=True))  # top-5 after position
    # the per-layer perplexity figure (fills in as it is computed)
    layer_chart = cast("t.TraitType[Any, Figure | Empty]", t.Dict().tag(sync=True))
    gallery = cast("t.TraitType[Any, Gallery | Empty]", t.Dict().tag(sync=True))
    status = cast("t.TraitType[Any, Status]", t.Dict(dict(status_payload(busy=False))).tag(sync=True))
    export_path = t.Unicode("").tag(sync=True)  # the Export button also writes its GIF here when set
    export_overwrite = t.Bool(False)  # ... replacing a file already there (never without it)
    per_layer = t.Bool(True).tag(sync=True)  # compute the per-layer perplexity curve (about 2L replayed passes)
    # measure the attention's wall time, dense against the mask on a block-sparse kernel (Mask tab; compiles once)
    time_attention = t.Bool(False).tag(sync=True)
    paper_budget = t.Bool(False).tag(sync=True)  # the mask as its paper ships it (sparsity="paper")
    explorer = anywidget.WidgetTrait().tag(sync=True)  # the cost explorer the Cost tab opened (None: not yet)
    max_tokens = t.Int(MAX_TOKENS).tag(sync=True)  # a longer text is cut to its first max_tokens (with a note)
    compare_with = t.Unicode("sparse").tag(sync=True)  # the masked pass shown: "sparse" (post-hoc) or "adapted"
    adapt_steps = t.Int(DEFAULT_STEPS).tag(sync=True)  # training steps of the Adapt button
    adaptation = cast("t.TraitType[Any, AdaptState]", t.Dict(dict(adapt_payload("none", None))).tag(sync=True))

    def __init__(
        self,
        model: Any = None,
        tokenizer: Any = None,
        *,
        threaded: bool | None = None,
        adapted: Adaptation | None = None,
        **kwargs: Any,
    ) -> None:
        """``threaded``: compute in a worker thread so the kernel stays responsive and rapid changes coalesce (the
        default), or in the kernel's own thread (``False``). None picks the worker thread everywhere except Google
        Colab, whose frontend holds widget messages sent from a background thread until the next message from the
        main thread (googlecolab/colabtools#3373). ``adapted``: an adaptation of this model made earlier
        (:func:`~attnsparse_widget.adapt`), shown while the mask and sparsity are the ones it was trained at."""
        self._model, self._tokenizer = resolve_model(model, tokenizer)
        self._adaptation: Adaptation | None = adapted
        self._cancel_adapt = threading.Event()
        self._seconds_per_step: float | None = None
        self._threaded = ("google.colab" not in sys.modules) if threaded is None else threaded
        # the worker, the coalescing of requests ("model", "view", "export", "adapt") and the snapshot on screen
        self._session = Session(self._run, self._failed, threaded=self._threaded)
        self._lock = threading.Lock()  # guards _export_request
        # the pipeline's working comparison of the snapshot on screen: only the worker touches it (later stages fill
        # it in when switched on); readers get snapshots
        self._working: Comparison | None = None
        self._runs = 0  # pipeline runs started (a new working comparison each)
        self._gallery_of: tuple[int, str] | None = None  # the run and masked pass the published gallery shows
        self._progress_sent = ("", 0.0)  # the stage and time.monotonic() of the last progress message
        self._painted = threading.Event()  # set when a frontend reports a painted main view
        self._frontend_painted = False  # a frontend has reported one: it is displayed somewhere
        self._export_request: Mapping[str, Any] = MappingProxyType({})  # the Export button's options (read-only)
        # the per-layer curve of a text over CURVE_TOKENS runs only once asked for (the box ticked after the widget
        # switched it off for such a text); the flag marks the widget's own switch, which must not count as asking
        self._curve_wanted = False
        self._curve_switched_off = False
        self.on_msg(self._on_custom_message)
        params = {k: kwargs.pop(k) for k in list(kwargs) if k not in self.trait_names()}
        if params:
            kwargs["mask_params"] = {**kwargs.get("mask_params", {}), **params}
        kwargs.setdefault("max_tokens", max_positions(self._model) or MAX_TOKENS)
        super().__init__(**kwargs)
        self.catalog = [
            {k: info[k] for k in ("id", "description", "paper", "budget", "params", "score_dependent")}
            for info in masks.available()
        ]
        self.observe(self._on_model_input, names=list(_MODEL_INPUTS))
        self.observe(self._on_view_input, names=list(_VIEW_INPUTS))
        # switched on: the curve or the timing of the current result
        self.observe(self._on_view_input, names=["time_attention"])
        self.observe(self._on_per_layer, names=["per_layer"])
        if adapted is not None:
            self.adaptation = adapt_payload("ready", None, adaptation=adapted)
        self._submit("model")

    # ----------------------------------------------------------------------------------------------- requests
    def _on_model_input(self, change: dict[str, Any]) -> None:
        self._submit("model")

    def _on_view_input(self, change: dict[str, Any]) -> None:
        self._submit("view")

    def _on_per_layer(self, change: dict[str, Any]) -> None:
        if self._curve_switched_off:  # the widget itself switched it off (a long text): nothing to run
            return
        if change["new"]:
            self._curve_wanted = True  # asked for: from now on also for long texts
        self._submit("view")

    def _on_custom_message(self, _widget: Any, content: dict[str, Any], _buffers: list[bytes]) -> None:
        if isinstance(content, dict) and content.get("type") == "painted":
            self._frontend_painted = True
            self._painted.set()
        if isinstance(content, dict) and content.get("type") == "export_gif":
            options: dict[str, Any] = {k: content[k] for k in ("view", "duration_ms") if k in content}
            with self._lock:  # the worker reads it (_export): one read-only value, swapped under the lock
                self._export_request = MappingProxyType(options)
            self._submit("export")
        if isinstance(content, dict) and content.get("type") == "adapt":
            self.adapt()
        if isinstance(content, dict) and content.get("type") == "cancel_adapt":
            self.cancel_adaptation()
        if isinstance(content, dict) and content.get("type") == "explore":
            self._open_explorer()

    def _open_explorer(self) -> None:
        """The Cost tab's button: the cost explorer on the comparison on screen, shown inside the widget (the
        explorer it replaces is closed). The button is enabled once a comparison is on screen."""
        if self.result is None:
            return
        previous, self.explorer = self.explorer, self.explore()
        if previous is not None:
            previous.close()

    def adapt(self, steps: int | None = None) -> AttentionDiffWidget:
        """Train adapters under the current mask and sparsity (``steps``: default ``adapt_steps``), then show the
        comparison with its adapted pass (what the Adapt button does; progress in ``adaptation``). Returns at once
        when threaded; :meth:`wait` blocks until it is done."""
        if steps is not None:
            self.adapt_steps = steps
        self._cancel_adapt.clear()
        self._submit("adapt")
        return self

    def cancel_adaptation(self) -> None:
        """Stop a running adaptation (the Cancel button): nothing is written, the model is unchanged."""
        self._cancel_adapt.set()

    @property
    def adapted(self) -> Adaptation | None:
        """The last adaptation made or given (it applies while the mask and sparsity are the ones it was trained at)."""
        return self._adaptation

    def _submit(self, kind: str) -> None:
        self._session.submit(kind)

    def wait(self, timeout: float | None = 120, *, until: Literal["done", "view"] = "done") -> AttentionDiffWidget:
        """Block until the latest request is fully computed, per-layer curve included (``until="done"``), or until
        its main view is on screen (``until="view"``; later stages go on). Returns the widget."""
        self._session.wait(timeout, until=until)
        return self

    @property
    def result(self) -> Comparison | None:
        """The comparison on screen, as an immutable snapshot: the worker fills in later stages on its own copy and
        publishes each as a new snapshot, so this object never changes under you (read ``w.result`` again for the
        latest). None before the first one or after an error."""
        return self._session.shown

    @property
    def _result(self) -> Comparison | None:
        return self._session.shown

    def _take(self, kind: str) -> bool:
        return self._session.take(kind)

    def _stale(self, model_generation: int) -> bool:
        return self._session.stale(model_generation)

    def _failed(self, err: BaseException) -> None:
        """What a request raised, on screen (the widget stays usable; an interrupt needs a new change to go on)."""
        message = (
            f"{type(err).__name__}: {err}"
            if isinstance(err, Exception)
            else "interrupted; change a control to run again"
        )
        self.status = failed_status(self.status, message, request=self._session.generation)

    def _status(
        self, busy: bool, stage: str = "", started: float | None = None, *, progress: float | None = None
    ) -> None:
        """Publish a status without error (``started`` None: the current request's start)."""
        request = self._session.generation if not busy else self.status.get("request", 0)
        self.status = status_payload(
            busy=busy,
            stage=stage,
            started=self.status.get("started", 0.0) if started is None else started,
            request=request,
            progress=progress,
        )

    def _progress_due(self, stage: str, fraction: float | None) -> bool:
        """Whether a progress update of ``stage`` goes to the browser now: a stage's start and end always go, the steps
        between at most once per :data:`PROGRESS_INTERVAL_S` (a skipped one is carried by the next)."""
        now = time.monotonic()
        last_stage, last_time = self._progress_sent
        within = fraction is not None and 0.0 < fraction < 1.0
        if stage == last_stage and within and now - last_time < PROGRESS_INTERVAL_S:
            return False
        self._progress_sent = (stage, now)
        return True

    # -------------------------------------------------------------------------------------------- computation
    def _run(self, kinds: set[str], model_generation: int) -> None:
        started = time.time() * 1000
        steps: Stages | None = None
        # the Adapt button: the pipeline's "adapting" stage on the comparison on screen (no pass runs again)
        train = Training(steps=self.adapt_steps) if "adapt" in kinds else None
        if "model" in kinds or self._working is None:
            self._status(True, "running the model", started)
            if self._working is not None:  # the worker's own copy: its caches go before the next pass runs
                self._working.release()  # (the snapshot on screen stays as it is)
                self._working = None
            try:
                skip_curve = self._skips_curve()
                request = self._request(self.per_layer and not skip_curve, skipped_curve=skip_curve, train=train)
                working = pipeline.prepare((self._model, self._tokenizer), request)  # the sparse pass, the headline
            except Exception as err:  # noqa: BLE001 - shown in the widget; the kernel must stay usable
                if not self._stale(model_generation):
                    self._session.publish(None, model_generation)
                    expected = isinstance(err, (ValueError, TypeError, NotImplementedError))
                    self.status = status_payload(
                        busy=False,
                        error=str(err) if expected else f"{type(err).__name__}: {err}",
                        detail="" if expected else traceback.format_exc(limit=3),
                        started=started,
                        request=self._session.generation,
                    )
                return
            if self._stale(model_generation):
                return
            self._working, self._runs = working, self._runs + 1
            res = working.snapshot()
            if skip_curve:
                self._curve_switched_off = True
                try:
                    self.per_layer = False
                finally:
                    self._curve_switched_off = False
            self._take("view")  # published right here
            self._painted.clear()
            self._session.publish(res, model_generation)
            with self.hold_sync():  # the main view and the headline metrics, in one message
                self.info = info_payload(res)
                self.tokens = list(res.tokens)  # sent only when the text's tokens changed
                self.metrics = metrics_payload(res)
                self._publish_view(res)
                following = next((s for s in pipeline.STAGES if s not in res.done), pipeline.ATTENTION_METRICS)
                self._status(True, following, started, progress=0.0)
            if self._threaded and self._frontend_painted:
                # let the browser paint before the next stage takes every core (on a laptop the kernel and the
                # browser share them): the frontend says when it has painted; never wait long for it
                self._painted.wait(PAINT_GRACE_S)
            steps = pipeline.later_stages(working, request)
        elif (shown := self._result) is not None and "view" in kinds:
            self._publish_view(shown)
            self._publish_gallery(shown)
        if self._working is not None:
            if steps is None:  # a view request: the stages this result still lacks (the curve, once switched on)
                steps = pipeline.later_stages(self._working, self._request(self.per_layer, train=train))
            if not self._followed(steps, model_generation, started, train is not None):
                return
        if ("export" in kinds or self._take("export")) and self._result is not None:
            if not self._export(started):
                return  # its error stays on screen
        if self._seconds_per_step is None and self._result is not None and self._result.is_lm:
            self._seconds_per_step = estimate_seconds(self._model, 1)
            self.adaptation = cast(AdaptState, {**self.adaptation, "seconds_per_step": self._seconds_per_step})
        if not self._stale(model_generation):
            self._status(False)

    def _request(
        self, per_layer: bool, *, skipped_curve: bool = False, train: Training | None = None
    ) -> pipeline.Request:
        """The run the controls ask for now (``per_layer``: whether it includes the per-layer curve;
        ``skipped_curve``: the widget left the curve out for this long text, which the result's notes say;
        ``train``: the Adapt button's training)."""
        return pipeline.Request(
            text=self.text,
            mask=self.mask,
            sparsity=masks.PAPER if self.paper_budget else self.sparsity,
            mask_params=self.mask_params,
            per_layer=per_layer,
            continuation_tokens=CONTINUATION_TOKENS,
            max_tokens=self._token_limit(),
            time_attention=self.time_attention,
            adapted=self._current_adaptation(),
            layer=self.layer,
            warm_kernel=True,
            train=train,
            notes=(curve_skipped_note(min(self._token_count(), self._token_limit()), CURVE_TOKENS),)
            if skipped_curve
            else (),
        )

    def _current_adaptation(self) -> Adaptation | None:
        """The adaptation, if it was trained under the current mask, sparsity and parameters."""
        a = self._adaptation
        if a is None or a.mask_id != self.mask or abs(a.sparsity - self.sparsity) > 1e-9:
            return None
        return a if a.mask_params == dict(self.mask_params) else None

    def _followed(self, steps: Stages, model_generation: int, started: float, training: bool) -> bool:
        """:meth:`_follow`, and when the run trains an adaptation (``training``), its ends: the Cancel button (the
        comparison's other stages go on without it), a newer model request (cancelled too) or a failure (said in
        ``adaptation`` and the status). False when the run ends here."""
        try:
            if self._follow(steps, model_generation, started):
                return True
        except (ValueError, TypeError) as err:
            if not (training and self.adaptation.get("state") == "training"):
                raise
            self.adaptation = adapt_payload("failed", self._seconds_per_step, error=str(err))
            self.status = failed_status(self.status, f"adapt: {err}")
            return False
        if training and self.adaptation.get("state") == "training":
            self.adaptation = cast(AdaptState, {**self.adaptation, "state": "cancelled"})  # at its last step shown
            if not self._stale(model_generation) and self._working is not None:
                return self._follow(
                    pipeline.later_stages(self._working, self._request(self.per_layer)), model_generation, started
                )
        return False

    def _masked(self, res: Comparison) -> str:
        """The masked pass the views show: ``compare_with`` when the result has it, else the post-hoc one."""
        return "adapted" if self.compare_with == "adapted" and res.adapted is not None else "sparse"

    def _follow(self, steps: Stages, model_generation: int, started: float) -> bool:
        """Publish the pipeline's later stages as they fill in (the attention metrics and the head gallery, the
        continuations, the per-layer curve one replayed pass at a time), each as a new snapshot, serving view
        requests (layer, head, zoom) between steps. False when a newer model request made the result stale: the
        rest is abandoned."""
        with contextlib.closing(steps):
            for progress in steps:
                if self._stale(model_generation):
                    return False  # a newer request needs the model: stop, its own stages will follow
                if progress.stage == pipeline.ADAPTING and self._cancel_adapt.is_set():
                    return False  # the Cancel button: nothing is written, the model is unchanged
                res = progress.result
                finished = progress.done == progress.total  # a finished stage adds metrics (and maps: the adapted)
                view = self._take("view")
                if not (view or finished or self._progress_due(progress.stage, progress.fraction)):
                    continue  # the next update carries this one's values (the chart is drawn from the result)
                self._session.publish(res, model_generation)  # every stage's last step comes here (finished)
                with self.hold_sync():
                    if progress.stage == pipeline.ADAPTING:
                        self._adapting(progress)
                    if finished and progress.stage in METRIC_STAGES:
                        self.metrics = metrics_payload(res)
                    self._publish_gallery(res)
                    if view or (finished and progress.stage == pipeline.ADAPTED_PASS):
                        self._publish_view(res)  # the adapted pass adds its maps and next tokens
                    elif finished and progress.stage == pipeline.NEXT_TOKEN_METRICS:
                        self.next_tokens = next_tokens_payload(res, self.position)
                        self._publish_layer_chart(res)
                    elif progress.stage == pipeline.PER_LAYER:  # the curve fills in (the metrics follow at its end)
                        self._publish_layer_chart(res)
                    self._status(True, progress.stage, started, progress=progress.fraction)
        if (shown := self._result) is not None:
            self._publish_gallery(shown)
        return not self._stale(model_generation)

    def _adapting(self, progress: pipeline.Progress) -> None:
        """The ``adaptation`` trait during the "adapting" stage: the training's steps, then the adaptation made."""
        adaptation = progress.result.adaptation
        if adaptation is None:
            self.adaptation = adapt_payload("training", self._seconds_per_step, progress=progress.training)
        else:
            self._adaptation = adaptation
            self.adaptation = adapt_payload("ready", self._seconds_per_step, adaptation=adaptation)

    def _publish_gallery(self, res: Comparison) -> None:
        """The head gallery and the chart's recall line, once the attention metrics are in (once per result)."""
        if pipeline.ATTENTION_METRICS not in res.done:
            return
        which = self._masked(res)
        if self.gallery and self._gallery_of == (self._runs, which):
            return
        with self.hold_sync():
            self.metrics = metrics_payload(res)
            self.gallery = gallery_payload(res, which=which)
            self._gallery_of = (self._runs, which)
            self._publish_layer_chart(res)

    def _export(self, started: float) -> bool:
        """The GIF of the current settings, sent to the browser as a download (and written to ``export_path``);
        False when it failed (the error is on screen)."""
        res = self._result
        assert res is not None
        with self._lock:
            request = self._export_request
        self._status(True, "exporting GIF", started, progress=0.0)
        target = None
        if self.export_path:
            try:
                target = writable(self.export_path, self.export_overwrite)
            except FileExistsError:
                self.status = failed_status(
                    self.status,
                    f"GIF export: {self.export_path!r} already exists; set w.export_overwrite = True to replace it, "
                    f"or set another w.export_path",
                )
                return False
            except OSError as err:
                self.status = failed_status(self.status, f"GIF export: {err}")
                return False

        def progress(done: int, total: int) -> None:
            if self._progress_due("exporting GIF", done / total):
                self._status(True, "exporting GIF", started, progress=done / total)

        try:
            data = gif_bytes(
                res,
                head=None if self.head < 0 else self.head,
                progress=progress,
                view=request.get("view", "side_by_side"),
                duration_ms=request.get("duration_ms", 700),
                which=self._masked(res),  # the masked pass on screen
            )
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self.status = failed_status(self.status, f"GIF export failed: {err}")
            return False
        adapted = "-adapted" if self._masked(res) == "adapted" else ""
        name = f"attnsparse-{res.mask.id}-{round(100 * res.metrics.achieved_sparsity)}pct{adapted}.gif"
        if target is not None:
            write_atomically(target, data)
        self.send({"type": "download", "filename": name, "mime": "image/gif"}, buffers=[data])
        return True

    def export_gif(self, path: str | Path | None = None, **kwargs: Any) -> Any:
        """Write the GIF of what the widget shows (mask, sparsity, head) to ``path`` (default: ``export_path``);
        keyword arguments go to :meth:`Comparison.export_gif` (``overwrite=True`` to replace an existing file).
        Returns its report."""
        res, kwargs = self._shown(kwargs)
        target = path or self.export_path
        if not target:
            raise ValueError("pass a path, e.g. w.export_gif('layers.gif'), or set w.export_path")
        return res.export_gif(target, **kwargs)

    def explore(self, **settings: Any) -> CostExplorer:
        """The cost explorer on the comparison on screen: this model, this text's length and the keep-mask the
        pass applied at the shown layer (:func:`~attnsparse_widget.explorer.explore`; ``settings`` as there)."""
        res = self.result
        if res is None:
            raise RuntimeError("nothing to explore yet: the widget has no comparison on screen (w.wait() first)")
        return explore(res, layer=self.layer, **settings)

    def export_png(self, path: str | Path, **kwargs: Any) -> Path:
        """Write a PNG of the main view the widget shows (layer, head, mask, sparsity) to ``path``, once its work
        is done; keyword arguments go to :meth:`Comparison.export_png` (``overwrite=True`` to replace a file)."""
        res, kwargs = self._shown(kwargs)
        kwargs.setdefault("layer", min(max(self.layer, 0), res.n_layers - 1))
        return res.export_png(path, **kwargs)

    def _shown(self, kwargs: dict[str, Any]) -> tuple[Comparison, dict[str, Any]]:
        """The snapshot on screen, once the latest request's main view is there (later stages may still run: the
        export reads the snapshot, which the worker never changes), and an export's arguments defaulting to the
        head and the masked pass the widget shows."""
        self.wait(None, until="view")
        res = self._result
        if res is None:
            raise RuntimeError("the widget has no result to export (see its error message)")
        kwargs = {"head": None if self.head < 0 else self.head, "which": self._masked(res), **kwargs}
        return res, kwargs

    def _publish_view(self, res: Comparison) -> None:
        """The main view, its dense values (sent only when they changed: traitlets sends no equal value) and the
        per-layer chart, in one message."""
        layer = min(max(self.layer, 0), res.n_layers - 1)
        head = self.head if -1 <= self.head < res.n_heads else -1
        view, dense = view_payload(res, layer, head, self.zoom or None, which=self._masked(res))
        with self.hold_sync():
            self.dense_map = dense
            self.view = view
            self.next_tokens = next_tokens_payload(res, self.position)
            self._publish_layer_chart(res)

    def _publish_layer_chart(self, res: Comparison) -> None:
        """The per-layer chart from the metrics as far as they are computed."""
        self.layer_chart = layer_chart_payload(res, self.layer)

    def _skips_curve(self) -> bool:
        """Whether this text is too long for the per-layer curve to run unasked (see :data:`CURVE_TOKENS`)."""
        if not self.per_layer or self._curve_wanted or self._tokenizer is None or not isinstance(self.text, str):
            return False
        return self._token_count() > CURVE_TOKENS

    def _token_count(self) -> int:
        """Tokens of ``text`` (before any cut)."""
        assert self._tokenizer is not None
        return int(self._tokenizer(self.text, return_tensors="pt").input_ids.shape[-1])

    def _token_limit(self) -> int:
        """``max_tokens``, and never more than the model's positions: a long text is cut, with a note."""
        if isinstance(self.max_tokens, bool) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {self.max_tokens!r}; e.g. w.max_tokens = 4096")
        positions = max_positions(self._model)
        return self.max_tokens if positions is None else min(self.max_tokens, positions)


def show(
    model: Any = None,
    text: str = DEFAULT_TEXT,
    mask: str = "sink_window",
    sparsity: float | Literal["paper"] = 0.5,
    *,
    tokenizer: Any = None,
    **options: Any,
) -> AttentionDiffWidget:
    """Display dense vs sparse attention of ``model`` on ``text`` inline; ``model=None`` is the embedded default.

    ``options`` are the mask's own parameters (``window=64``) and the widget's settings (``layer=12``, ``head=3``,
    ``per_layer=False`` to skip the per-layer curve on long texts, ``export_path="layers.gif"``). Returns the
    widget: set ``w.sparsity = 0.8`` or ``w.mask = "topk"`` from Python, or use its controls. ``sparsity="paper"``
    runs the mask as its paper ships it (``w.paper_budget``, the "paper" box beside the slider).
    """
    if sparsity == masks.PAPER:  # the "paper" choice beside the slider
        return AttentionDiffWidget(model, tokenizer, text=text, mask=mask, paper_budget=True, **options)
    return AttentionDiffWidget(model, tokenizer, text=text, mask=mask, sparsity=sparsity, **options)


__all__ = ["AttentionDiffWidget", "display_name", "show"]
