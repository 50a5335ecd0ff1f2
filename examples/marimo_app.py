"""attnsparse-widget in marimo: ``marimo run examples/marimo_app.py`` (an app) or ``marimo edit`` (a notebook).

The widget is an anywidget, so marimo shows it through ``mo.ui.anywidget``: its controls, views and export work
as in Jupyter. Set the text, mask and sparsity in the widget itself; ``widget.widget`` is the Python object
(``widget.widget.sparsity = 0.8`` from a cell).
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="attnsparse-widget")


@app.cell
def _():
    import marimo as mo

    import attnsparse_widget as aw

    return aw, mo


@app.cell
def _(aw, mo):
    # the embedded default model (SmolLM2-135M-Instruct); pass a hub id ("gpt2") or a loaded model instead
    widget = mo.ui.anywidget(aw.show(mask="sink_window", sparsity=0.5, per_layer=False))
    widget  # noqa: B018 - a cell shows its last expression
    return (widget,)


if __name__ == "__main__":
    app.run()
