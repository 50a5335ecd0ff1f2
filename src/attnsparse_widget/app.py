"""``attnsparse app``: the widget as a standalone web app, one full-page widget per browser session.

Served by Voila, not by a server of ours. The widget is an ipywidget (anywidget). Voila runs a notebook in a kernel
of its own for every page it serves and shows only the outputs, through Jupyter's own widget manager: controls,
views and export, with no notebook around them. marimo's app mode would need the widget wrapped in a marimo app
file and marimo's own runtime; Voila needs nothing beyond the Jupyter stack the widget already runs on.

A page load starts a kernel, and the kernel ends when the page goes (Voila's own rule, made to work here: see
:func:`voila_command`), or about a minute after its connection was lost when the page vanished without a word
(:data:`CULL_IDLE_S`). A reload gets a fresh kernel and a fresh widget. Voila runs through ``app_server.py``, which
guards its kernel websocket against a client that speaks the legacy framing (it froze the server). The page fetches
nothing off the machine: the template in ``app_files/`` removes the one CDN link of Voila's own template.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

TEMPLATE = "attnsparse"
APP_SERVER = Path(__file__).parent / "app_server.py"
APP_FILES = Path(__file__).parent / "app_files"  # holds voila/templates/attnsparse, found through JUPYTER_PATH
LOOPBACK = "127.0.0.1"
# a kernel with no page connected that has sent nothing for CULL_IDLE_S is shut down (checked every CULL_INTERVAL_S):
# the kernel of a page that vanished without a word (a crash, a lost network) ends about a minute after its last
# message. A page that reconnects within the minute keeps its kernel; a connected page is never culled.
CULL_IDLE_S = 60
CULL_INTERVAL_S = 10
# Voila loads every JupyterLab extension it finds; these throw in Voila's page (an error in the console): Notebook
# 7's, and jupytext's (installed with the docs tools)
DENIED_EXTENSIONS = ("@jupyter-notebook/lab-extension", "jupyterlab-jupytext")
VOILA_MISSING = "attnsparse app is served by Voila, which is not installed: pip install 'attnsparse-widget[app]'"


def app_notebook(
    model: str | None,
    text: str | None,
    mask: str = "sink_window",
    sparsity: float = 0.5,
    per_layer: bool = True,
    explore: bool = False,
) -> str:
    """The notebook Voila serves: one cell that shows the widget, or with ``explore`` the cost explorer (on the
    preset ``model`` names, else the embedded default model) (its source shown nowhere)."""
    text_arg = "" if text is None else f"text={text!r}, "  # None: the widget's own default text
    curve_arg = "" if per_layer else ", per_layer=False"
    if explore:
        source = f"import attnsparse_widget as aw\naw.explore({model!r})"
    else:
        source = (
            f"import attnsparse_widget as aw\n"
            f"aw.show({model!r}, {text_arg}mask={mask!r}, sparsity={sparsity!r}{curve_arg})"
        )
    cell: dict[str, object] = {
        "cell_type": "code",
        "execution_count": None,
        "id": "app",
        "metadata": {},
        "outputs": [],
        "source": source,
    }
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return json.dumps({"cells": [cell], "metadata": {"kernelspec": kernelspec}, "nbformat": 4, "nbformat_minor": 5})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str:
    return (
        f"attnsparse app: serving on {host}:{port}, beyond this machine. Anyone who can reach it can run the model "
        "on texts of their choosing and use this machine's processors and memory; there is no login. Use the "
        "default (127.0.0.1) unless you mean that."
    )


def voila_command(notebook: Path, port: int, host: str, open_browser: bool) -> list[str]:
    return [
        sys.executable,
        # Voila, its kernel websocket guarded (app_server.py), run by path: importing the package would load torch
        # into the server process (about 300 MB) for nothing
        "-c",
        f"import runpy; runpy.run_path({str(APP_SERVER)!r}, run_name='__main__')",
        str(notebook),
        f"--port={port}",
        f"--Voila.ip={host}",
        f"--template={TEMPLATE}",
        "--theme=light",
        "--strip_sources=True",
        *(f"--VoilaConfiguration.extension_denylist={name}" for name in DENIED_EXTENSIONS),
        # a page that goes asks Voila to end its kernel (a beacon, which cannot carry the XSRF token: refused with
        # 403 otherwise, and the kernel, holding a model, stayed). The app has no login to forge requests against;
        # kernel ids are random. Kernels of pages that vanish without a word (a crash) are culled once idle.
        "--Voila.tornado_settings=disable_check_xsrf=True",
        f"--MappingKernelManager.cull_idle_timeout={CULL_IDLE_S}",
        f"--MappingKernelManager.cull_interval={CULL_INTERVAL_S}",
        *([] if open_browser else ["--no-browser"]),
    ]


def serve(
    port: int = 8866,
    host: str = LOOPBACK,
    model: str | None = None,
    text: str | None = None,
    open_browser: bool = False,
    per_layer: bool = True,
    explore: bool = False,
) -> int:
    """Run the app until interrupted (Ctrl+C or SIGTERM); returns Voila's exit status. Stopping it stops Voila,
    whose shutdown ends every kernel it started."""
    if importlib.util.find_spec("voila") is None:
        raise ImportError(VOILA_MISSING)
    if not 0 < port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {port}")
    if not is_loopback(host):
        print(exposure_warning(host, port), file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="attnsparse-app-") as tmp:
        notebook = Path(tmp) / "attnsparse.ipynb"
        notebook.write_text(app_notebook(model, text, per_layer=per_layer, explore=explore), encoding="utf-8")
        paths = [str(APP_FILES), os.environ.get("JUPYTER_PATH", "")]
        env = {**os.environ, "JUPYTER_PATH": os.pathsep.join(p for p in paths if p)}
        print(f"attnsparse app: http://{host}:{port}/ (Ctrl+C stops it)", file=sys.stderr)
        proc = subprocess.Popen(voila_command(notebook, port, host, open_browser), env=env, cwd=tmp)
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGINT)  # Voila asks for confirmation after the first one
            try:
                return proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
