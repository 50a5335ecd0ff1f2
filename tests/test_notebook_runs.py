"""The notebook runs the test workers share (tests/notebook_runs.py): two processes asking for every notebook at
once run each one exactly once between them, side by side, and a failed run fails every request without running
again. The execution itself is replaced by a stand-in that records who ran what (the real runs are the notebooks
tier's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

WORKER = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
import nbformat, notebook_runs as nr

def stand_in(path, dst, env=None, extra_cells=()):
    with open({log!r}, "a") as log:
        log.write(json.dumps([os.getpid(), path.name]) + "\\n")
    time.sleep(0.3)
    if path.name == {failing!r}:
        raise ValueError("a cell failed")
    return nbformat.v4.new_notebook()

nr.build_docs.execute_notebook = stand_in
nr.nbformat.read = lambda *args, **kwargs: nbformat.v4.new_notebook()
runs = nr.NotebookRuns(nr.Path({shared!r}))
errors = []
if sys.argv[1] == "each":  # as tests/test_notebooks.py asks: one notebook after the other
    for path in nr.NOTEBOOKS:
        try:
            runs.run(path)
        except Exception as error:
            errors.append(str(error))
else:  # as tests/test_site.py asks: all of them
    try:
        runs.run_all()
    except Exception as error:
        errors.append(str(error))
print(json.dumps(errors))
"""


def run_two_workers(tmp_path: Path, failing: str = "") -> tuple[list[list], list[list[str]]]:
    log = tmp_path / "runs.log"
    script = WORKER.format(
        tests=str(Path(__file__).parent), log=str(log), failing=failing, shared=str(tmp_path / "shared")
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", script, kind], stdout=subprocess.PIPE) for kind in ("each", "all")
    ]
    errors = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    return [json.loads(line) for line in log.read_text().splitlines()], errors


def test_two_workers_run_each_notebook_once_between_them(tmp_path: Path) -> None:
    from notebook_runs import NOTEBOOKS

    runs, errors = run_two_workers(tmp_path)
    assert sorted(name for _, name in runs) == sorted(p.name for p in NOTEBOOKS)  # each exactly once
    assert len({pid for pid, _ in runs}) == 2  # by both workers
    assert errors == [[], []]


def test_a_failed_run_fails_every_request_without_running_again(tmp_path: Path) -> None:
    runs, errors = run_two_workers(tmp_path, failing="03_attention_sinks.ipynb")
    assert [name for _, name in runs].count("03_attention_sinks.ipynb") == 1
    for worker_errors in errors:  # each worker: that one notebook failed, with the cell's error
        assert len(worker_errors) == 1 and "a cell failed" in worker_errors[0], errors
