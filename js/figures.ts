// Plotly figure specs, built from decoded payloads. Pure functions: unit-tested without a browser.
//
// No per-cell hover text is built here: the heatmaps set `hoverinfo: "none"` and the widget shows its own tooltip
// from `cellInfo` / `gallerySlotInfo`, so a 256 x 256 view costs no 65k-element customdata arrays to rebuild on
// every update.

export interface Figure {
  data: Record<string, unknown>[];
  layout: Record<string, unknown>;
}

/** Text for plotly labels: plotly renders a subset of HTML, so tokens are escaped to show literally, and
 * whitespace that would be invisible gets a visible sign. */
export function plotlySafe(s: string): string {
  return visibleToken(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A token with its invisible characters made visible: newline ↵, tab ⇥, and an empty token as ∅. */
export function visibleToken(s: string): string {
  if (s === "") return "∅";
  return s.replace(/\r?\n/g, "↵").replace(/\t/g, "⇥");
}

export interface View {
  dense: Float32Array[];
  sparse: Float32Array[];
  keep: Float32Array[]; // fraction of the cell's pairs kept (0/1 at full resolution)
  allowed: Float32Array[]; // fraction of the cell's pairs the model itself allows (causal, padding, own window)
  region: [number, number, number, number];
  factor: number;
}

export type CellState = "kept" | "dropped" | "partly kept" | "not allowed";

/** How a (pooled) cell was treated by the mask. */
export function cellState(v: View, i: number, j: number): CellState {
  if (!(v.allowed[i][j] > 0)) return "not allowed";
  const k = v.keep[i][j] / v.allowed[i][j];
  if (k >= 0.999) return "kept";
  if (k <= 0.001) return "dropped";
  return "partly kept";
}

/** Axis ticks: token labels when there are few enough to read, else positions. */
export function axis(tokens: string[], start: number, cells: number, factor: number): Record<string, unknown> {
  const base = { showgrid: false, zeroline: false };
  if (factor === 1 && cells <= 64) {
    const idx = Array.from({ length: cells }, (_, i) => i);
    return {
      ...base,
      tickmode: "array",
      tickvals: idx.map((i) => start + i),
      ticktext: idx.map((i) => plotlySafe(tokens[start + i] ?? "")),
      tickfont: { size: cells > 32 ? 8 : 10 },
    };
  }
  return { ...base, title: { text: "position" } };
}

/** Coordinates of the cells (token positions; the first position of each pooled block). */
function coords(start: number, cells: number, factor: number): number[] {
  return Array.from({ length: cells }, (_, i) => start + i * factor);
}

function peak(rows: Float32Array[]): number {
  let m = 0;
  for (const r of rows) for (const p of r) if (p > m) m = p;
  return m;
}

/** The dropped cells with the most dense weight, heaviest first: the pairs that mattered. */
export function heavyDrops(v: View, limit = 5): { q: number; k: number; w: number }[] {
  const found: { q: number; k: number; w: number }[] = [];
  const [q0, , k0] = v.region;
  v.dense.forEach((row, i) =>
    row.forEach((p, j) => {
      const s = cellState(v, i, j);
      if ((s === "dropped" || s === "partly kept") && p > 0) found.push({ q: q0 + i * v.factor, k: k0 + j * v.factor, w: p });
    }),
  );
  found.sort((a, b) => b.w - a.w);
  return found.slice(0, limit);
}

const DROPPED_SCALE = [[0, "#e6e6e6"], [0.15, "#f4a582"], [1, "#b2182b"]];
// blue = sparse took probability away, red = sparse gave it; white = no change (plotly's own RdBu is grey there)
const DIVERGING = [[0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1, "#b2182b"]];

/** Dense, sparse and difference heatmaps side by side. In the sparse panel the kept pairs show their sparse
 * probability (viridis) and the dropped pairs show the dense probability they lost (grey for nothing, red for a
 * lot), so the pairs that mattered stand out; white cells are pairs the model itself never allows (the future). */
export function mainFigure(v: View, tokens: string[], title: string): Figure {
  const [q0, , k0] = v.region;
  const rows = v.dense.length;
  const cols = v.dense[0]?.length ?? 0;
  const x = coords(k0, cols, v.factor);
  const y = coords(q0, rows, v.factor);
  const states = v.dense.map((row, i) => Array.from(row, (_, j) => cellState(v, i, j)));
  const dense = v.dense.map((row, i) => row.map((p, j) => (states[i][j] === "not allowed" ? NaN : p)));
  const sparseKept = v.sparse.map((row, i) => row.map((p, j) => (states[i][j] === "kept" || states[i][j] === "partly kept" ? p : NaN)));
  const lost = v.dense.map((row, i) => row.map((p, j) => (states[i][j] === "dropped" ? p : NaN)));
  const diff = v.sparse.map((row, i) => row.map((p, j) => (states[i][j] === "not allowed" ? NaN : p - v.dense[i][j])));
  const zmax = Math.max(peak(v.dense), peak(v.sparse), 1e-6);
  let dmax = 1e-9;
  diff.forEach((r) => r.forEach((d) => (dmax = Number.isFinite(d) ? Math.max(dmax, Math.abs(d)) : dmax)));
  const common = { x, y, zsmooth: false, hoverinfo: "none", yaxis: "y" };
  const xa = axis(tokens, k0, cols, v.factor);
  const ya = { ...axis(tokens, q0, rows, v.factor), autorange: "reversed" };
  const bar = (x: number, t: string) => ({ x, xanchor: "left", len: 0.9, thickness: 10, tickfont: { size: 9 }, title: { text: t, side: "top", font: { size: 10 } } });
  return {
    data: [
      { ...common, type: "heatmap", z: dense, zmin: 0, zmax, colorscale: "Viridis", showscale: false, xaxis: "x", name: "dense" },
      { ...common, type: "heatmap", z: sparseKept, zmin: 0, zmax, colorscale: "Viridis", colorbar: bar(0.605, "p"), xaxis: "x2", name: "sparse" },
      { ...common, type: "heatmap", z: lost, zmin: 0, zmax, colorscale: DROPPED_SCALE, colorbar: bar(0.655, "lost"), xaxis: "x2", name: "dropped" },
      { ...common, type: "heatmap", z: diff, zmid: 0, zmin: -dmax, zmax: dmax, colorscale: DIVERGING, colorbar: bar(0.975, "Δp"), xaxis: "x3", name: "sparse − dense" },
    ],
    layout: {
      title: { text: plotlySafe(title), font: { size: 13 } },
      xaxis: { ...xa, domain: [0, 0.28] },
      xaxis2: { ...xa, domain: [0.315, 0.595], matches: "x" },
      xaxis3: { ...xa, domain: [0.72, 0.965], matches: "x" },
      yaxis: ya,
      plot_bgcolor: "#ffffff",
      annotations: [
        { text: "dense", x: 0.14, y: 1.0, yanchor: "bottom", xref: "paper", yref: "paper", showarrow: false },
        { text: "sparse (red: dropped, by the dense p lost)", x: 0.455, y: 1.0, yanchor: "bottom", xref: "paper", yref: "paper", showarrow: false },
        { text: "sparse − dense", x: 0.84, y: 1.0, yanchor: "bottom", xref: "paper", yref: "paper", showarrow: false },
      ],
      margin: { l: 70, r: 10, t: 60, b: 60 },
      showlegend: false,
      hovermode: "closest",
      uirevision: "main",
    },
  };
}

/** What the tooltip says about cell (i, j) of the main view. */
export function cellInfo(v: View, tokens: string[], i: number, j: number): string[] {
  const [q0, , k0] = v.region;
  const q = q0 + i * v.factor;
  const k = k0 + j * v.factor;
  const span = (p: number) => (v.factor > 1 ? `${p}–${p + v.factor - 1}` : `${p}`);
  const tok = (p: number) => (v.factor > 1 ? "" : ` ${JSON.stringify(visibleToken(tokens[p] ?? ""))}`);
  const state = cellState(v, i, j);
  const lines = [`query ${span(q)}${tok(q)}`, `key ${span(k)}${tok(k)}`];
  if (state === "not allowed") return [...lines, "not allowed by the model (future or padding)"];
  lines.push(`dense ${v.dense[i][j].toFixed(4)} · sparse ${v.sparse[i][j].toFixed(4)}`);
  if (state === "partly kept") lines.push(`${(100 * v.keep[i][j] / v.allowed[i][j]).toFixed(0)}% of these pairs kept`);
  else lines.push(state === "kept" ? "kept" : "dropped by the mask");
  if (v.factor > 1) lines.push(`mean over ${v.factor}×${v.factor} pairs`);
  return lines;
}

/** The keep-pattern itself (mask preview): kept pairs dark, dropped pairs light, white where the model allows
 * nothing. */
export function maskFigure(v: View, label: string): Figure {
  const z = v.keep.map((row, i) => row.map((k, j) => (v.allowed[i][j] > 0 ? k / v.allowed[i][j] : NaN)));
  const [q0, , k0] = v.region;
  return {
    data: [{ type: "heatmap", z, x: coords(k0, z[0]?.length ?? 0, v.factor), y: coords(q0, z.length, v.factor),
      zmin: 0, zmax: 1, colorscale: [[0, "#f4a582"], [1, "#1f3b73"]], showscale: false, zsmooth: false,
      hovertemplate: "query %{y}<br>key %{x}<br>kept %{z:.2f}<extra></extra>" }],
    layout: { title: { text: plotlySafe(label), font: { size: 12 } },
      xaxis: { title: { text: "key position" }, showgrid: false, zeroline: false, constrain: "domain" },
      yaxis: { title: { text: "query position" }, autorange: "reversed", scaleanchor: "x", showgrid: false, zeroline: false, constrain: "domain" },
      plot_bgcolor: "#ffffff", margin: { l: 60, r: 10, t: 40, b: 50 }, uirevision: "mask" },
  };
}

export interface LayerMetrics {
  per_layer_delta_ppl?: (number | null)[] | null;
  cumulative_delta_ppl?: (number | null)[] | null;
  mass_recall?: (number | null)[];
}

/** Per-layer perplexity delta (bars, mask at that layer only), cumulative curve, and mass recall per layer. */
export function layerFigure(m: LayerMetrics, nLayers: number, selected: number): Figure {
  const layers = Array.from({ length: nLayers }, (_, i) => i);
  const iso = m.per_layer_delta_ppl ?? [];
  const cum = m.cumulative_delta_ppl ?? [];
  return {
    data: [
      { type: "bar", x: layers.slice(0, iso.length), y: iso, name: "ΔPPL, mask at layer l only",
        marker: { color: "#1f77b4", line: { color: "#111", width: layers.slice(0, iso.length).map((l) => (l === selected ? 2.5 : 0)) },
          opacity: 0.9 },
        hovertemplate: "layer %{x}: ΔPPL %{y:.3f} with the mask at this layer only<extra></extra>" },
      { type: "scatter", mode: "lines+markers", x: layers.slice(0, cum.length), y: cum, name: "ΔPPL, mask at layers 0..l",
        line: { color: "#ff7f0e" }, hovertemplate: "layers 0..%{x}: ΔPPL %{y:.3f}<extra></extra>" },
      { type: "scatter", mode: "lines", x: layers, y: m.mass_recall ?? [], name: "attention mass recall", yaxis: "y2",
        line: { color: "#2ca02c", dash: "dot" }, hovertemplate: "layer %{x}: mass recall %{y:.3f}<extra></extra>" },
    ],
    layout: {
      xaxis: { title: { text: "layer (click a bar to open it)" }, dtick: nLayers > 40 ? 5 : 1, range: [-0.6, nLayers - 0.4] },
      yaxis: { title: { text: "perplexity delta (sparse − dense)" }, zeroline: true },
      yaxis2: { title: { text: "mass recall" }, overlaying: "y", side: "right", range: [0, 1.02], tickformat: ".1f", dtick: 0.2, showgrid: false },
      legend: { orientation: "h", y: 1.18 },
      margin: { l: 60, r: 60, t: 30, b: 50 },
      uirevision: "layers",
    },
  };
}

/** Index of the first token where two continuations differ (their common length if one is a prefix). */
export function firstDivergence(a: string[], b: string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}
