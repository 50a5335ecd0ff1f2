import { describe, expect, it } from "vitest";
import { axis, firstDivergence, heavyDrops, layerFigure, mainFigure, plotlySafe, type View } from "./figures";

const rows = (m: number[][]) => m.map((r) => Float32Array.from(r));
const view: View = {
  dense: rows([[1, 0, 0], [0.6, 0.4, 0], [0.7, 0.1, 0.2]]),
  sparse: rows([[1, 0, 0], [0.6, 0.4, 0], [0, 0.33, 0.67]]),
  keep: rows([[1, 0, 0], [1, 1, 0], [0, 1, 1]]),
  allowed: rows([[1, 0, 0], [1, 1, 0], [1, 1, 1]]),
  region: [0, 3, 0, 3],
  factor: 1,
};

describe("mainFigure", () => {
  const fig = mainFigure(view, ["<b>", "cat", "sat"], "L0 mean");
  it("has dense, sparse, diff heatmaps and a dropped-pairs overlay", () => {
    expect(fig.data.map((d) => d.name)).toEqual(["dense", "sparse", "sparse − dense", "dropped, high dense weight"]);
  });
  it("marks dropped cells as gaps in the sparse map", () => {
    const z = fig.data[1].z as number[][];
    expect(Number.isNaN(z[2][0])).toBe(true);
    expect(z[2][1]).toBeCloseTo(0.33);
  });
  it("diff is sparse - dense on a symmetric diverging scale", () => {
    const d = fig.data[2];
    expect((d.z as number[][])[2][0]).toBeCloseTo(-0.7);
    expect(d.zmid).toBe(0);
    expect(d.zmax).toBeCloseTo(0.7);
  });
  it("flags the heavy dropped pair", () => {
    expect(heavyDrops(view)).toEqual({ x: [0], y: [2], w: [expect.closeTo(0.7)] });
  });
  it("escapes token labels so markup shows literally", () => {
    expect((fig.layout.xaxis as any).ticktext[0]).toBe("&lt;b&gt;");
    expect(plotlySafe('<img src=x onerror="alert(1)">')).not.toContain("<");
  });
});

describe("axis", () => {
  it("labels tokens when few, positions when pooled", () => {
    expect(axis(["a", "b"], 0, 2, 1).ticktext).toEqual(["a", "b"]);
    expect(axis(["a", "b"], 0, 200, 4).ticktext).toBeUndefined();
  });
});

describe("layerFigure and continuations", () => {
  it("fills in progressively and highlights the selected layer", () => {
    const fig = layerFigure({ per_layer_delta_ppl: [0.1, 2], cumulative_delta_ppl: [], mass_recall: [1, 0.9, 0.8] }, 3, 1);
    expect(fig.data[0].x).toEqual([0, 1]);
    expect((fig.data[0].marker as any).color).toEqual(["#1f77b4", "#d62728", "#1f77b4"]);
  });
  it("finds the first diverging token", () => {
    expect(firstDivergence(["a", "b", "c"], ["a", "x", "c"])).toBe(1);
    expect(firstDivergence(["a"], ["a", "b"])).toBe(1);
  });
});
