import { describe, expect, it } from "vitest";
import { galleryFigure, galleryOrder, restitch, slotAt, slotInfo } from "./gallery";

const g = { n_layers: 2, n_heads: 3, cell: 2, kl: [0.1, 0.5, null, 0.5, 0.0, 0.9], mass_lost: [0, 0, 0, 0, 0, 0] };

describe("gallery order", () => {
  it("grid order is layer-major", () => {
    expect(galleryOrder(g, "grid")).toEqual([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]);
  });
  it("sorts by KL descending, ties in grid order, missing scores last", () => {
    expect(galleryOrder(g, "kl")).toEqual([[1, 2], [0, 1], [1, 0], [0, 0], [1, 1], [0, 2]]);
  });
  it("ties everywhere keep the grid order", () => {
    expect(galleryOrder(g, "mass_lost")).toEqual(galleryOrder(g, "grid"));
  });
});

describe("restitch and slotAt", () => {
  // each 2x2 thumbnail filled with 10*layer + head
  const image = Array.from({ length: 4 }, (_, y) => Float32Array.from({ length: 6 }, (_, x) => 10 * Math.floor(y / 2) + Math.floor(x / 2)));
  const order = galleryOrder(g, "kl");
  const out = restitch(image, g, order);
  it("moves whole thumbnails into their slots, with a blank gap between them", () => {
    expect(out.length).toBe(2 * 3 - 1);
    expect(out[0].length).toBe(3 * 3 - 1);
    expect(out[0][0]).toBe(12); // slot 0 = L1H2
    expect(out[1][4]).toBe(1); // slot 1 = L0H1 (columns 3-4)
    expect(Number.isNaN(out[0][2])).toBe(true); // gap column
    expect(Number.isNaN(out[2][0])).toBe(true); // gap row
    expect(out[4][7]).toBe(2); // slot 5 = L0H2
  });
  it("maps points back to their (layer, head), and gaps to nothing", () => {
    expect(slotAt(7.2, 3.5, g, order)).toEqual([0, 2]);
    expect(slotAt(2.1, 0, g, order)).toBeNull();
    expect(slotAt(-1, 0, g, order)).toBeNull();
    expect(slotInfo(g, [1, 2])).toEqual(["L1H2", "KL(sparse‖dense) 0.9000", "attention mass lost 0.000", "click to open"]);
  });
  it("draws one heatmap per regime plus one text trace of labels, in display order", () => {
    const fig = galleryFigure(out, out, g, order, "kl");
    expect(fig.data.map((d) => d.type)).toEqual(["heatmap", "scatter", "heatmap", "scatter"]);
    expect((fig.data[1].text as string[])[0]).toBe("L1H2 0.90");
    expect(fig.data[1].x).toEqual([0.5, 3.5, 6.5, 0.5, 3.5, 6.5]);
  });
});
