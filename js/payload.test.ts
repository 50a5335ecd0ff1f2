import { describe, expect, it } from "vitest";
import { decodeMatrix, halfToFloat, isMatrixPayload } from "./payload";

// float16 bit patterns of a few values, as numpy writes them (little endian)
const HALF: [number, number][] = [[0x0000, 0], [0x3c00, 1], [0x3800, 0.5], [0xbc00, -1], [0x0001, 2 ** -24], [0x7bff, 65504]];

describe("halfToFloat", () => {
  it.each(HALF)("decodes 0x%s", (bits, value) => expect(halfToFloat(bits)).toBe(value));
  it("handles inf and nan", () => {
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(halfToFloat(0xfc00)).toBe(-Infinity);
    expect(halfToFloat(0x7e00)).toBeNaN();
  });
});

describe("decodeMatrix", () => {
  it("decodes f2 rows from a DataView at an odd offset of a larger buffer", () => {
    const buf = new ArrayBuffer(3 + 2 * 6);
    const dv = new DataView(buf, 3, 12);
    [1, 0.5, 0, -1, 0.25, 2].forEach((v, i) => dv.setUint16(2 * i, { 1: 0x3c00, 0.5: 0x3800, 0: 0, [-1]: 0xbc00, 0.25: 0x3400, 2: 0x4000 }[v]!, true));
    const rows = decodeMatrix({ shape: [2, 3], dtype: "f2", data: dv });
    expect(rows.map((r) => Array.from(r))).toEqual([[1, 0.5, 0], [-1, 0.25, 2]]);
  });
  it("decodes u1", () => {
    const rows = decodeMatrix({ shape: [2, 2], dtype: "u1", data: new Uint8Array([0, 255, 128, 7]) });
    expect(rows.map((r) => Array.from(r))).toEqual([[0, 255], [128, 7]]);
  });
  it("refuses a payload whose size does not match its shape", () => {
    expect(() => decodeMatrix({ shape: [2, 2], dtype: "f2", data: new Uint8Array(6) })).toThrow(/6 bytes for 2x2/);
  });
  it("recognises matrix entries and nothing else", () => {
    expect(isMatrixPayload({ shape: [1, 1], dtype: "u1", data: new Uint8Array(1) })).toBe(true);
    expect(isMatrixPayload({ shape: [1, 1], dtype: "f4", data: new Uint8Array(4) })).toBe(false);
    expect(isMatrixPayload({ shape: [1, 1], dtype: "u1", data: new Uint8Array(1), name: "x" })).toBe(false);
    expect(isMatrixPayload([1, 2])).toBe(false);
  });
});
