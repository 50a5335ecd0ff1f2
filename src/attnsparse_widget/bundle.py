"""The frontend bundle both widgets load (``static/widget.js`` and ``widget.css``, built from ``js/`` by
``npm run build``): one bundle, whose entry renders the comparison view or, for a widget whose ``_kind`` trait says
so, the cost explorer."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"


def esm() -> Path | str:
    """The bundle, or where it is missing a module that says how to build it."""
    bundle = STATIC / "widget.js"
    if bundle.is_file():
        return bundle
    return (  # multi-line on purpose: anywidget reads a one-line string with a suffix as a file path
        "export default {\n  render({ el }) {\n    el.textContent = 'attnsparse-widget: the frontend bundle is "
        "missing (src/attnsparse_widget/static/widget.js); build it with npm install && npm run build.';\n  },\n};\n"
    )


def css() -> Path | str:
    """The bundle's stylesheet ("" before the first build)."""
    sheet = STATIC / "widget.css"
    return sheet if sheet.is_file() else ""
