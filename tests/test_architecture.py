"""The package's shape: every import goes down ARCHITECTURE.md's layers, and none goes around a loop (lazy imports
inside functions count; imports only for type checkers do not)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).parent.parent / "src" / "attnsparse_widget"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports at run time, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            if node.level == 0 and not target.startswith("attnsparse_widget"):
                return
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    # the package's __init__ gathers the public API from every module: it is the top, never imported back
    return {module_name(p): imports_of(p, modules) - {"attnsparse_widget"} for p in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            walk(node)
    return found


def test_the_parser_sees_imports():
    edges = graph()
    assert "attnsparse_widget.pipeline" in edges["attnsparse_widget.widget"]
    assert "attnsparse_widget.result" in edges["attnsparse_widget.pipeline"]
    assert "attnsparse_widget.pipeline" in edges["attnsparse_widget.sweep"]  # a lazy import, inside a function


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_contract_and_the_texts_are_leaves():
    """contract.py (the kernel-browser types) and messages.py (the user-facing texts) import nothing of ours."""
    edges = graph()
    assert edges["attnsparse_widget.contract"] == set()
    assert edges["attnsparse_widget.messages"] == set()


ARCHITECTURE = PACKAGE.parent.parent / "ARCHITECTURE.md"


def layers() -> dict[str, int]:
    """ARCHITECTURE.md's "The layers": each module's layer, bottom first (a package such as masks/ is one module)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text[text.index("## The layers") :]
    section = section[: section.index("\n## ", 1)]
    found: dict[str, int] = {}
    for line in section.splitlines():
        numbered = re.match(r"(\d+)\. (.*)", line)
        if numbered:
            for name in re.findall(r"`(\w+)`", numbered.group(2).split(":")[0]):
                assert name not in found, f"ARCHITECTURE.md puts {name} in two layers"
                found[name] = int(numbered.group(1))
    return found


def layer_of(module: str) -> str:
    """The layer list's name of a package module (a subpackage's modules are the subpackage)."""
    return module.removeprefix("attnsparse_widget.").split(".")[0]


def test_every_import_goes_down_the_layers():
    order = layers()
    edges = {m: deps for m, deps in graph().items() if m != "attnsparse_widget"}
    missing = sorted({layer_of(m) for m in edges} - set(order))
    assert not missing, f"modules missing from ARCHITECTURE.md's layers: {missing}"
    upward = sorted(
        f"{layer_of(a)} (layer {order[layer_of(a)]}) imports {layer_of(b)} (layer {order[layer_of(b)]})"
        for a, deps in edges.items()
        for b in deps
        if layer_of(a) != layer_of(b) and order[layer_of(b)] >= order[layer_of(a)]
    )
    assert not upward, "imports that do not go down the layers:\n" + "\n".join(upward)


def test_the_layer_check_reads_the_list():
    order = layers()
    assert order["files"] == 1 and order["cli"] == max(order.values())
    assert order["capture"] > order["introspect"] and order["pipeline"] > order["measure"]
