"""The teaching notebooks, each executed once per test session: tests/test_notebooks.py checks every run, and
tests/test_site.py builds the course site from all of them (through the ``notebook_runs`` fixture, so neither
depends on the order the tests run in, nor on the worker they run on).

Under pytest-xdist the workers share the runs through files in the session's common temporary folder: a lock per
notebook, and a ``.done`` (or ``.failed``) mark next to it. Whoever asks first runs a notebook; the others wait for
it and read its executed copy. ``run_all`` first takes the notebooks nobody has started, from the last one back, so
two workers that both need notebooks run them side by side.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import no_network
from filelock import FileLock, Timeout

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_docs  # noqa: E402 - scripts/ is not a package

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# the last cell of every run: proof that the kernel was offline (sitecustomize blocked the network as it started)
OFFLINE_PROOF = (
    "import socket, no_network\n"
    "try:\n    socket.create_connection(('93.184.215.14', 80), timeout=1)\n"
    "except no_network.NetworkBlocked:\n    print('offline: ok')"
)


class NotebookRuns:
    """Runs notebooks in fresh kernels with the network blocked, at the sizes of ``build_docs.NOTEBOOK_SIZES``,
    writing each executed copy to ``build_docs.EXECUTED`` (where the site's build takes it). ``shared`` is a folder
    of this test session that every worker sees."""

    def __init__(self, shared: Path) -> None:
        self._dir = shared / "notebook-runs"
        site = self._dir / f"offline-site-{os.getpid()}"
        site.mkdir(parents=True, exist_ok=True)
        (site / "sitecustomize.py").write_text(no_network.SITECUSTOMIZE.format(tests=str(Path(__file__).parent)))
        self._env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}

    def run(self, path: Path) -> nbformat.NotebookNode:
        """The executed notebook ``path``, run now unless this session ran it already (or is running it: then this
        waits). A run that failed fails every later request with its error, without running again."""
        with FileLock(self._lock(path)):
            return self._run_locked(path)

    def run_all(self) -> list[Path]:
        """Every notebook run; their executed copies."""
        # the ones nobody has taken yet, without waiting, from the last one back (a worker running
        # tests/test_notebooks.py takes them from the first one on: the two meet in the middle) ...
        for path in reversed(NOTEBOOKS):
            try:
                with FileLock(self._lock(path), timeout=0):
                    self._run_locked(path)
            except Timeout:
                continue  # another worker is running it
            except Exception:  # noqa: S110 - a failed run: the loop below raises its error
                continue
        for path in NOTEBOOKS:  # ... then the rest, waiting for whoever runs them
            self.run(path)
        return [build_docs.executed_path(path) for path in NOTEBOOKS]

    def _lock(self, path: Path) -> Path:
        return self._dir / f"{path.stem}.lock"

    def _run_locked(self, path: Path) -> nbformat.NotebookNode:
        done, failed = self._dir / f"{path.stem}.done", self._dir / f"{path.stem}.failed"
        if failed.is_file():
            raise RuntimeError(f"{path.name} failed to run in this session:\n{failed.read_text()}")
        if done.is_file():
            return nbformat.read(build_docs.executed_path(path), as_version=4)
        try:
            nb = build_docs.execute_notebook(
                path, build_docs.executed_path(path), env=self._env, extra_cells=(OFFLINE_PROOF,)
            )
        except Exception as error:
            failed.write_text(f"{type(error).__name__}: {error}")
            raise
        done.write_text("ok\n")
        return nb
