// Plotly figure specs, built from decoded payloads. Pure functions: unit-tested without a browser.

export interface Figure {
  data: Record<string, unknown>[];
  layout: Record<string, unknown>;
}

/** Text for plotly labels and hovers: plotly renders a subset of HTML, so tokens are escaped to show literally. */
export function plotlySafe(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/\n/g, "⏎").replace(/\t/g, "⇥");
}

export interface View {
  dense: Float32Array[];
  sparse: Float32Array[];
  keep: Float32Array[]; // fraction of the cell's pairs kept (0/1 at full resolution)
  allowed: Float32Array[];
  region: [number, number, number, number];
  factor: number;
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

/** The cells the mask dropped (allowed but not kept) whose dense weight is high: the pairs that mattered. */
export function heavyDrops(v: View, limit = 400): { x: number[]; y: number[]; w: number[] } {
  const found: { x: number; y: number; w: number }[] = [];
  let peak = 0;
  v.dense.forEach((row) => row.forEach((p) => (peak = Math.max(peak, p))));
  const threshold = Math.max(0.05, 0.2 * peak);
  const [q0, , k0] = v.region;
  v.dense.forEach((row, i) =>
    row.forEach((p, j) => {
      const dropped = v.allowed[i][j] > 0 && v.keep[i][j] < 0.5;
      if (dropped && p >= threshold) found.push({ x: k0 + j * v.factor, y: q0 + i * v.factor, w: p });
    }),
  );
  found.sort((a, b) => b.w - a.w);
  const top = found.slice(0, limit);
  return { x: top.map((d) => d.x), y: top.map((d) => d.y), w: top.map((d) => d.w) };
}

/** Dense, sparse and difference heatmaps side by side, with dropped pairs shown as such. */
export function mainFigure(v: View, tokens: string[], title: string): Figure {
  const [q0, , k0] = v.region;
  const rows = v.dense.length;
  const cols = v.dense[0]?.length ?? 0;
  const x = coords(k0, cols, v.factor);
  const y = coords(q0, rows, v.factor);
  // sparse map: dropped cells are gaps (NaN) so the grey background marks them as dropped
  const sparseShown = v.sparse.map((row, i) => row.map((p, j) => (v.allowed[i][j] > 0 && v.keep[i][j] === 0 ? NaN : p)));
  const diff = v.sparse.map((row, i) => row.map((p, j) => p - v.dense[i][j]));
  let zmax = 0;
  v.dense.forEach((r) => r.forEach((p) => (zmax = Math.max(zmax, p))));
  v.sparse.forEach((r) => r.forEach((p) => (zmax = Math.max(zmax, p))));
  let dmax = 1e-9;
  diff.forEach((r) => r.forEach((d) => (dmax = Math.max(dmax, Math.abs(d)))));
  const custom = v.dense.map((row, i) =>
    Array.from(row, (p, j) => [p, v.sparse[i][j], v.allowed[i][j] > 0 ? (v.keep[i][j] >= 0.5 ? "kept" : "dropped") : "not allowed",
      plotlySafe(tokens[q0 + i * v.factor] ?? ""), plotlySafe(tokens[k0 + j * v.factor] ?? "")]),
  );
  const hover =
    "query %{y} %{customdata[3]}<br>key %{x} %{customdata[4]}<br>dense %{customdata[0]:.4f}<br>" +
    "sparse %{customdata[1]:.4f}<br>%{customdata[2]}<extra></extra>";
  const common = { x, y, customdata: custom, hovertemplate: hover, zsmooth: false };
  const drops = heavyDrops(v);
  const xa = axis(tokens, k0, cols, v.factor);
  const ya = { ...axis(tokens, q0, rows, v.factor), autorange: "reversed" };
  return {
    data: [
      { ...common, type: "heatmap", z: v.dense, zmin: 0, zmax, colorscale: "Viridis", showscale: false, xaxis: "x", yaxis: "y", name: "dense" },
      { ...common, type: "heatmap", z: sparseShown, zmin: 0, zmax, colorscale: "Viridis", colorbar: { x: 0.64, len: 0.8, title: { text: "p" } }, xaxis: "x2", yaxis: "y", name: "sparse" },
      { ...common, type: "heatmap", z: diff, zmid: 0, zmin: -dmax, zmax: dmax, colorscale: "RdBu", colorbar: { x: 1.0, len: 0.8, title: { text: "Δ" } }, xaxis: "x3", yaxis: "y", name: "sparse − dense" },
      {
        type: "scatter", mode: "markers", x: drops.x, y: drops.y, xaxis: "x3", yaxis: "y", name: "dropped, high dense weight",
        marker: { symbol: "x-thin-open", size: 7, color: "#ff2d55", line: { width: 2, color: "#ff2d55" } },
        hovertemplate: "dropped pair with dense weight %{customdata:.3f}<extra></extra>", customdata: drops.w,
      },
    ],
    layout: {
      title: { text: plotlySafe(title), font: { size: 13 } },
      grid: { rows: 1, columns: 3, pattern: "independent" },
      xaxis: { ...xa, domain: [0, 0.3] },
      xaxis2: { ...xa, domain: [0.34, 0.64], matches: "x" },
      xaxis3: { ...xa, domain: [0.7, 1.0], matches: "x" },
      yaxis: ya,
      plot_bgcolor: "#d9d9d9",
      annotations: [
        { text: "dense", x: 0.15, y: 1.04, xref: "paper", yref: "paper", showarrow: false },
        { text: "sparse (grey: dropped)", x: 0.49, y: 1.04, xref: "paper", yref: "paper", showarrow: false },
        { text: "sparse − dense", x: 0.85, y: 1.04, xref: "paper", yref: "paper", showarrow: false },
      ],
      margin: { l: 60, r: 20, t: 60, b: 50 },
      showlegend: false,
      uirevision: "main",
    },
  };
}

/** The keep-pattern itself (mask preview): 1 kept, 0 dropped, grey where the model allows nothing. */
export function maskFigure(v: View, label: string): Figure {
  const z = v.keep.map((row, i) => row.map((k, j) => (v.allowed[i][j] > 0 ? k : NaN)));
  const [q0, , k0] = v.region;
  return {
    data: [{ type: "heatmap", z, x: coords(k0, z[0]?.length ?? 0, v.factor), y: coords(q0, z.length, v.factor),
      zmin: 0, zmax: 1, colorscale: [[0, "#fdf6e3"], [1, "#1f3b73"]], showscale: false, zsmooth: false,
      hovertemplate: "query %{y}<br>key %{x}<br>kept %{z:.2f}<extra></extra>" }],
    layout: { title: { text: plotlySafe(label), font: { size: 12 } }, yaxis: { autorange: "reversed", scaleanchor: "x" },
      plot_bgcolor: "#d9d9d9", margin: { l: 50, r: 10, t: 40, b: 40 }, uirevision: "mask" },
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
  return {
    data: [
      { type: "bar", x: layers.slice(0, iso.length), y: iso, name: "ΔPPL, mask at layer l only",
        marker: { color: layers.map((l) => (l === selected ? "#d62728" : "#1f77b4")) },
        hovertemplate: "layer %{x}<br>ΔPPL %{y:.3f}<extra></extra>" },
      { type: "scatter", mode: "lines+markers", x: layers.slice(0, (m.cumulative_delta_ppl ?? []).length),
        y: m.cumulative_delta_ppl ?? [], name: "ΔPPL, mask at layers 0..l", line: { color: "#ff7f0e" } },
      { type: "scatter", mode: "lines", x: layers, y: m.mass_recall ?? [], name: "mass recall", yaxis: "y2",
        line: { color: "#2ca02c", dash: "dot" } },
    ],
    layout: {
      xaxis: { title: { text: "layer (click a bar to open it)" }, dtick: 1 },
      yaxis: { title: { text: "perplexity delta" } },
      yaxis2: { title: { text: "mass recall" }, overlaying: "y", side: "right", range: [0, 1.02] },
      legend: { orientation: "h", y: 1.15 },
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
