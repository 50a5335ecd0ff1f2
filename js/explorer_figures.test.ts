import { describe, expect, it } from "vitest";
import type { ExplorerGraph, ExplorerOp } from "./contract";
import { batchPreset, crossoverFigure, formatRequests, opRows, panBy, parseRequests, ranksFigure, rooflineFigure, seconds, si, totalsRows, zoomAt, type Box } from "./explorer_figures";

describe("the batch's requests", () => {
  it("parse context:new pairs with repeats and refuse the rest", () => {
    expect(parseRequests("8192:8192, 8192:1 x3")).toEqual([[8192, 8192], [8192, 1], [8192, 1], [8192, 1]]);
    expect(parseRequests(" 100 : 1 ")).toEqual([[100, 1]]);
    expect(parseRequests("")).toBeNull();
    expect(parseRequests("8192")).toBeNull();
    expect(parseRequests("0:0")).toBeNull();
  });
  it("format back, runs of equal requests folded", () => {
    const reqs = [[8192, 8192], [8192, 1], [8192, 1], [8192, 1]];
    expect(formatRequests(reqs)).toBe("8192:8192, 8192:1 x3");
    expect(parseRequests(formatRequests(reqs))).toEqual(reqs);
  });
  it("have presets for a prefill, a decode batch and a mixed batch", () => {
    expect(batchPreset("prefill", 512)).toEqual([[512, 512]]);
    expect(batchPreset("decode", 512)).toHaveLength(8);
    expect(batchPreset("mixed", 512)[0]).toEqual([512, 512]);
  });
});

describe("pan and zoom", () => {
  it("zoom keeps the point under the cursor in place", () => {
    const box: Box = [0, 0, 1000, 500];
    const z = zoomAt(box, 2, 250, 100);
    expect(z).toEqual([125, 50, 500, 250]);
    // the point's place in the view, as a fraction, is unchanged
    expect((250 - z[0]) / z[2]).toBeCloseTo((250 - box[0]) / box[2]);
  });
  it("a drag moves the view by screen pixels at the view's scale", () => {
    expect(panBy([100, 0, 1000, 500], 50, -20, 500)).toEqual([0, 40, 1000, 500]);
  });
});

describe("numbers", () => {
  it("read with SI prefixes and time units", () => {
    expect(si(1.5e9, "FLOP")).toBe("1.50 GFLOP");
    expect(si(999)).toBe("999");
    expect(si(null)).toBe("n/a");
    expect(seconds(2.5e-4)).toBe("250 µs");
    expect(seconds(0.0123)).toBe("12.3 ms");
  });
});

const op: ExplorerOp = {
  id: "op6", name: "QK^T", kind: "matmul", stage: "attention", column: 4, lane: 0, inputs: ["t1", "t2"], output: "t3",
  flops: 1e12, bytes_read: 2e9, bytes_written: 1e9, comm_bytes: 0, intensity: 1e12 / 3e9, dtype: "bf16",
  rooflines: [
    { accelerator: "A100", dtype: "bf16", seconds: 0.0032, compute_seconds: 0.0032, memory_seconds: 0.00147, comm_seconds: 0, bound: "compute", ridge: 153, peak: 312e12, bandwidth: 2.039e12 },
    { accelerator: "H100", dtype: "bf16", seconds: 0.001, compute_seconds: 0.00101, memory_seconds: 0.0009, comm_seconds: 0, bound: "compute", ridge: 295, peak: 989.4e12, bandwidth: 3.35e12 },
  ],
};

describe("an op's details", () => {
  it("list its costs and each accelerator's bound", () => {
    const rows = Object.fromEntries(opRows(op));
    expect(rows["FLOPs"]).toBe("1.00 T");
    expect(rows["bytes in"]).toBe("2.00 GB");
    expect(rows["A100"]).toContain("compute-bound");
  });
  it("draw a roofline per accelerator with the op's point at its intensity and attained FLOP/s", () => {
    const fig = rooflineFigure(op);
    const lines = fig.data.filter((t) => t.mode === "lines");
    const points = fig.data.filter((t) => t.mode === "markers");
    expect(lines).toHaveLength(2);
    const a100 = lines[0] as { x: number[]; y: number[] };
    expect(Math.max(...a100.y)).toBe(312e12); // the flat roof
    expect(a100.x).toContain(312e12 / 2.039e12); // the ridge point
    expect((points[0] as { x: number[] }).x[0]).toBeCloseTo(op.intensity);
    expect((points[0] as { y: number[] }).y[0]).toBeCloseTo(1e12 / 0.0032);
  });
  it("mark MLA's crossover", () => {
    const fig = crossoverFigure([[1, 10, 1], [1000, 20, 400]], 167.2);
    expect(fig.data).toHaveLength(2);
    expect((fig.layout.shapes as { x0: number }[])[0].x0).toBe(167.2);
  });
});

describe("the totals", () => {
  const totals = {
    layer_flops: 2e12, model_flops: 6e13, layer_bytes: 4e9, model_bytes: 1.2e11, comm_bytes: 0, kv_cache_bytes: 5e8, kv_blocks: 16, kv_occupancy: 0.75,
    layer_seconds: { A100: 0.0064, H100: 0.002, B200: 0.001 }, model_seconds: { A100: 0.192, H100: 0.06, B200: 0.03 }, layers: 30, dp_rank: 0,
  };
  const graph = { totals, pairs: 500, dense_pairs: 1000, pipeline: "decode", pipeline_flops: { prefill: 3e12, decode: 2e12 }, measured_dense: 0.5, measured_sparse: 0.25 } as unknown as ExplorerGraph;
  it("give the lower-bound time on every accelerator, the chosen one marked", () => {
    const rows = Object.fromEntries(totalsRows(graph, "H100"));
    expect(rows["≥ time, one layer"]).toBe("A100 6.40 ms · ▸ H100 2.00 ms · B200 1.00 ms");
    expect(rows["≥ time, whole model"]).toBe("A100 192 ms · ▸ H100 60.0 ms · B200 30.0 ms");
    expect(rows["model (30 layers)"]).toBe("60.0 TFLOP, 120 GB moved");
    expect(rows["KV cache"]).toBe("500 MB in 16 blocks, 75.0% full");
    expect(rows["MLA pipelines, one layer"]).toContain("the totals count the absorbed one");
    expect(rows["measured on this machine"]).toBe("attention 500 ms dense, 250 ms sparse (this machine, not a GPU)");
  });
});

describe("the TP and DP picture", () => {
  it("colours each head and request by the rank that computes it", () => {
    const fig = ranksFigure("ranks", [{ name: "query head", ranks: [[0, 1], [2, 3]] }, { name: "request", ranks: [[0, 2], [1]] }]);
    const trace = fig.data[0] as { z: (number | null)[][]; text: string[][]; y: string[] };
    expect(trace.y).toEqual(["query head", "request"]);
    expect(trace.z).toEqual([[0, 0, 1, 1], [0, 1, 0, null]]);
    expect(trace.text[1][2]).toBe("request 2 → rank 0");
  });
});
