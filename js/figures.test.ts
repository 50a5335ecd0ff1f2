import { describe, expect, it } from "vitest";
import { axis, cellInfo, cellState, firstDivergence, heavyDrops, layerFigure, mainFigure, maskFigure, plotlySafe, visibleToken, type View } from "./figures";

const rows = (m: number[][]) => m.map((r) => Float32Array.from(r));
// three tokens, causal: row 2 dropped its first key (dense weight 0.7)
const view: View = {
  dense: rows([[1, 0, 0], [0.6, 0.4, 0], [0.7, 0.1, 0.2]]),
  sparse: rows([[1, 0, 0], [0.6, 0.4, 0], [0, 0.33, 0.67]]),
  keep: rows([[1, 0, 0], [1, 1, 0], [0, 1, 1]]),
  allowed: rows([[1, 0, 0], [1, 1, 0], [1, 1, 1]]),
  region: [0, 3, 0, 3],
  factor: 1,
};
const zOf = (fig: ReturnType<typeof mainFigure>, name: string) => fig.data.find((d) => d.name === name)!.z as number[][];

describe("mainFigure", () => {
  const fig = mainFigure(view, ["<b>", "cat", "sat"], "L0 mean");
  it("has dense, sparse (kept), dropped and difference heatmaps with no per-cell hover payload", () => {
    expect(fig.data.map((d) => d.name)).toEqual(["dense", "sparse", "dropped", "sparse − dense"]);
    for (const d of fig.data) {
      expect(d.hoverinfo).toBe("none");
      expect(d.customdata).toBeUndefined();
    }
  });
  it("shows kept pairs by sparse probability and dropped pairs by the dense weight they lost", () => {
    expect(Number.isNaN(zOf(fig, "sparse")[2][0])).toBe(true);
    expect(zOf(fig, "sparse")[2][1]).toBeCloseTo(0.33);
    expect(zOf(fig, "dropped")[2][0]).toBeCloseTo(0.7);
    expect(Number.isNaN(zOf(fig, "dropped")[2][1])).toBe(true);
  });
  it("leaves pairs the model never allows blank in every panel", () => {
    for (const name of ["dense", "sparse", "dropped", "sparse − dense"]) expect(Number.isNaN(zOf(fig, name)[0][2])).toBe(true);
  });
  it("diff is sparse - dense on a symmetric diverging scale", () => {
    const d = fig.data[3];
    expect((d.z as number[][])[2][0]).toBeCloseTo(-0.7);
    expect(d.zmid).toBe(0);
    expect(d.zmax).toBeCloseTo(0.7);
  });
  it("escapes token labels so markup shows literally, and makes whitespace visible", () => {
    expect((fig.layout.xaxis as any).ticktext[0]).toBe("&lt;b&gt;");
    expect(plotlySafe('<img src=x onerror="alert(1)">')).not.toContain("<");
    expect(visibleToken("a\nb\t")).toBe("a↵b⇥");
    expect(visibleToken("")).toBe("∅");
  });
});

describe("cells", () => {
  it("classifies cells, including pooled ones", () => {
    expect(cellState(view, 2, 0)).toBe("dropped");
    expect(cellState(view, 2, 1)).toBe("kept");
    expect(cellState(view, 0, 1)).toBe("not allowed");
    const pooled: View = { ...view, keep: rows([[0.5]]), allowed: rows([[0.75]]), dense: rows([[0.2]]), sparse: rows([[0.3]]), factor: 2 };
    expect(cellState(pooled, 0, 0)).toBe("partly kept");
  });
  it("tooltip names the query and key tokens, both probabilities and the fate of the pair", () => {
    const lines = cellInfo(view, ["The", "cat", "sat"], 2, 0);
    expect(lines[0]).toBe('query 2 "sat"');
    expect(lines[1]).toBe('key 0 "The"');
    expect(lines[2]).toBe("dense 0.7000 · sparse 0.0000");
    expect(lines[3]).toBe("dropped by the mask");
    expect(cellInfo(view, ["The", "cat", "sat"], 0, 2).slice(-1)[0]).toMatch(/not allowed/);
  });
  it("lists the heaviest dropped pairs first", () => {
    expect(heavyDrops(view)).toEqual([{ q: 2, k: 0, w: expect.closeTo(0.7) }]);
  });
});

describe("axis", () => {
  it("labels tokens when few, positions when pooled", () => {
    expect(axis(["a", "b"], 0, 2, 1).ticktext).toEqual(["a", "b"]);
    expect(axis(["a", "b"], 0, 200, 4).ticktext).toBeUndefined();
  });
});

describe("maskFigure", () => {
  it("shows the kept fraction of allowed pairs, blank where nothing is allowed", () => {
    const z = maskFigure(view, "m").data[0].z as number[][];
    expect(Array.from(z[2])).toEqual([0, 1, 1]);
    expect(Number.isNaN(z[0][1])).toBe(true);
  });
});

describe("layerFigure and continuations", () => {
  it("fills in progressively and highlights the selected layer", () => {
    const fig = layerFigure({ per_layer_delta_ppl: [0.1, 2], cumulative_delta_ppl: [], mass_recall: [1, 0.9, 0.8] }, 3, 1);
    expect(fig.data[0].x).toEqual([0, 1]);
    expect((fig.data[0].marker as any).line.width).toEqual([0, 2.5]);
    expect(fig.data[2].y).toEqual([1, 0.9, 0.8]);
  });
  it("finds the first diverging token", () => {
    expect(firstDivergence(["a", "b", "c"], ["a", "x", "c"])).toBe(1);
    expect(firstDivergence(["a"], ["a", "b"])).toBe(1);
    expect(firstDivergence(["a"], ["a"])).toBe(1);
  });
});
