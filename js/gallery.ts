// The head gallery: every layer x head as a thumbnail, dense and sparse, drawn as ONE stitched heatmap per regime
// (stack.md §2.4: 6-23x faster than a grid of subplots), in grid or "most changed first" order.
import type { Figure, Gallery } from "./contract";

export type SortKey = "grid" | "kl" | "mass_lost";

/** What the layout functions read of the `gallery` trait (contract.ts: Gallery): its shape and the per-head scores
 * (kl: KL(sparse ‖ dense) averaged over rows; mass_lost: 1 − attention mass recall; per head, layer-major). */
export type GalleryPayload = Pick<Gallery, "n_layers" | "n_heads" | "cell" | "kl" | "mass_lost"> & Partial<Pick<Gallery, "masked">>;

/** The (layer, head) of each slot, in display order. Ties keep grid order; missing scores sort last. */
export function galleryOrder(g: GalleryPayload, key: SortKey): [number, number][] {
  const slots: [number, number][] = [];
  for (let l = 0; l < g.n_layers; l++) for (let h = 0; h < g.n_heads; h++) slots.push([l, h]);
  if (key === "grid") return slots;
  const score = (s: [number, number]) => g[key][s[0] * g.n_heads + s[1]] ?? -Infinity;
  return slots
    .map((s, i) => ({ s, i, v: score(s) }))
    .sort((a, b) => b.v - a.v || a.i - b.i)
    .map((e) => e.s);
}

/** Rearrange a stitched [L*c, H*c] image so that slot k shows the thumbnail of order[k] (H slots per row), with a
 * one-cell gap (NaN, drawn as background) between thumbnails. */
export function restitch(image: Float32Array[], g: GalleryPayload, order: [number, number][]): Float32Array[] {
  const c = g.cell;
  const pitch = c + 1;
  const out = Array.from({ length: g.n_layers * pitch - 1 }, () => new Float32Array(g.n_heads * pitch - 1).fill(NaN));
  order.forEach(([l, h], k) => {
    const row = Math.floor(k / g.n_heads);
    const col = k % g.n_heads;
    for (let y = 0; y < c; y++) {
      out[row * pitch + y].set(image[l * c + y].subarray(h * c, (h + 1) * c), col * pitch);
    }
  });
  return out;
}

/** Which (layer, head) a point of the restitched image belongs to (null on a gap or outside). */
export function slotAt(x: number, y: number, g: GalleryPayload, order: [number, number][]): [number, number] | null {
  const pitch = g.cell + 1;
  const row = Math.floor(y / pitch);
  const col = Math.floor(x / pitch);
  if (row < 0 || col < 0 || col >= g.n_heads || row >= g.n_layers) return null;
  if (y - row * pitch >= g.cell || x - col * pitch >= g.cell) return null;
  return order[row * g.n_heads + col] ?? null;
}

const fmt = (v: number | null | undefined, d: number) => (typeof v === "number" && Number.isFinite(v) ? v.toFixed(d) : "n/a");

/** Tooltip lines for one thumbnail. */
export function slotInfo(g: GalleryPayload, slot: [number, number]): string[] {
  const i = slot[0] * g.n_heads + slot[1];
  const masked = g.masked === "adapted" ? "adapted" : "sparse";
  return [`L${slot[0]}H${slot[1]}`, `KL(${masked}‖dense) ${fmt(g.kl[i], 4)}`, `attention mass lost ${fmt(g.mass_lost[i], 3)}`, "click to open"];
}

/** Dense and sparse galleries side by side, each one heatmap plus one text trace of `L{l}H{h}` labels. */
export function galleryFigure(dense: Float32Array[], sparse: Float32Array[], g: GalleryPayload, order: [number, number][], key: SortKey): Figure {
  const pitch = g.cell + 1;
  const lx: number[] = [];
  const ly: number[] = [];
  const lt: string[] = [];
  order.forEach(([l, h], k) => {
    lx.push((k % g.n_heads) * pitch + 0.5);
    ly.push(Math.floor(k / g.n_heads) * pitch + 0.5);
    const score = key === "grid" ? "" : ` ${fmt(g[key][l * g.n_heads + h], key === "kl" ? 2 : 2)}`;
    lt.push(`L${l}H${h}${score}`);
  });
  const heat = (z: Float32Array[], xaxis: string) => ({ type: "heatmap", z, xaxis, yaxis: "y", zmin: 0, zmax: 255,
    colorscale: "Viridis", showscale: false, zsmooth: false, hoverinfo: "none" });
  const labels = (xaxis: string) => ({ type: "scatter", mode: "text", x: lx, y: ly, text: lt, xaxis, yaxis: "y",
    textposition: "bottom right", textfont: { size: 8, color: "white" }, hoverinfo: "none" });
  const width = g.n_heads * pitch - 1;
  const plain = { showticklabels: false, showgrid: false, zeroline: false, range: [-0.5, width - 0.5] };
  return {
    data: [heat(dense, "x"), labels("x"), heat(sparse, "x2"), labels("x2")],
    layout: {
      xaxis: { ...plain, domain: [0, 0.49], title: { text: "dense" } },
      xaxis2: { ...plain, domain: [0.51, 1], title: { text: g.masked === "adapted" ? "adapted, under the mask" : "sparse" } },
      // no scaleanchor: the widget sizes the figure so that cells come out square
      yaxis: { autorange: "reversed", showticklabels: false, showgrid: false, zeroline: false },
      showlegend: false,
      plot_bgcolor: "#ffffff",
      hovermode: "closest",
      margin: { l: 4, r: 4, t: 4, b: 36 },
      uirevision: "gallery",
    },
  };
}
