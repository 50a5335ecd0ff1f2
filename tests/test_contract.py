"""The kernel-browser contract (src/attnsparse_widget/contract.py and js/contract.ts) in both directions: every type
the kernel declares, the frontend declares, with the same keys, the same optionality and the same types; and what
the kernel really sends (the payload builders, and every synced trait of a live widget) has the declared shape."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints, is_typeddict

import anywidget
import pytest
from ipywidgets.widgets.tests.utils import setup_test_comm, teardown_test_comm

import attnsparse_widget as aw
from attnsparse_widget import contract
from attnsparse_widget.figures import layer_figure
from attnsparse_widget.metrics import Metrics
from attnsparse_widget.payload import (
    failed_status,
    gallery_payload,
    info_payload,
    metrics_payload,
    next_tokens_payload,
    status_payload,
    view_payload,
    with_binary_arrays,
)

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]
CONTRACT_TS = ROOT / "js" / "contract.ts"
TEXT = "The cat sat on the mat. It was warm."


# ------------------------------------------------------------------------------------------- the two declarations
@dataclasses.dataclass
class TsInterface:
    required: dict[str, str]  # key -> its type, as written (whitespace removed)
    optional: dict[str, str]
    index_signature: bool


def _strip_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    return re.sub(r"//[^\n]*", "", source)


def parse_ts(source: str) -> tuple[dict[str, TsInterface], dict[str, str]]:
    """The ``export interface X { key?: type; ... }`` declarations of a TypeScript file (one level of braces: the
    contract has no inline object types), and its ``export type X = ...;`` aliases."""
    code = _strip_comments(source)
    interfaces = {}
    for name, body in re.findall(r"export\s+interface\s+(\w+)\s*\{([^{}]*)\}", code):
        iface = TsInterface({}, {}, False)
        for stmt in (s.strip() for s in body.split(";")):
            if not stmt:
                continue
            if stmt.startswith("["):
                iface.index_signature = True
                continue
            m = re.fullmatch(r"(\w+)(\?)?\s*:\s*(.+)", stmt, flags=re.S)
            assert m, f"js/contract.ts: cannot read the member {stmt!r} of {name}"
            key, optional, ts_type = m.groups()
            (iface.optional if optional else iface.required)[key] = re.sub(r"\s+", "", ts_type)
        interfaces[name] = iface
    aliases = {n: re.sub(r"\s+", "", t) for n, t in re.findall(r"export\s+type\s+(\w+)\s*=\s*([^;]+);", code)}
    return interfaces, aliases


def python_types() -> dict[str, Any]:
    """The public TypedDicts of contract.py."""
    return {n: v for n, v in vars(contract).items() if is_typeddict(v) and not n.startswith("_")}


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) or (get_origin(tp) is Literal and len(get_args(tp)) > 1)


def ts_type(tp: Any) -> str:
    """A Python annotation of contract.py as TypeScript (how js/contract.ts must write it, whitespace aside)."""
    if tp is Any:
        return "unknown"
    if tp is type(None):
        return "null"
    simple = {str: "string", int: "number", float: "number", bool: "boolean", bytes: "Binary"}
    if tp in simple:
        return simple[tp]
    if is_typeddict(tp):
        return tp.__name__
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(ts_type(a) for a in args)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is list:
        inner = ts_type(args[0])
        return f"({inner})[]" if _is_union(args[0]) else f"{inner}[]"
    if origin is tuple:
        return "[" + ", ".join(ts_type(a) for a in args) + "]"
    if origin is dict:
        return f"Record<{ts_type(args[0])}, {ts_type(args[1])}>"
    raise AssertionError(f"contract.py uses {tp!r}, which this test cannot translate to TypeScript")


def _normal(ts: str) -> str:
    """Whitespace removed, the members of a top-level union sorted."""
    ts = re.sub(r"\s+", "", ts)
    depth, parts, start = 0, [], 0
    for i, ch in enumerate(ts):
        depth += ch in "([<{"
        depth -= ch in ")]>}"
        if ch == "|" and depth == 0:
            parts.append(ts[start:i])
            start = i + 1
    parts.append(ts[start:])
    return "|".join(sorted(parts))


@pytest.fixture(scope="module")
def ts_contract():
    return parse_ts(CONTRACT_TS.read_text(encoding="utf-8"))


def test_the_parser_reads_interfaces_optional_keys_and_aliases():
    interfaces, aliases = parse_ts(
        """/** doc { with braces } */
        export type Binary = DataView | ArrayBuffer;
        export interface A {
          /** the x */
          x: number; // trailing
          y?: (number | null)[];
          [key: string]: never;
        }
        interface Hidden { z: string }"""
    )
    assert aliases == {"Binary": "DataView|ArrayBuffer"}
    assert list(interfaces) == ["A"]
    assert interfaces["A"].required == {"x": "number"} and interfaces["A"].optional == {"y": "(number|null)[]"}
    assert interfaces["A"].index_signature


def test_both_sides_declare_the_same_types(ts_contract):
    interfaces, aliases = ts_contract
    py = python_types()
    only_py = sorted(set(py) - set(interfaces))
    only_ts = sorted(set(interfaces) - set(py))
    assert not only_py, f"contract.py declares {only_py}; js/contract.ts does not"
    assert not only_ts, f"js/contract.ts declares {only_ts}; contract.py does not"
    assert "Binary" in aliases  # what bytes become (MatrixPayload.data)


@pytest.mark.parametrize("name", sorted(python_types()))
def test_both_sides_declare_the_same_keys_optionality_and_types(ts_contract, name):
    interfaces, _ = ts_contract
    assert name in interfaces, f"js/contract.ts does not declare {name}"
    py, ts = python_types()[name], interfaces[name]
    required, optional = set(py.__required_keys__), set(py.__optional_keys__)
    sent_not_declared = sorted((required | optional) - set(ts.required) - set(ts.optional))
    declared_not_sent = sorted((set(ts.required) | set(ts.optional)) - (required | optional))
    assert not sent_not_declared, f"{name}: the kernel sends {sent_not_declared}, js/contract.ts does not declare them"
    assert not declared_not_sent, f"{name}: js/contract.ts declares {declared_not_sent}, contract.py does not"
    flipped = sorted(required ^ set(ts.required))
    assert not flipped, f"{name}: {flipped} required on one side, optional on the other (`key?:` / total=False)"
    assert ts.index_signature == (name == "Empty")  # only Empty is the empty object
    hints = get_type_hints(py)
    for key in required | optional:
        declared = {**ts.required, **ts.optional}[key]
        assert _normal(ts_type(hints[key])) == _normal(declared), (
            f"{name}.{key}: contract.py says {ts_type(hints[key])!r}, js/contract.ts says {declared!r}"
        )


def test_metrics_payload_has_every_metrics_field():
    fields = {f.name for f in dataclasses.fields(Metrics)}
    keys = set(contract.MetricsPayload.__required_keys__)
    assert fields <= keys, f"Metrics fields missing from the contract: {sorted(fields - keys)}"
    assert keys - fields == {"continuations", "continuation_tokens"}


def test_the_contract_is_a_leaf_module():
    tree = ast.parse(Path(contract.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("attnsparse_widget"), ast.dump(node)
        if isinstance(node, ast.Import):
            assert all(not a.name.startswith("attnsparse_widget") for a in node.names)


def test_the_frontend_reads_through_typed_access():
    """No ``any`` in the frontend's sources (the tests may use it): the traits are read as the contract declares."""
    for path in sorted((ROOT / "js").glob("*.ts")):
        if path.name.endswith(".test.ts"):
            continue
        code = _strip_comments(path.read_text(encoding="utf-8"))
        code = re.sub(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`', '""', code)  # string and template literals
        assert not re.search(r"\bany\b", code), f"{path.name} uses `any`"


# ------------------------------------------------------------------------------------------ what is really sent
def check(value: Any, tp: Any, path: str = "$") -> list[str]:
    """Where ``value`` does not conform to the contract type ``tp`` (empty: it does). Floats must be finite (JSON)."""
    if tp is Any:
        return _json_leaves(value, path)
    if tp is type(None):
        return [] if value is None else [f"{path}: {value!r} is not None"]
    if _is_union(tp) and get_origin(tp) is not Literal:
        tried = [check(value, a, path) for a in get_args(tp)]
        return [] if any(not t for t in tried) else [f"{path}: matches no member of {tp}: {tried}"]
    if get_origin(tp) is Literal:
        return [] if value in get_args(tp) else [f"{path}: {value!r} not in {get_args(tp)}"]
    if tp is bool:
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a bool"]
    if tp is int:
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{path}: {value!r} is not an int"]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{path}: {value!r} is not a number"]
        return [] if math.isfinite(value) else [f"{path}: {value!r} is not finite (JSON has no NaN/inf)"]
    if tp in (str, bytes):
        return [] if type(value) is tp else [f"{path}: {type(value).__name__} is not {tp.__name__}"]
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__} is not a {tp.__name__} dict"]
        errors = [f"{path}: {tp.__name__} lacks the required key {k!r}" for k in tp.__required_keys__ - set(value)]
        declared = tp.__required_keys__ | tp.__optional_keys__
        errors += [f"{path}: {tp.__name__} does not declare the key {k!r}" for k in set(value) - declared]
        hints = get_type_hints(tp)
        for k in set(value) & declared:
            errors += check(value[k], hints[k], f"{path}.{k}")
        return errors
    origin, args = get_origin(tp), get_args(tp)
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__} is not a list"]
        return [e for i, v in enumerate(value) for e in check(v, args[0], f"{path}[{i}]")]
    if origin is tuple:  # travels as a JSON array
        if not isinstance(value, (tuple, list)) or len(value) != len(args):
            return [f"{path}: {value!r} is not a {len(args)}-tuple"]
        return [e for i, (v, a) in enumerate(zip(value, args, strict=True)) for e in check(v, a, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__} is not a dict"]
        return [
            e for k, v in value.items() for e in check(k, args[0], f"{path}<key>") + check(v, args[1], f"{path}.{k}")
        ]
    raise AssertionError(f"no check for {tp!r}")


def _json_leaves(value: Any, path: str) -> list[str]:
    """What travels untyped (plotly traces and layouts) must still be JSON (or bytes, sent as buffers)."""
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _json_leaves(v, f"{path}.{k}")]
    if isinstance(value, (list, tuple)):
        return [e for i, v in enumerate(value) for e in _json_leaves(v, f"{path}[{i}]")]
    if value is None or isinstance(value, (str, bool, int, bytes)):
        return []
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{path}: {value!r} is not finite"]
    return [f"{path}: a {type(value).__name__} is not JSON (an array that was not encoded?)"]


def assert_conforms(value: Any, tp: Any) -> None:
    errors = check(value, tp)
    assert not errors, "\n".join(errors[:20])


def test_the_checker_catches_missing_extra_and_mistyped_keys():
    good = status_payload(busy=True, stage="s", started=1.0, request=2, progress=0.5)
    assert check(good, contract.Status) == []
    missing = {k: v for k, v in good.items() if k != "busy"}
    assert any("lacks the required key 'busy'" in e for e in check(missing, contract.Status))
    assert any("does not declare the key 'extra'" in e for e in check({**good, "extra": 1}, contract.Status))
    assert any("not finite" in e for e in check({**good, "progress": math.nan}, contract.Status))
    assert check({"q": 1, "k": 2, "w": 0.5}, contract.Drop) == []
    assert check({"q": 1.5, "k": 2, "w": 0.5}, contract.Drop)
    assert check({}, contract.Info | contract.Empty) == []  # an output trait before its first value


@pytest.fixture(scope="module")
def res():
    return aw.compare(None, TEXT, mask="sink_window", sparsity=0.5, per_layer=True, continuation_tokens=3)


def test_view_payloads_conform(res):
    n = len(res.tokens)
    for layer, head, region in ((0, -1, None), (res.n_layers - 1, 1, [1, n, 0, n - 1])):
        view, dense = view_payload(res, layer, head, region)
        assert_conforms(view, contract.View)
        assert_conforms(dense, contract.DenseMap)
        assert [dense["layer"], dense["head"], dense["region"]] == [view["layer"], view["head"], view["region"]]
        assert "z" not in view["figure"]["data"][0] and view["figure"]["data"][0]["name"] == "dense"
    for position in (0, -1, n):  # out of range: the last
        shown = next_tokens_payload(res, position)
        assert_conforms(shown, contract.NextTokenView)
        assert shown["position"] == (0 if position == 0 else n - 1)


def test_gallery_info_and_metrics_payloads_conform(res):
    assert_conforms(gallery_payload(res), contract.Gallery)
    assert_conforms(info_payload(res), contract.Info)
    metrics = metrics_payload(res)
    assert_conforms(metrics, contract.MetricsPayload)
    assert set(metrics["continuations"]) == {"dense", "sparse"}  # the optional keys, once computed
    assert len(metrics["per_layer_delta_ppl"]) == res.n_layers


def test_layer_chart_conforms(res):
    m = metrics_payload(res)
    chart = with_binary_arrays(
        layer_figure(m["per_layer_delta_ppl"], m["cumulative_delta_ppl"], m["mass_recall"], res.n_layers, 0)
    )
    assert_conforms(chart, contract.Figure)
    assert_conforms(
        with_binary_arrays(layer_figure(None, None, None, res.n_layers)), contract.Figure
    )  # before the curve


def test_status_payloads_conform():
    for status in (
        status_payload(busy=False),
        status_payload(busy=True, stage="running the model", started=1.7e12, request=3),
        status_payload(busy=True, stage="per-layer curve", started=1.7e12, request=3, progress=0.25),
        status_payload(busy=False, error="boom", detail="Traceback ...", started=1.7e12, request=4),
    ):
        assert_conforms(status, contract.Status)
    busy = status_payload(busy=True, stage="exporting GIF", started=5.0, request=2, progress=0.5)
    failed = failed_status(busy, "GIF export failed: x")
    assert_conforms(failed, contract.Status)
    assert failed == {**busy, "busy": False, "error": "GIF export failed: x"}  # stage, start, progress kept
    assert failed_status(busy, "interrupted", request=7)["request"] == 7


def test_non_finite_metrics_travel_as_none(res):
    import copy

    broken = copy.copy(res)
    broken.metrics = dataclasses.replace(res.metrics, dense_ppl=math.nan, kl=[math.inf, 1.0])
    metrics = metrics_payload(broken)
    assert metrics["dense_ppl"] is None and metrics["kl"] == [None, 1.0]
    assert_conforms(metrics, contract.MetricsPayload)


# ------------------------------------------------------------------------------------------------ a live widget
@pytest.fixture
def comm():
    setup_test_comm()
    yield
    teardown_test_comm()


def _synced(cls: type) -> set[str]:
    return set(cls.class_trait_names(sync=True)) - set(anywidget.AnyWidget.class_trait_names(sync=True))


def test_widget_state_declares_every_synced_trait():
    declared = set(contract.WidgetState.__required_keys__)
    synced = _synced(aw.AttentionDiffWidget)
    assert synced == declared, f"synced, not declared: {synced - declared}; declared, not synced: {declared - synced}"


def test_trait_defaults_conform():
    hints = get_type_hints(contract.WidgetState)
    for name, trait in aw.AttentionDiffWidget.class_traits(sync=True).items():
        if name in hints:
            assert_conforms(trait.default(), hints[name])


def test_every_synced_trait_of_a_widget_conforms(comm):
    w = aw.AttentionDiffWidget(None, threaded=False, text=TEXT, per_layer=False)
    assert w.status["error"] is None, w.status
    hints = get_type_hints(contract.WidgetState)
    for name in sorted(hints):
        errors = check(getattr(w, name), hints[name], name)
        assert not errors, "\n".join(errors[:20])
    assert w.next_tokens["top"]["dense"] and w.layer_chart["data"]  # the parts a language model has
    assert w.metrics["per_layer_delta_ppl"] is None  # per_layer=False
    w.layer, w.head, w.zoom = 2, 1, [0, 6, 0, 6]  # a view request
    assert_conforms(w.view, contract.View)
    assert w.view["layer"] == 2 and w.view["head"] == 1


def test_an_error_status_conforms(comm):
    w = aw.AttentionDiffWidget(None, threaded=False, text="", per_layer=False)
    assert w.status["error"] and w.status["busy"] is False
    assert "detail" in w.status
    assert_conforms(w.status, contract.Status)
    for name in ("info", "metrics", "view", "gallery", "layer_chart"):
        assert_conforms(getattr(w, name), get_type_hints(contract.WidgetState)[name])
