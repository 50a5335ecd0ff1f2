"""The test tiers: every test sits in exactly one, given by a marker, and the suite refuses to collect otherwise (a
pytest plugin, loaded by conftest.py; tests/test_tiers.py checks it).

``make check`` runs ``unit`` and ``model`` (the inner loop, a few minutes); ``make test`` runs every tier, exactly
as CI does. A module gives its tier to all its tests (``pytestmark = pytest.mark.model``) and a test may override it
with its own (``@pytest.mark.slow``): the closest marker wins. The hook then leaves each test with its one tier
marker and nothing else of the kind, so ``-m model`` selects exactly the model tier (not its slow exceptions).
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS: dict[str, str] = {
    "unit": "no real model, notebook or browser: masks, arithmetic, contracts, tiny random models",
    "model": "loads the embedded default model (SmolLM2) or the MiniLM encoder, on short texts",
    "notebooks": "executes the teaching notebooks or builds the course site from them",
    "browser": "drives Chromium: JupyterLab, Notebook 7, the app, marimo, the installed wheel",
    "slow": "long texts, trainings, anything that takes more than about 10 s on 2 cores",
}
# the order a run takes the modules in: those with the longest tiers first, so that a parallel run (pytest-xdist
# with --dist loadfile, `make test`: a module's tests go to one worker, in this order) does not end waiting on one
# worker that started the notebooks last
ORDER = ("notebooks", "browser", "slow", "model", "unit")
# fixtures that load a real model: a test that asks for one is not a unit test
MODEL_FIXTURES = frozenset({"default_model", "minilm"})


def _tier_marks(node: pytest.Item | pytest.Collector) -> list[pytest.Mark]:
    return [mark for mark in node.own_markers if mark.name in TIERS]


def resolve_tier(item: pytest.Item) -> tuple[str | None, str | None]:
    """``(tier, None)``: the closest tier marker of ``item`` (its own, its class's, its module's); ``(None, why)``
    when there is none, when one level names two, or when a unit test loads a model."""
    for node in reversed(item.listchain()):
        names = sorted({mark.name for mark in _tier_marks(node)})
        if len(names) > 1:
            return None, f"{item.nodeid}: tiers {', '.join(names)} on {node.nodeid or 'the session'}"
        if names:
            if names[0] == "unit" and (loads := MODEL_FIXTURES & set(getattr(item, "fixturenames", ()))):
                return None, f"{item.nodeid}: marked unit but loads a model ({', '.join(sorted(loads))})"
            return names[0], None
    return None, f"{item.nodeid}: no tier"


def pytest_configure(config: pytest.Config) -> None:
    for name, meaning in TIERS.items():
        config.addinivalue_line("markers", f"{name}: tier: {meaning}")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything: every collected test is checked
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    resolved = [(item, *resolve_tier(item)) for item in items]
    problems = [why for _, _, why in resolved if why]
    if problems:
        raise pytest.UsageError(
            "every test needs exactly one tier marker ("
            + ", ".join(TIERS)
            + "; see tests/tiers.py):\n  "
            + "\n  ".join(problems)
        )
    # each test keeps its own tier, its parents none, so that a marker expression sees one tier per test
    for item, tier, _ in resolved:
        for node in item.listchain():
            node.own_markers[:] = [mark for mark in node.own_markers if mark.name not in TIERS]
        item.add_marker(tier)
    # modules in the order of their longest tier, each kept whole (a module split in two would make its module-scoped
    # fixtures twice), its tests in their own order
    rank: dict[Path, int] = {}
    for item, tier, _ in resolved:
        rank[item.path] = min(rank.get(item.path, len(ORDER)), ORDER.index(tier))
    items.sort(key=lambda item: rank[item.path])
