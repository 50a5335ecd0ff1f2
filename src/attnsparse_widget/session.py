"""A :class:`Session`: one worker thread that always computes the latest request, and the snapshot a reader sees.

The widget (and through it the app) submits requests by kind ("model": run the model again; "view": redraw from the
result on screen; "export", "adapt"). Requests coalesce: while the worker runs, new ones are gathered and drained
together afterwards, and a request that needs the model again makes every older model run *stale*, which the
worker checks between pipeline steps to abandon it. The worker publishes each stage's result as an immutable
snapshot (:meth:`~attnsparse_widget.result.Comparison.snapshot`); :attr:`Session.shown` is the latest one, and a
reader on another thread (an export from the notebook) works on it while the worker goes on: nothing it holds is
changed or released under it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .result import Comparison

MODEL = "model"  # the request kind that runs the model again (and makes older model runs stale)
Run = Callable[[set[str], int], None]  # the worker's job: the kinds drained at once, the model generation they serve
OnError = Callable[[BaseException], None]  # told of what a run raised (the session goes on with the next request)


class Session:
    """Runs ``run(kinds, model_generation)`` for the latest requests, on a worker thread when ``threaded`` (else in
    the caller's), and holds the snapshot on screen (:attr:`shown`)."""

    def __init__(self, run: Run, on_error: OnError, *, threaded: bool, name: str = "attnsparse-widget") -> None:
        self._run = run
        self._on_error = on_error
        self.threaded = threaded
        self._name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # notified when a snapshot is published or the worker stops
        self._pending: set[str] = set()  # what the worker still has to do
        self._generation = 0  # bumped by every request; the frontend waits for its own number
        self._model_generation = 0  # bumped by requests that need the model to run again
        self._running = False  # a worker is draining the requests (set and cleared under the lock)
        self._worker: threading.Thread | None = None
        self._shown: Comparison | None = None
        self._shown_generation = -1  # the model generation the shown snapshot answers

    # ------------------------------------------------------------------------------------------------ requests
    def submit(self, kind: str) -> None:
        """Ask for ``kind``; starts a worker when none runs (the running one picks it up otherwise)."""
        with self._lock:
            self._generation += 1
            if kind == MODEL:
                self._model_generation = self._generation
            self._pending.add(kind)
            start = not self._running
            self._running = True
        if not start:
            return
        if self.threaded:
            self._worker = threading.Thread(target=self._drain, name=self._name, daemon=True)
            self._worker.start()
        else:
            self._drain()

    def take(self, kind: str) -> bool:
        """Remove ``kind`` from the pending requests; whether it was there (the worker serves it right away)."""
        with self._lock:
            found = kind in self._pending
            self._pending.discard(kind)
            return found

    def stale(self, model_generation: int) -> bool:
        """Whether a newer request needs the model to run again (view requests never make a result stale)."""
        with self._lock:
            return model_generation != self._model_generation

    @property
    def generation(self) -> int:
        """The number of the latest request."""
        with self._lock:
            return self._generation

    @property
    def running(self) -> bool:
        with self._lock:
            return self._running

    # ------------------------------------------------------------------------------------------------ snapshots
    @property
    def shown(self) -> Comparison | None:
        """The snapshot on screen (None before the first one, or after an error)."""
        with self._lock:
            return self._shown

    def publish(self, snapshot: Comparison | None, model_generation: int) -> None:
        """Make ``snapshot`` the one on screen, as the answer to ``model_generation`` (None: that run failed)."""
        with self._changed:
            self._shown = snapshot
            self._shown_generation = model_generation
            self._changed.notify_all()

    def wait(self, timeout: float | None = None, until: Literal["done", "view"] = "done") -> None:
        """Block until the latest request is fully computed (``until="done"``), or until the snapshot on screen
        answers the latest model request (``"view"``: its main view is shown; later stages may still run).
        TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._running and not (until == "view" and self._shown_generation == self._model_generation):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("the widget is still computing")
                self._changed.wait(0.05 if left is None else min(left, 0.05))

    # ------------------------------------------------------------------------------------------------ the worker
    def _drain(self) -> None:
        try:
            while True:
                with self._changed:
                    if not self._pending:
                        self._running = False
                        self._changed.notify_all()
                        return
                    kinds, self._pending = self._pending, set()
                    model_generation = self._model_generation
                try:
                    self._run(kinds, model_generation)
                except Exception as err:  # noqa: BLE001 - the session must stay usable whatever happens
                    self._on_error(err)
        except BaseException as err:
            # interrupted (KeyboardInterrupt in the kernel's own thread): the next request must start a worker again
            with self._changed:
                self._running = False
                self._pending.clear()
                self._changed.notify_all()
            self._on_error(err)
            raise
