// The head gallery: L x H thumbnails stitched into one image, in grid or "most changed first" order.

export type SortKey = "grid" | "kl" | "mass_lost";

export interface GalleryPayload {
  n_layers: number;
  n_heads: number;
  cell: number;
  kl: (number | null)[];
  mass_lost: (number | null)[];
}

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

/** Rearrange a stitched [L*c, H*c] image so that slot k shows the thumbnail of order[k] (H slots per row). */
export function restitch(image: Float32Array[], g: GalleryPayload, order: [number, number][]): Float32Array[] {
  const c = g.cell;
  const out = Array.from({ length: g.n_layers * c }, () => new Float32Array(g.n_heads * c));
  order.forEach(([l, h], k) => {
    const row = Math.floor(k / g.n_heads);
    const col = k % g.n_heads;
    for (let y = 0; y < c; y++) {
      out[row * c + y].set(image[l * c + y].subarray(h * c, (h + 1) * c), col * c);
    }
  });
  return out;
}

/** Which (layer, head) a point of the stitched image belongs to. */
export function slotAt(x: number, y: number, g: GalleryPayload, order: [number, number][]): [number, number] | null {
  const row = Math.floor(y / g.cell);
  const col = Math.floor(x / g.cell);
  if (row < 0 || col < 0 || col >= g.n_heads || row >= g.n_layers) return null;
  return order[row * g.n_heads + col] ?? null;
}
