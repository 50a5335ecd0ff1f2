import { describe, expect, it } from "vitest";
import { cellInfo, cellsOf, decodeTree, DROPPED, firstDivergence, KEPT, NOT_ALLOWED, PARTLY_KEPT, timeText, visibleToken, weightText,
  withDenseMap } from "./figures";
import type { MatrixPayload } from "./contract";

const rows = (m: number[][]) => m.map((r) => Float32Array.from(r));
const f2 = (m: number[][]) => {
  // float16 bytes the way numpy writes them, for a few exact values
  const bits: Record<string, number> = { "0": 0, "1": 0x3c00, "0.5": 0x3800, "0.25": 0x3400, NaN: 0x7e00 };
  const buf = new DataView(new ArrayBuffer(2 * m.length * m[0].length));
  m.flat().forEach((v, i) => buf.setUint16(2 * i, bits[String(v)], true));
  return { shape: [m.length, m[0].length], dtype: "f2", data: buf };
};

describe("decodeTree", () => {
  it("decodes every binary matrix of a figure and leaves the rest alone", () => {
    const tree = decodeTree({ data: [{ name: "dense", z: f2([[1, NaN], [0.5, 0.5]]), x: [0, 1] }], layout: { title: { text: "t" } } });
    const z = tree.data[0].z as unknown as Float32Array[];
    expect(Array.from(z[1])).toEqual([0.5, 0.5]);
    expect(Number.isNaN(z[0][1])).toBe(true);
    expect(tree.data[0].x).toEqual([0, 1]);
    expect(tree.layout).toEqual({ title: { text: "t" } });
  });
});

describe("withDenseMap", () => {
  const shown = { layer: 2, head: -1, region: [0, 2, 0, 2], figure: { data: [{ name: "dense" }, { name: "sparse", z: rows([[1]]) }], layout: {} } };
  const z = f2([[1, NaN], [0.5, 0.5]]) as unknown as MatrixPayload;
  it("puts the dense values into the view they belong to", () => {
    const filledIn = withDenseMap(shown, { layer: 2, head: -1, region: [0, 2, 0, 2], z });
    const dense = filledIn.figure.data[0].z as Float32Array[];
    expect(Array.from(dense[1])).toEqual([0.5, 0.5]);
    expect(filledIn.figure.data[1]).toBe(shown.figure.data[1]);
    expect(shown.figure.data[0]).toEqual({ name: "dense" }); // the decoded view itself is left alone
  });
  it("leaves a view whose dense values have not come (another layer, head or region, or none yet)", () => {
    for (const other of [{ layer: 1, head: -1, region: [0, 2, 0, 2] }, { layer: 2, head: 0, region: [0, 2, 0, 2] },
      { layer: 2, head: -1, region: [0, 1, 0, 2] }]) {
      expect(withDenseMap(shown, { ...other, z })).toBe(shown);
    }
    expect(withDenseMap(shown, {})).toBe(shown);
    expect(withDenseMap(shown, undefined)).toBe(shown);
  });
});

// three tokens, causal: row 2 dropped its first key (dense weight 0.5, shown as -0.5 in the sparse heatmap)
const view = {
  figure: { data: [
    { name: "dense", z: rows([[1, NaN, NaN], [0.5, 0.5, NaN], [0.5, 0.25, 0.25]]) },
    { name: "sparse", z: rows([[1, NaN, NaN], [0.5, 0.5, NaN], [-0.5, 0.5, 0.5]]) },
  ] },
  states: rows([[KEPT, NOT_ALLOWED, NOT_ALLOWED], [KEPT, KEPT, NOT_ALLOWED], [DROPPED, KEPT, KEPT]]),
  kept_pct: rows([[100, 0, 0], [100, 100, 0], [0, 100, 100]]),
  region: [0, 3, 0, 3],
  factor: 1,
};

describe("tooltip", () => {
  const cells = cellsOf(view)!;
  it("names the query and key tokens, both probabilities and the fate of the pair", () => {
    expect(cellInfo(cells, ["The", "cat", "sat"], 2, 0)).toEqual(['query 2 "sat"', 'key 0 "The"', "dense 0.5000 · sparse 0.0000", "dropped by the mask"]);
    expect(cellInfo(cells, ["The", "cat", "sat"], 2, 1).slice(-1)[0]).toBe("kept");
    expect(cellInfo(cells, ["The", "cat", "sat"], 0, 2).slice(-1)[0]).toMatch(/not allowed/);
  });
  it("describes a pooled cell by its span and the share of its pairs kept", () => {
    const pooled = cellsOf({ ...view, factor: 4, states: rows([[PARTLY_KEPT, 0, 0], [1, 1, 0], [3, 1, 1]]), kept_pct: rows([[75, 0, 0], [0, 0, 0], [0, 0, 0]]) })!;
    expect(cellInfo(pooled, [], 0, 0)).toEqual(["query 0–3", "key 0–3", "dense 1.0000 · sparse 1.0000", "75% of these pairs kept", "mean over 4×4 pairs"]);
  });
  it("needs the dense and sparse traces", () => {
    expect(cellsOf({ figure: { data: [] }, states: [] })).toBeNull();
  });
});

describe("text", () => {
  it("makes whitespace visible", () => {
    expect(visibleToken("a\nb\t")).toBe("a↵b⇥");
    expect(visibleToken("")).toBe("∅");
  });
  it("finds the first diverging token", () => {
    expect(firstDivergence(["a", "b", "c"], ["a", "x", "c"])).toBe(1);
    expect(firstDivergence(["a"], ["a", "b"])).toBe(1);
    expect(firstDivergence(["a"], ["a"])).toBe(1);
  });
});

describe("timeText", () => {
  it("says nothing until the time is measured", () => {
    expect(timeText({})).toBe("");
    expect(timeText({ attention_time_dense: 0.5, attention_time_sparse: null })).toBe("");
  });
  it("gives both times, the kernel, the skipped tiles and the ratio", () => {
    const met = { attention_time_dense: 0.6, attention_time_sparse: 0.2, attention_kernel: "flex", attention_tiles_skipped: 0.75 };
    expect(timeText(met)).toBe(
      "Attention per forward pass on this machine: dense 600 ms, sparse 200 ms (FlexAttention, 75% of the tiles skipped): 3.00× faster.");
    expect(timeText({ ...met, attention_time_sparse: 1.2, attention_kernel: "sdpa" })).toContain("SDPA with the mask");
    expect(timeText({ ...met, attention_time_sparse: 1.2 })).toContain("0.50× — slower");
  });
});

describe("weightText", () => {
  it("keeps fixed decimals down to their last digit, then switches to three significant digits", () => {
    expect(weightText(0.25)).toBe("0.250");
    expect(weightText(0.001)).toBe("0.001");
    expect(weightText(0.000241)).toBe("2.41e-4");
    expect(weightText(0.000241, 4)).toBe("0.0002");
    expect(weightText(0.0000241, 4)).toBe("2.41e-5");
    expect(weightText(0)).toBe("0.000");
    expect(weightText(Number.NaN)).toBe("n/a");
  });
});
