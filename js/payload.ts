// Decoding the binary payloads the kernel sends (see src/attnsparse_widget/payload.py).
import type { MatrixPayload } from "./contract";

export type { MatrixPayload } from "./contract";

/** IEEE 754 half precision → number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Whether a value is a binary matrix entry as the kernel sends it. */
export function isMatrixPayload(v: unknown): v is MatrixPayload {
  if (!v || typeof v !== "object") return false;
  const m = v as Record<string, unknown>;
  return Array.isArray(m.shape) && (m.dtype === "f2" || m.dtype === "u1") && m.data !== undefined && Object.keys(m).length === 3;
}

function bytesOf(data: MatrixPayload["data"]): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** A payload matrix as rows of Float32Array (what plotly heatmaps take as z). */
export function decodeMatrix(m: MatrixPayload): Float32Array[] {
  const [rows, cols] = m.shape;
  const bytes = bytesOf(m.data);
  const flat = new Float32Array(rows * cols);
  if (m.dtype === "u1") {
    if (bytes.length !== rows * cols) throw new Error(`u1 payload: ${bytes.length} bytes for ${rows}x${cols}`);
    for (let i = 0; i < flat.length; i++) flat[i] = bytes[i];
  } else {
    if (bytes.length !== 2 * rows * cols) throw new Error(`f2 payload: ${bytes.length} bytes for ${rows}x${cols}`);
    // copy: a DataView from a comm message may sit at an odd offset of a larger buffer
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < flat.length; i++) flat[i] = halfToFloat(view.getUint16(2 * i, true));
  }
  const out: Float32Array[] = [];
  for (let r = 0; r < rows; r++) out.push(flat.subarray(r * cols, (r + 1) * cols));
  return out;
}
