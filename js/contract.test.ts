import { describe, expect, it } from "vitest";
import { filled, type Empty, type Info, type Status } from "./contract";

describe("filled", () => {
  it("tells an output trait's value from the {} it holds before the first one", () => {
    const before: Info | Empty = {};
    expect(filled(before)).toBe(false);
    expect(filled(null)).toBe(false);
    expect(filled(undefined)).toBe(false);
    const status: Status = { busy: false, error: null, stage: "", started: 0, request: 0 };
    expect(filled(status)).toBe(true);
  });
});
