import { describe, expect, it } from "vitest";
import { galleryOrder, restitch, slotAt } from "./gallery";

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
  // each thumbnail filled with 10*layer + head
  const image = Array.from({ length: 4 }, (_, y) => Float32Array.from({ length: 6 }, (_, x) => 10 * Math.floor(y / 2) + Math.floor(x / 2)));
  it("moves whole thumbnails into their slots", () => {
    const order = galleryOrder(g, "kl");
    const out = restitch(image, g, order);
    expect(out[0][0]).toBe(12); // slot 0 = L1H2
    expect(out[1][3]).toBe(1); // slot 1 = L0H1
    expect(out[3][5]).toBe(2); // slot 5 = L0H2
    expect(slotAt(4.5, 2.5, g, order)).toEqual([0, 2]);
    expect(slotAt(-1, 0, g, order)).toBeNull();
  });
});
