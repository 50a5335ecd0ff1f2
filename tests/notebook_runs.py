"""The teaching notebooks, each executed at most once per test session: tests/test_notebooks.py checks every run,
and tests/test_site.py builds the course site from all of them (through the ``notebook_runs`` fixture, so neither
depends on the order the tests run in)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
import no_network

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
    writing each executed copy to ``build_docs.EXECUTED`` (where the site's build takes it); each notebook runs once,
    and a failed run fails every later request for it the same way."""

    def __init__(self, scratch: Path) -> None:
        site = scratch / "offline-site"
        site.mkdir(parents=True, exist_ok=True)
        (site / "sitecustomize.py").write_text(no_network.SITECUSTOMIZE.format(tests=str(Path(__file__).parent)))
        self._env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
        self._runs: dict[Path, nbformat.NotebookNode | BaseException] = {}

    def run(self, path: Path) -> nbformat.NotebookNode:
        """The executed notebook ``path`` (run now unless it already ran in this session)."""
        if path not in self._runs:
            try:
                self._runs[path] = build_docs.execute_notebook(
                    path, self.executed(path), env=self._env, extra_cells=(OFFLINE_PROOF,)
                )
            except Exception as error:  # noqa: BLE001 - kept to fail the later requests with the same error
                self._runs[path] = error
        run = self._runs[path]
        if isinstance(run, BaseException):
            raise RuntimeError(f"{path.name} failed to run") from run
        return run

    def run_all(self) -> list[Path]:
        """Every notebook run; their executed copies."""
        for path in NOTEBOOKS:
            self.run(path)
        return [self.executed(path) for path in NOTEBOOKS]

    @staticmethod
    def executed(path: Path) -> Path:
        return build_docs.EXECUTED / path.name
