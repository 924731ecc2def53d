// The safetensors format (the Hugging Face format), shared by its reader and writer:
//
//   [8 bytes: little-endian u64 N] [N bytes: UTF-8 JSON header] [data buffer]
//
// The header maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} with the offsets
// relative to the start of the data buffer, plus an optional "__metadata__": {string: string}.
// Here: the types, the dtypes and their conversion to float32, and the one error listing every
// problem found.
import * as os from 'os';
import { describe, fail, SppnetError } from '../core/errors';

export interface HostTensor {
  dtype: 'float32';
  shape: number[];
  data: Float32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, HostTensor>;
  metadata: Record<string, string>;
}

/** What encodeSafetensors / writeSafetensors take for each tensor. */
export interface TensorToWrite {
  shape: number[];
  data: Float32Array;
}

export type TensorsToWrite = Map<string, TensorToWrite> | Record<string, TensorToWrite>;

export interface ExpectedTensor {
  shape: number[];
}

/** The reference implementation refuses headers larger than this. */
export const MAX_HEADER_BYTES = 100_000_000;

/** At most this many problems are spelled out in one error; the rest are counted. */
const MAX_LISTED_PROBLEMS = 100;

export const METADATA_KEY = '__metadata__';

/** Byte size of every dtype the format defines (so the header can be checked even for those we refuse). */
export const DTYPE_SIZE: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};
export const SUPPORTED = ['F32', 'F16', 'BF16', 'F64'];

export const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

export const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);
export const q = (name: string): string => JSON.stringify(name);
export const fmtShape = (shape: readonly unknown[]): string => `[${shape.map((d) => String(d)).join(', ')}]`;

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

/** Adds a problem per bad entry of `shape` (named `t`); whether it is a valid shape. */
export function checkShapeInto(t: string, shape: unknown, problems: string[]): boolean {
  if (!Array.isArray(shape)) {
    problems.push(`${t}: shape must be an array of non-negative integers, got ${describe(shape)}`);
    return false;
  }
  let ok = true;
  shape.forEach((d, i) => {
    if (!isNonNegInt(d)) {
      problems.push(`${t}: shape[${i}] must be a non-negative integer, got ${describe(d)}`);
      ok = false;
    }
  });
  return ok;
}

export function problemsError(summary: string, problems: string[]): SppnetError {
  const listed = problems.slice(0, MAX_LISTED_PROBLEMS).map((p) => `  - ${p}`);
  if (problems.length > MAX_LISTED_PROBLEMS) listed.push(`  ... and ${problems.length - MAX_LISTED_PROBLEMS} more problem(s)`);
  return new SppnetError(`${summary}\n${listed.join('\n')}`, 'SPPNET_INVALID_ARGUMENT');
}

// ---------------------------------------------------------------------------------------------
// Half and bfloat16 -> float32, bit-exact (sign of zero, subnormals, infinities and NaN payloads).

let halfTable: Uint32Array | undefined;

/** float32 bit pattern of an IEEE 754 binary16 bit pattern. */
export function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  let mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0; // Inf / NaN (payload kept)
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0; // normal
  if (mant === 0) return sign >>> 0; // +-0
  // Subnormal half: value = mant * 2^-24; normalise it (every one is a normal float32).
  let e = -14;
  while ((mant & 0x400) === 0) {
    mant <<= 1;
    e--;
  }
  return (sign | ((e + 127) << 23) | ((mant & 0x3ff) << 13)) >>> 0;
}

function getHalfTable(): Uint32Array {
  if (!halfTable) {
    halfTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfBitsToFloatBits(h);
  }
  return halfTable;
}

// ---------------------------------------------------------------------------------------------
// Reading


export function decode(bytes: Uint8Array, view: DataView, at: number, n: number, dtype: string): Float32Array {
  const out = new Float32Array(n);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN_HOST) {
        // Copy the bytes: the data need not be 4-byte aligned in the file, and the result must not alias it.
        new Uint8Array(out.buffer).set(bytes.subarray(at, at + 4 * n));
      } else {
        const bits = new Uint32Array(out.buffer);
        for (let i = 0; i < n; i++) bits[i] = view.getUint32(at + 4 * i, true);
      }
      break;
    case 'F16': {
      const table = getHalfTable();
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = table[view.getUint16(at + 2 * i, true)];
      break;
    }
    case 'BF16': {
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = view.getUint16(at + 2 * i, true) << 16;
      break;
    }
    case 'F64':
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(at + 8 * i, true); // rounds to nearest float32
      break;
    default:
      fail(`parseSafetensors: internal error: dtype ${dtype} has no decoder`, 'SPPNET_INTERNAL');
  }
  return out;
}
