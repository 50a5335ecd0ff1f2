"""The course site (``make docs``, scripts/build_docs.py): built from the notebooks the test suite executed (this
file runs after tests/test_notebooks.py), then three pages opened from the file system in Debian's Chromium: no
errors, the figures and widget pictures present, and nothing requested off the machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "docs" / "_build" / "html"
LOCAL = ("file:", "data:", "blob:", "about:")
# a resource the page itself loads (not a link the reader may follow)
REMOTE_RESOURCE = re.compile(
    r"<(?:script|img|iframe|source)[^>]+src=[\"']?(?:https?:)?//"  # a script, picture or frame
    r"|<link[^>]+href=[\"']?(?:https?:)?//"  # a style sheet, font or icon
)


@pytest.fixture(scope="module")
def site() -> Path:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_docs.py")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return SITE


def test_site_has_every_page_and_loads_nothing_remote(site: Path) -> None:
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    course = {f"notebooks/{p.stem}.html" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert {"index.html", "masks.html", "api.html"} | course <= pages
    for page in pages:
        text = (site / page).read_text(encoding="utf-8")
        assert not REMOTE_RESOURCE.search(text), f"{page} loads {REMOTE_RESOURCE.search(text).group(0)!r}"
        assert "widget-state+json" not in text  # the saved widget state would pull the widget manager from a CDN
    api = (site / "api.html").read_text(encoding="utf-8")
    assert "compare" in api and "AttentionDiffWidget" in api and "sweep" in api


def test_three_pages_in_a_real_browser(site: Path) -> None:
    from e2e.harness import chromium

    checks = {
        "index.html": "() => document.querySelectorAll('img[src*=\"images/\"]').length >= 3"
        " && [...document.images].every((i) => i.complete && i.naturalWidth > 0)",
        "notebooks/05_degradation_curves.html": "() => document.querySelectorAll('.asw-figure .main-svg').length >= 4"
        " && document.querySelectorAll('.asw-widget-picture img').length >= 1"
        " && [...document.images].every((i) => i.complete && i.naturalWidth > 0)",
        "notebooks/02_mask_zoo.html": "() => document.querySelectorAll('.asw-figure .main-svg').length >= 3"
        " && document.querySelectorAll('.jp-OutputArea-output').length >= 10",
    }
    requests: list[str] = []
    errors: list[str] = []
    with chromium() as browser:
        for page_name, ready in checks.items():
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e, n=page_name: errors.append(f"{n}: {e}"))
            page.on("console", lambda m, n=page_name: errors.append(f"{n}: {m.text}") if m.type == "error" else None)
            page.goto((site / page_name).as_uri(), wait_until="load")
            page.wait_for_function(ready, timeout=60_000)
            page.close()
    off_machine = sorted({u for u in requests if not u.startswith(LOCAL)})
    assert not off_machine, f"the site fetched from off the machine: {off_machine}"
    assert not errors, errors
