// The cost explorer's pure parts (no DOM, no plotly): reading and writing the batch's requests, pan and zoom of the
// picture, numbers as text, and the plotly figures of an op's details (roofline, MLA's crossover, a mask heatmap).
// The kernel does every count (src/attnsparse_widget/costs/); nothing here computes a cost.
import type { ExplorerGraph, ExplorerOp, ExplorerTensor, Figure } from "./contract";

export const PRESETS = ["SmolLM2-135M", "GPT-2 small", "Llama-3.1-8B", "Mistral-7B", "Qwen2.5-7B", "Gemma-2-9B", "DeepSeek-V3", "DeepSeek-V3.2"];
export const VARIANTS = ["MHA", "GQA", "MQA", "MLA", "DSA"];
export const ACCELERATORS = ["A100", "H100", "B200"];
export const DTYPES = ["fp32", "bf16", "fp16", "fp8"];
/** The library's masks (src/attnsparse_widget/masks; a test keeps the two lists equal). Those that choose from the
 * scores are counted from a comparison that ran them: the kernel says so when one is picked here. */
export const MASKS = ["dense", "sliding_window", "dilated_window", "chunked", "sink_window", "global_local", "bigbird", "strided", "fixed",
  "topk", "dsa", "nsa", "vertical_slash", "block_topk", "moba", "h2o", "quest"];

/** "8192:8192, 8192:1 x4" → [[8192, 8192], [8192, 1], [8192, 1], [8192, 1], [8192, 1]]; null if unreadable. */
export function parseRequests(text: string): number[][] | null {
  const out: number[][] = [];
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d+)\s*:\s*(\d+)(?:\s*[x×]\s*(\d+))?$/.exec(part);
    if (!m) return null;
    const [context, fresh, times] = [Number(m[1]), Number(m[2]), Number(m[3] ?? 1)];
    if (!(context >= 1 && fresh >= 1 && times >= 1 && times <= 1024)) return null;
    for (let i = 0; i < times; i++) out.push([context, fresh]);
  }
  return out.length ? out : null;
}

/** The inverse of parseRequests, runs of equal requests as "c:n x k". */
export function formatRequests(requests: number[][]): string {
  const parts: string[] = [];
  for (let i = 0; i < requests.length; ) {
    let j = i;
    while (j < requests.length && requests[j][0] === requests[i][0] && requests[j][1] === requests[i][1]) j++;
    parts.push(`${requests[i][0]}:${requests[i][1]}${j - i > 1 ? ` x${j - i}` : ""}`);
    i = j;
  }
  return parts.join(", ");
}

/** The batch presets: one prefill of T tokens, a decode batch of 8 over T, a mixed batch (one prefill, three decodes). */
export function batchPreset(kind: "prefill" | "decode" | "mixed", tokens: number): number[][] {
  if (kind === "prefill") return [[tokens, tokens]];
  if (kind === "decode") return Array.from({ length: 8 }, () => [tokens, 1]);
  return [[tokens, tokens], [tokens, 1], [tokens, 1], [tokens, 1]];
}

/** An SVG viewBox [x, y, width, height]. */
export type Box = [number, number, number, number];

/** Zoom by `factor` (> 1 zooms in) keeping the point (px, py), in picture coordinates, where it is. */
export function zoomAt(box: Box, factor: number, px: number, py: number): Box {
  const [x, y, w, h] = box;
  const nw = w / factor, nh = h / factor;
  return [px - (px - x) / factor, py - (py - y) / factor, nw, nh];
}

/** Move the view by (dx, dy) screen pixels on an element `width` pixels wide. */
export function panBy(box: Box, dx: number, dy: number, width: number): Box {
  const s = box[2] / Math.max(1, width);
  return [box[0] - dx * s, box[1] - dy * s, box[2], box[3]];
}

/** A count with an SI suffix: 1.5e9 → "1.5 G". */
export function si(n: number | null | undefined, unit = ""): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "n/a";
  const abs = Math.abs(n);
  for (const [size, suffix] of [[1e15, "P"], [1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]] as const) {
    if (abs >= size) return `${(n / size).toPrecision(3)} ${suffix}${unit}`;
  }
  return `${Number(n.toPrecision(3))} ${unit}`.trim();
}

/** Seconds as µs, ms or s. */
export function seconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !Number.isFinite(s)) return "n/a";
  if (s < 1e-3) return `${(s * 1e6).toPrecision(3)} µs`;
  if (s < 1) return `${(s * 1e3).toPrecision(3)} ms`;
  return `${s.toPrecision(3)} s`;
}

/** The rows of an op's detail table: [label, value]. */
export function opRows(op: ExplorerOp): [string, string][] {
  return [
    ["FLOPs", si(op.flops)],
    ["bytes in", si(op.bytes_read, "B")],
    ["bytes out", si(op.bytes_written, "B")],
    ["communication", si(op.comm_bytes, "B")],
    ["intensity", `${op.intensity.toPrecision(3)} FLOP/B`],
    ["dtype", op.dtype],
    ...op.rooflines.map((r): [string, string] => [r.accelerator, `${seconds(r.seconds)} (${r.bound}-bound, ${r.dtype})`]),
  ];
}

/** The rows of a tensor's detail table. */
export function tensorRows(t: ExplorerTensor): [string, string][] {
  return [
    ["shape", `[${t.shape.map((n, i) => `${t.dims[i]}=${n}`).join(", ")}]`],
    ["bytes", si(t.bytes, "B")],
    ["held in", t.role === "chip" ? "on-chip memory only" : t.role],
  ];
}

/** The roofline chart of one op: attainable FLOP/s against intensity on every accelerator, the op's point on each. */
export function rooflineFigure(op: ExplorerOp): Figure {
  const xs = [0.01, 0.1, 1, 10, 100, 1e3, 1e4, 1e5];
  const data: Record<string, unknown>[] = [];
  const colors: Record<string, string> = { A100: "#1f77b4", H100: "#2ca02c", B200: "#d62728" };
  for (const r of op.rooflines) {
    const ridge = r.peak / r.bandwidth;
    const x = [...xs.filter((v) => v < ridge), ridge, ...xs.filter((v) => v > ridge)];
    data.push({ type: "scatter", mode: "lines", name: `${r.accelerator} (${r.dtype})`, x, y: x.map((v) => Math.min(r.peak, r.bandwidth * v)), line: { color: colors[r.accelerator] } });
    const attained = r.seconds > 0 ? op.flops / r.seconds : 0;
    data.push({ type: "scatter", mode: "markers", name: `${op.name} on ${r.accelerator}: ${r.bound}-bound`, x: [Math.max(op.intensity, 0.01)], y: [Math.max(attained, 1)], marker: { size: 10, color: colors[r.accelerator], symbol: r.bound === "memory" ? "circle" : "diamond" } });
  }
  return {
    data,
    layout: {
      title: { text: `${op.name}: ${op.intensity.toPrecision(3)} FLOP/B` },
      xaxis: { type: "log", title: { text: "arithmetic intensity (FLOP/byte)" } },
      yaxis: { type: "log", title: { text: "FLOP/s" } },
      margin: { l: 60, r: 10, t: 36, b: 44 },
      legend: { font: { size: 10 } },
    },
  };
}

/** MLA's two pipelines' FLOPs against new tokens per request, the crossover marked. */
export function crossoverFigure(rows: number[][], at: number | null): Figure {
  const data: Record<string, unknown>[] = [
    { type: "scatter", mode: "lines", name: "decompressed (prefill)", x: rows.map((r) => r[0]), y: rows.map((r) => r[1]) },
    { type: "scatter", mode: "lines", name: "absorbed (decode)", x: rows.map((r) => r[0]), y: rows.map((r) => r[2]) },
  ];
  const shapes = at !== null && Number.isFinite(at) ? [{ type: "line", x0: at, x1: at, yref: "paper", y0: 0, y1: 1, line: { dash: "dot" } }] : [];
  return {
    data,
    layout: {
      title: { text: at !== null ? `MLA crossover at ${at.toFixed(1)} new tokens` : "MLA pipelines" },
      xaxis: { type: "log", title: { text: "new tokens per request" } },
      yaxis: { type: "log", title: { text: "FLOPs per layer" } },
      shapes,
      margin: { l: 60, r: 10, t: 36, b: 44 },
    },
  };
}

/** A heatmap of a payload matrix (the batch's mask, or the tile grid). */
export function matrixFigure(title: string, z: Float32Array[], colorscale: string, zmax: number): Figure {
  return {
    data: [{ type: "heatmap", z: z.map((row) => Array.from(row, (v) => (Number.isNaN(v) ? null : v))), colorscale, zmin: 0, zmax, showscale: false, hoverongaps: false }],
    layout: { title: { text: title }, yaxis: { autorange: "reversed", scaleanchor: "x" }, margin: { l: 40, r: 10, t: 36, b: 30 } },
  };
}


/** The totals table: one layer and the whole model (FLOPs, bytes), the lower-bound time on every accelerator
 * (the chosen one marked), the KV cache, the pairs, MLA's two pipelines and the times measured on this machine. */
export function totalsRows(g: ExplorerGraph, accelerator: string): [string, string][] {
  const t = g.totals;
  const times = (per: Record<string, number>) =>
    Object.entries(per).map(([acc, s]) => `${acc === accelerator ? "▸ " : ""}${acc} ${seconds(s)}`).join(" · ");
  const rows: [string, string][] = [
    ["layer", `${si(t.layer_flops, "FLOP")}, ${si(t.layer_bytes, "B")} moved`],
    [`model (${t.layers} layers)`, `${si(t.model_flops, "FLOP")}, ${si(t.model_bytes, "B")} moved`],
    ["≥ time, one layer", times(t.layer_seconds)],
    ["≥ time, whole model", times(t.model_seconds)],
    ["KV cache", `${si(t.kv_cache_bytes, "B")}${t.kv_blocks !== null ? ` in ${t.kv_blocks} blocks, ${((t.kv_occupancy ?? 0) * 100).toFixed(1)}% full` : ""}`],
    ["pairs per head", `${si(g.pairs)} of ${si(g.dense_pairs)} causal`],
  ];
  if (g.pipeline) {
    const f = g.pipeline_flops;
    rows.push(["MLA pipelines, one layer", `decompressed ${si(f.prefill, "FLOP")} · absorbed ${si(f.decode, "FLOP")}: the totals count the ${g.pipeline === "prefill" ? "decompressed" : "absorbed"} one (both drawn)`]);
  }
  if (g.measured_dense !== null || g.measured_sparse !== null) {
    rows.push(["measured on this machine", `attention ${seconds(g.measured_dense)} dense, ${seconds(g.measured_sparse)} sparse (this machine, not a GPU)`]);
  }
  return rows;
}

/** Which rank each item goes to, as one coloured strip per kind: ``assignments[k][r]`` lists the items (query
 * heads, requests) of rank r for strip k. Each cell is one item, coloured and labelled by its rank. */
export function ranksFigure(title: string, strips: { name: string; ranks: number[][] }[]): Figure {
  const width = Math.max(1, ...strips.map((s) => s.ranks.reduce((n, items) => n + items.length, 0)));
  const z: (number | null)[][] = [];
  const text: string[][] = [];
  for (const strip of strips) {
    const row: (number | null)[] = Array(width).fill(null);
    const labels: string[] = Array(width).fill("");
    strip.ranks.forEach((items, rank) => items.forEach((item) => { row[item] = rank; labels[item] = `${strip.name} ${item} → rank ${rank}`; }));
    z.push(row);
    text.push(labels);
  }
  const ranks = Math.max(1, ...strips.map((s) => s.ranks.length));
  return {
    data: [{ type: "heatmap", z, text, hoverinfo: "text", y: strips.map((s) => s.name), colorscale: "Viridis", zmin: 0, zmax: Math.max(1, ranks - 1), xgap: width > 32 ? 0 : 2, ygap: 6, showscale: true, colorbar: { title: { text: "rank" }, dtick: 1 }, hoverongaps: false }],
    layout: { title: { text: title }, xaxis: { title: { text: "query head / request" }, dtick: width > 32 ? undefined : 1 }, margin: { l: 90, r: 10, t: 36, b: 44 } },
  };
}
