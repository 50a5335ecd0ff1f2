"""What a new user sees first: `make demo`'s JupyterLab log without a dump of minified JavaScript, and a widget
whose every sign is in a font every platform has (an emoji shows as an empty box in Debian's Chromium)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .harness import jupyterlab

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]


def test_jupyterlab_starts_without_a_yarn_configuration_dump(tmp_path: Path) -> None:
    """JupyterLab asks its bundled yarn for the npm registry at start. Node ran that yarn as an ES module while our
    package.json said ``"type": "module"`` (the virtual environment lives inside the repository), and the failure
    logged a screenful of minified JavaScript; the frontend's package.json no longer claims the folder."""
    with jupyterlab(tmp_path):
        pass
    log = (tmp_path / "server.log").read_text()
    assert "Fail to get yarn configuration" not in log
    assert not [line for line in log.splitlines() if line.startswith("[E ")], log[-2000:]


def test_every_sign_the_frontend_shows_is_in_dejavu_sans() -> None:
    """Each non-ASCII character of the frontend's sources and of the user-facing texts has a glyph in DejaVu Sans
    (the font Debian, Colab's and most Linux browsers fall back to; macOS and Windows fonts cover these too)."""
    fc_list = shutil.which("fc-list")
    assert fc_list, "fontconfig's fc-list is installed with chromium by scripts/setup.sh"
    sources = [*(ROOT / "js").glob("*.ts"), *(ROOT / "js").glob("*.css"), ROOT / "src/attnsparse_widget/messages.py"]
    signs = {ch for path in sources for ch in path.read_text(encoding="utf-8") if ord(ch) > 127}
    assert signs, "the sources hold some non-ASCII signs (arrows, the middle dot): the check must see them"
    missing = []
    for ch in sorted(signs):
        families = subprocess.run(
            [fc_list, f":charset={ord(ch):04x}", "family"], capture_output=True, text=True, check=True
        ).stdout
        if "DejaVu Sans" not in families:
            missing.append(f"{ch} (U+{ord(ch):04X})")
    assert not missing, f"signs no DejaVu Sans font draws: {missing}"
