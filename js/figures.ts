// Figures come from the kernel (src/attnsparse_widget/figures.py: the one definition the widget draws and the
// exports render); here they are decoded and read back for the tooltip. Pure functions, unit-tested without a browser.
import { filled, type DenseMap, type Empty, type MatrixPayload, type MetricsPayload } from "./contract";
import { decodeMatrix, isMatrixPayload } from "./payload";

export type { Figure } from "./contract";

/** A payload type as decodeTree returns it: every MatrixPayload in it as Float32Array rows. */
export type Decoded<T> = T extends MatrixPayload ? Float32Array[] : T extends object ? { [K in keyof T]: Decoded<T[K]> } : T;

/** A figure (or any tree) with every binary matrix entry decoded into Float32Array rows, ready for plotly. */
export function decodeTree<T>(value: T): Decoded<T> {
  if (isMatrixPayload(value)) return decodeMatrix(value) as Decoded<T>;
  if (Array.isArray(value)) return value.map((v) => decodeTree(v)) as Decoded<T>;
  if (value && typeof value === "object" && !(value instanceof DataView) && !ArrayBuffer.isView(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = decodeTree(v);
    return out as Decoded<T>;
  }
  return value as Decoded<T>;
}

/** A token with its invisible characters made visible: newline ↵, tab ⇥, and an empty token as ∅. */
export function visibleToken(s: string): string {
  if (s === "") return "∅";
  return s.replace(/\r?\n/g, "↵").replace(/\t/g, "⇥");
}

/** What withDenseMap reads and rebuilds of a decoded view. */
export interface DenseTarget {
  layer: number;
  head: number;
  region: number[];
  figure: { data: Record<string, unknown>[]; layout: Record<string, unknown> };
}

/** The view with its dense panel's values put in from the `dense_map` trait (sent apart, only when they change),
 *  when that map is the view's own: the same layer, head and region. Otherwise the view as it is (its dense panel
 *  stays empty until its values come, in the same message as the view whenever they change). */
export function withDenseMap<V extends DenseTarget>(view: V, dense: DenseMap | Empty | undefined): V {
  if (!dense || !filled(dense)) return view;
  if (dense.layer !== view.layer || dense.head !== view.head || dense.region.join() !== view.region.join()) return view;
  const z = decodeMatrix(dense.z);
  const data = view.figure.data.map((trace) => (trace.name === "dense" ? { ...trace, z } : trace));
  return { ...view, figure: { ...view.figure, data } };
}

// cell states, as figures.py codes them
export const NOT_ALLOWED = 0, KEPT = 1, PARTLY_KEPT = 2, DROPPED = 3;

/** What the tooltip reads: the decoded main view. */
export interface Cells {
  dense: Float32Array[]; // NaN where the model allows nothing
  sparse: Float32Array[]; // minus the dense p lost where the mask dropped the pair (one heatmap shows both)
  states: Float32Array[];
  keptPct: Float32Array[];
  region: number[]; // [q0, q1, k0, k1]
  factor: number;
}

/** What cellsOf reads of a decoded view (Decoded<View>; tests pass just these). */
export interface CellsSource {
  figure?: { data?: Record<string, unknown>[] };
  states?: Float32Array[];
  kept_pct?: Float32Array[];
  region?: number[];
  factor?: number;
}

/** The tooltip's data, from a decoded view payload (its main figure plus the per-cell states). */
export function cellsOf(view: CellsSource | null | undefined): Cells | null {
  const data = view?.figure?.data ?? [];
  const z = (name: string) => data.find((d) => d.name === name)?.z as Float32Array[] | undefined;
  const dense = z("dense");
  const sparse = z("sparse");
  if (!view || !dense || !sparse || !view.states || !view.kept_pct || !view.region || view.factor === undefined) return null;
  return { dense, sparse, states: view.states, keptPct: view.kept_pct, region: view.region, factor: view.factor };
}

/** What the tooltip says about cell (i, j) of the main view. */
export function cellInfo(c: Cells, tokens: string[], i: number, j: number): string[] {
  const [q0, , k0] = c.region;
  const q = q0 + i * c.factor;
  const k = k0 + j * c.factor;
  const span = (p: number) => (c.factor > 1 ? `${p}–${p + c.factor - 1}` : `${p}`);
  const tok = (p: number) => (c.factor > 1 ? "" : ` ${JSON.stringify(visibleToken(tokens[p] ?? ""))}`);
  const state = c.states[i]?.[j];
  const lines = [`query ${span(q)}${tok(q)}`, `key ${span(k)}${tok(k)}`];
  if (state === undefined || state === NOT_ALLOWED) return [...lines, "not allowed by the model (future or padding)"];
  const sparse = state === DROPPED || Number.isNaN(c.sparse[i][j]) ? 0 : c.sparse[i][j];
  lines.push(`dense ${weightText(c.dense[i][j], 4)} · sparse ${weightText(sparse, 4)}`);
  if (state === PARTLY_KEPT) lines.push(`${c.keptPct[i][j].toFixed(0)}% of these pairs kept`);
  else lines.push(state === KEPT ? "kept" : "dropped by the mask");
  if (c.factor > 1) lines.push(`mean over ${c.factor}×${c.factor} pairs`);
  return lines;
}

/**
 * An attention weight for reading: `digits` decimals down to 10^-digits, below that three significant digits
 * ("2.41e-5"). At 8K tokens a softmax row spreads over thousands of keys, so weights that matter are often tiny.
 */
export function weightText(w: number, digits = 3): string {
  if (!Number.isFinite(w)) return "n/a";
  return w === 0 || Math.abs(w) >= 10 ** -digits ? w.toFixed(digits) : w.toExponential(2);
}

/** Index of the first token where two continuations differ (their common length if one is a prefix). */
export function firstDivergence(a: string[], b: string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return n;
}

/** The measured attention time of a comparison, in one sentence ("" until measured). */
export function timeText(met: Partial<MetricsPayload>): string {
  const dense = met.attention_time_dense, sparse = met.attention_time_sparse;
  if (dense == null || sparse == null) return "";
  const ms = (s: number) => `${(1000 * s).toFixed(s < 0.1 ? 1 : 0)} ms`;
  const kernel = met.attention_kernel === "flex" ? "FlexAttention" : "SDPA with the mask";
  return `Attention per forward pass on this machine: dense ${ms(dense)}, sparse ${ms(sparse)} (${kernel}, ` +
    `${((met.attention_tiles_skipped ?? 0) * 100).toFixed(0)}% of the tiles skipped): ${(dense / sparse).toFixed(2)}× ${dense >= sparse ? "faster" : "— slower"}.`;
}
