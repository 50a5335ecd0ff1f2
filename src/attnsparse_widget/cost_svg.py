"""The cost explorer's picture as SVG (:func:`graph_svg`): each tensor an oblique block (a front rectangle, a top
and a right face, offset by (0.7·depth, −0.4·depth) as attn-viz draws them) whose three edges follow its last three
dims on a log scale, labelled with the dims' names and sizes; each op a labelled box between its inputs and its
output; stages left to right. One renderer for the widget (the browser inserts it, then pans, zooms and reports
clicks on ``data-id``) and for the exports, so what is exported is what is on screen."""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .contract import ExplorerGraph, ExplorerOp, ExplorerTensor

EDGE_MIN, EDGE_PER_DOUBLING, EDGE_MAX = 10.0, 7.0, 120.0  # px: an edge of n is MIN + PER·log2(n), at most MAX
DEPTH_SCALE = 0.5  # depth edges are drawn shorter: they recede
COLUMN_GAP, ROW_GAP, MARGIN = 56.0, 46.0, 30.0
LABEL_ROOM = 56.0  # left of the first column: the height labels of its blocks ("ΣS_q=8192")
OP_W, OP_H = 118.0, 30.0
LANE_TITLE = 8.0  # a lane's title (MLA's pipelines): its baseline this far below the lane's top
FILL = {"activation": "#9ecae1", "weight": "#d9d9d9", "cache": "#fdae6b", "chip": "#ffffff"}
STROKE = {"activation": "#3182bd", "weight": "#737373", "cache": "#e6550d", "chip": "#9e9ac8"}


def edge(n: int) -> float:
    """The drawn length of a dim of size ``n`` (log-scaled)."""
    return min(EDGE_MAX, EDGE_MIN + EDGE_PER_DOUBLING * math.log2(max(1, n)))


@dataclass(frozen=True)
class Box:
    """Where one tensor's block or one op's box sits: top-left of its front face, its size, its depth offset."""

    x: float
    y: float
    w: float
    h: float
    dx: float = 0.0
    dy: float = 0.0

    @property
    def right(self) -> float:
        return self.x + self.w + self.dx

    @property
    def middle(self) -> float:
        return self.y + self.h / 2


def block_size(tensor: ExplorerTensor) -> tuple[float, float, float]:
    """(width, height, depth) of a tensor's block: its last dim across, the one before down, the one before that
    (if any) receding."""
    shape = tensor["shape"] or [1]
    w = edge(shape[-1])
    h = edge(shape[-2]) if len(shape) >= 2 else EDGE_MIN
    d = DEPTH_SCALE * edge(shape[-3]) if len(shape) >= 3 else 0.0
    return w, h, d


def layout(graph: ExplorerGraph) -> tuple[dict[str, Box], list[float], float, float]:
    """Every tensor's and op's box, where each lane starts (its title's baseline), and the picture's width and
    height. Within a lane: columns left to right (tensors and ops alternate), items of a column stacked top to
    bottom in graph order. Lanes (MLA's two pipelines) stack top to bottom, each below the tallest column of the
    one above."""
    lanes: dict[int, dict[int, list[tuple[str, float, float, float]]]] = {}
    for tensor in graph["tensors"]:
        w, h, d = block_size(tensor)
        lanes.setdefault(tensor["lane"], {}).setdefault(tensor["column"] * 2, []).append((tensor["id"], w, h, d))
    for op in graph["ops"]:
        lanes.setdefault(op["lane"], {}).setdefault(op["column"] * 2 - 1, []).append((op["id"], OP_W, OP_H, 0.0))
    boxes: dict[str, Box] = {}
    starts: list[float] = []
    top = MARGIN + 24.0  # below the picture's title
    width = 0.0
    for lane in sorted(lanes):
        items = lanes[lane]
        if graph["lanes"]:
            starts.append(top + LANE_TITLE)
            top += LANE_TITLE + 14.0
        x = MARGIN + LABEL_ROOM
        bottom = top
        for column in sorted(items):
            entries = items[column]
            column_width = max(w + 0.7 * d for _, w, _, d in entries)
            y = top
            for ident, w, h, d in entries:
                y += 0.4 * d  # room for the top face
                boxes[ident] = Box(x + (column_width - w - 0.7 * d) / 2, y, w, h, 0.7 * d, 0.4 * d)
                y += h + ROW_GAP
            bottom = max(bottom, y)
            x += column_width + COLUMN_GAP
        width = max(width, x - COLUMN_GAP + MARGIN)
        top = bottom
    return boxes, starts, width, top + MARGIN


def si(n: float) -> str:
    """``n`` to three digits with an SI suffix (k, M, G, T): 38659424256 is "38.7G"."""
    for size, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.3g}"


def _text(x: float, y: float, cls: str, text: str, anchor: str = "start") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{escape(text)}</text>'


def _polygon(points: list[tuple[float, float]], attrs: str) -> str:
    return f'<polygon points="{" ".join(f"{px:.1f},{py:.1f}" for px, py in points)}" {attrs}/>'


def _block(tensor: ExplorerTensor, box: Box) -> str:
    x, y, w, h, dx, dy = box.x, box.y, box.w, box.h, box.dx, box.dy
    fill, stroke = FILL[tensor["role"]], STROKE[tensor["role"]]
    dash = ' stroke-dasharray="4 3"' if tensor["role"] == "chip" else ""
    attrs = f'fill="{fill}" stroke="{stroke}" stroke-width="1"{dash}'
    parts = [f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" {attrs}/>']
    if dx:
        top = [(x, y), (x + dx, y - dy), (x + w + dx, y - dy), (x + w, y)]
        side = [(x + w, y), (x + w + dx, y - dy), (x + w + dx, y + h - dy), (x + w, y + h)]
        parts += [_polygon(top, attrs + ' fill-opacity="0.75"'), _polygon(side, attrs + ' fill-opacity="0.55"')]
    labels = [f"{n}={size}" for n, size in zip(tensor["dims"], tensor["shape"], strict=False)]
    # the last dim under the block, the one before beside it, the receding one by the top face
    if labels:
        parts.append(_text(x + w / 2, y + h + 11, "asx-dim", labels[-1], "middle"))
    if len(labels) >= 2:
        parts.append(_text(x - 3, y + h / 2 + 3, "asx-dim", labels[-2], "end"))
    if len(labels) >= 3:
        parts.append(_text(x + w + dx + 2, y - dy + 2, "asx-dim", labels[-3]))
    parts.append(_text(x + w / 2, y - dy - 5, "asx-name", tensor["name"], "middle"))
    title = escape(f"{tensor['name']}: [{', '.join(labels)}], {si(tensor['bytes'])}B ({tensor['role']})")
    return f'<g class="asx-tensor" data-id="{tensor["id"]}"><title>{title}</title>{"".join(parts)}</g>'


def _op(op: ExplorerOp, box: Box) -> str:
    label = escape(op["name"])
    sub = f"{si(op['flops'])}FLOP · {si(op['bytes_read'] + op['bytes_written'])}B"
    return (
        f'<g class="asx-op asx-{escape(op["kind"])}" data-id="{op["id"]}"><title>{label}: {sub}</title>'
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" rx="6" fill="#fff7bc" '
        f'stroke="#cc9a06"/><text x="{box.x + box.w / 2:.1f}" y="{box.y + 13:.1f}" class="asx-opname" '
        f'text-anchor="middle">{label}</text><text x="{box.x + box.w / 2:.1f}" y="{box.y + 25:.1f}" '
        f'class="asx-opcost" text-anchor="middle">{sub}</text></g>'
    )


def _arrow(a: Box, b: Box) -> str:
    x1, y1, x2, y2 = a.right + 2, a.middle, b.x - 3, b.middle
    mid = (x1 + x2) / 2
    return (f'<path d="M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" '
            f'class="asx-arrow" fill="none" stroke="#969696" marker-end="url(#asx-head)"/>')  # fmt: skip


STYLE = (
    ".asx-name{font:600 11px sans-serif;fill:#252525}.asx-dim{font:9px sans-serif;fill:#525252}"
    ".asx-opname{font:600 10px sans-serif;fill:#252525}.asx-opcost{font:8.5px sans-serif;fill:#636363}"
    ".asx-title{font:600 13px sans-serif;fill:#252525}.asx-lanetitle{font:600 11px sans-serif;fill:#54278f}"
)


def graph_svg(graph: ExplorerGraph) -> str:
    """The whole picture as one standalone SVG document (``data-id`` on every tensor and op)."""
    boxes, starts, width, height = layout(graph)
    lanes = []
    for lane in range(max(1, len(graph["lanes"]))):
        ops = [o for o in graph["ops"] if o["lane"] == lane]
        arrows = [_arrow(boxes[source], boxes[o["id"]]) for o in ops for source in o["inputs"]]
        arrows += [_arrow(boxes[o["id"]], boxes[o["output"]]) for o in ops]
        body = [_block(t, boxes[t["id"]]) for t in graph["tensors"] if t["lane"] == lane]
        body += [_op(o, boxes[o["id"]]) for o in ops]
        title = _text(MARGIN, starts[lane], "asx-lanetitle", graph["lanes"][lane]) if graph["lanes"] else ""
        # a lane the totals do not count (MLA's other pipeline) is drawn faded: there to compare, not costed
        faded = ' opacity="0.55"' if lane != graph["costed_lane"] else ""
        lanes.append(
            f'<g class="asx-lane" data-lane="{lane}"{faded}>{title}<g class="asx-arrows">{"".join(arrows)}</g>'
            f"{''.join(body)}</g>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="asx-graph" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}"><style>{STYLE}</style><defs><marker id="asx-head" '
        'viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 '
        f'L0,8 z" fill="#969696"/></marker></defs><text x="{MARGIN}" y="{MARGIN}" class="asx-title">'
        f"{escape(graph['title'])}</text>{''.join(lanes)}</svg>"
    )
