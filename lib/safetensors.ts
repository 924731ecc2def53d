// Reading and writing safetensors files (the Hugging Face format):
//
//   [8 bytes: little-endian u64 N] [N bytes: UTF-8 JSON header] [data buffer]
//
// The header maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} with the offsets
// relative to the start of the data buffer, plus an optional "__metadata__": {string: string}.
// sppnet loads every tensor as float32: F32, F16, BF16 and F64 are converted (F16 and BF16 exactly,
// F64 rounded to nearest); integer and boolean tensors are refused. Every problem found in a file is
// reported at once, in one SppnetError.
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { randomBytes } from 'crypto';
import { describe, fail, SppnetError } from './errors';

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

const METADATA_KEY = '__metadata__';

/** Byte size of every dtype the format defines (so the header can be checked even for those we refuse). */
const DTYPE_SIZE: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};
const SUPPORTED = ['F32', 'F16', 'BF16', 'F64'];

const LITTLE_ENDIAN_HOST = os.endianness() === 'LE';

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);
const q = (name: string): string => JSON.stringify(name);
const fmtShape = (shape: readonly unknown[]): string => `[${shape.map((d) => String(d)).join(', ')}]`;

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

/** Adds a problem per bad entry of `shape` (named `t`); whether it is a valid shape. */
function checkShapeInto(t: string, shape: unknown, problems: string[]): boolean {
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

function problemsError(summary: string, problems: string[]): SppnetError {
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

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/** Parses a whole safetensors file held in memory. Every tensor comes back as float32. */
export function parseSafetensors(bytes: Uint8Array, sourceName?: string): SafetensorsFile {
  return parseImpl(bytes, sourceName, 'parseSafetensors');
}

/** Reads a safetensors file from a path, or parses one already in memory. */
export async function readSafetensors(source: string | Uint8Array): Promise<SafetensorsFile> {
  const fn = 'readSafetensors';
  if (typeof source === 'string') {
    if (source === '') fail(`${fn}: source must be a file path or a Uint8Array, got the empty string`);
    let bytes: Uint8Array;
    try {
      bytes = await fsp.readFile(source);
    } catch (e) {
      const err = e as { code?: string; message?: string };
      const code = err?.code ?? '';
      const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : err?.message ?? String(e);
      throw new SppnetError(`${fn}: cannot read ${source}: ${why}`, 'SPPNET_INVALID_ARGUMENT');
    }
    return parseImpl(bytes, source, fn);
  }
  if (source instanceof Uint8Array) return parseImpl(source, undefined, fn);
  fail(`${fn}: source must be a file path or a Uint8Array, got ${describe(source)}`);
}

/**
 * The "__metadata__" of a safetensors file, reading only its header (not the tensors): what
 * Model.save() stores there (arch, classes, spec) plus the caller's entries, e.g. the class names
 * that `sppnet train --out` writes as `labels` (a JSON array).
 */
export async function readSafetensorsMetadata(file: string): Promise<Record<string, string>> {
  const fn = 'readSafetensorsMetadata';
  if (typeof file !== 'string' || file === '') fail(`${fn}: file must be a file path, got ${describe(file)}`);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(file, 'r');
    const size = (await fh.stat()).size;
    const prefix = Buffer.alloc(8);
    const { bytesRead } = await fh.read(prefix, 0, 8, 0);
    const bad = (problem: string): never => {
      throw problemsError(`${fn}: ${file} is not a valid safetensors file (1 problem(s)):`, [problem]);
    };
    if (bytesRead < 8) bad(`file is ${size} bytes, shorter than the 8-byte header length prefix`);
    const len = prefix.readBigUInt64LE(0);
    if (len > BigInt(MAX_HEADER_BYTES)) bad(`header length ${len} is absurd: more than the ${MAX_HEADER_BYTES} bytes a header may have`);
    if (len > BigInt(size - 8)) bad(`header length ${len} is longer than the file: only ${size - 8} bytes follow the 8-byte length prefix`);
    const header = Buffer.alloc(8 + Number(len));
    prefix.copy(header);
    await fh.read(header, 8, Number(len), 8);
    // The tensors' offsets point past these bytes: check only the header's own structure.
    return parseHeaderMetadata(header, file, fn);
  } catch (e) {
    if (e instanceof SppnetError) throw e;
    const err = e as { code?: string; message?: string };
    const why = err?.code === 'ENOENT' ? 'no such file' : err?.code === 'EISDIR' ? 'it is a directory' : err?.message ?? String(e);
    throw new SppnetError(`${fn}: cannot read ${file}: ${why}`, 'SPPNET_INVALID_ARGUMENT');
  } finally {
    await fh?.close();
  }
}

function parseHeaderMetadata(bytes: Buffer, file: string, fn: string): Record<string, string> {
  const len = Number(bytes.readBigUInt64LE(0));
  let head: unknown;
  try {
    head = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + len)));
  } catch (e) {
    throw problemsError(`${fn}: ${file} is not a valid safetensors file (1 problem(s)):`, [`header is not valid UTF-8 JSON: ${(e as Error).message}`]);
  }
  if (!isPlainObject(head)) throw problemsError(`${fn}: ${file} is not a valid safetensors file (1 problem(s)):`, [`header must be a JSON object, got ${describe(head)}`]);
  const md = (head as Record<string, unknown>)[METADATA_KEY];
  const out: Record<string, string> = {};
  if (md === undefined || md === null) return out;
  if (!isPlainObject(md)) throw problemsError(`${fn}: ${file} is not a valid safetensors file (1 problem(s)):`, [`${METADATA_KEY} must be an object mapping strings to strings, got ${describe(md)}`]);
  for (const [k, v] of Object.entries(md)) if (typeof v === 'string') out[k] = v;
  return out;
}

function parseImpl(bytes: Uint8Array, sourceName: string | undefined, fn: string): SafetensorsFile {
  if (!(bytes instanceof Uint8Array)) fail(`${fn}: bytes must be a Uint8Array, got ${describe(bytes)}`);
  if (sourceName !== undefined && typeof sourceName !== 'string')
    fail(`${fn}: sourceName must be a string, got ${describe(sourceName)}`);
  const what = sourceName !== undefined ? sourceName : `the ${bytes.length}-byte buffer`;
  const problems: string[] = [];
  const bail = (): never => {
    throw problemsError(`${fn}: ${what} is not a valid safetensors file (${problems.length} problem(s)):`, problems);
  };

  // Length prefix and header.
  if (bytes.length < 8) {
    problems.push(`file is ${bytes.length} bytes, shorter than the 8-byte header length prefix`);
    bail();
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLenBig = view.getBigUint64(0, true);
  if (headerLenBig > BigInt(MAX_HEADER_BYTES)) {
    problems.push(`header length ${headerLenBig} is absurd: more than the ${MAX_HEADER_BYTES} bytes a header may have` +
      (headerLenBig > BigInt(bytes.length - 8) ? ` (and the file has only ${bytes.length - 8} bytes after the length prefix)` : ''));
    bail();
  }
  const headerLen = Number(headerLenBig);
  if (headerLen > bytes.length - 8) {
    problems.push(`header length ${headerLen} is longer than the file: only ${bytes.length - 8} bytes follow the 8-byte length prefix`);
    bail();
  }
  let headerText: string;
  try {
    headerText = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + headerLen));
  } catch {
    problems.push(`header (${headerLen} bytes) is not valid UTF-8`);
    bail();
  }
  let header: unknown;
  try {
    header = JSON.parse(headerText!);
  } catch (e) {
    problems.push(`header is not valid JSON: ${(e as Error).message}`);
    bail();
  }
  if (!isPlainObject(header)) {
    problems.push(`header must be a JSON object, got ${describe(header)}`);
    bail();
  }
  const head = header as Record<string, unknown>;
  const dataStart = 8 + headerLen;
  const dataLen = bytes.length - dataStart;

  // Metadata.
  const metadata: Record<string, string> = {};
  if (hasOwn(head, METADATA_KEY)) {
    const md = head[METADATA_KEY];
    if (md === null) {
      // The reference implementation writes no metadata as null; accept it.
    } else if (!isPlainObject(md)) {
      problems.push(`${METADATA_KEY} must be an object mapping strings to strings, got ${describe(md)}`);
    } else {
      for (const [k, v] of Object.entries(md)) {
        if (typeof v !== 'string') problems.push(`${METADATA_KEY}[${q(k)}] must be a string, got ${describe(v)}`);
        else metadata[k] = v;
      }
    }
  }

  // Tensor entries.
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(head)) {
    if (name === METADATA_KEY) continue;
    const t = `tensor ${q(name)}`;
    if (!isPlainObject(raw)) {
      problems.push(`${t}: entry must be an object with dtype, shape and data_offsets, got ${describe(raw)}`);
      continue;
    }
    let ok = true;
    const missing = ['dtype', 'shape', 'data_offsets'].filter((k) => !hasOwn(raw, k));
    if (missing.length > 0) {
      problems.push(`${t}: entry is missing ${missing.map((k) => `"${k}"`).join(', ')}`);
      ok = false;
    }
    const { dtype, shape, data_offsets: offsets } = raw;
    let size = 0;
    if (hasOwn(raw, 'dtype')) {
      if (typeof dtype !== 'string') {
        problems.push(`${t}: dtype must be a string, got ${describe(dtype)}`);
        ok = false;
      } else if (!hasOwn(DTYPE_SIZE, dtype)) {
        problems.push(`${t}: unknown dtype ${q(dtype)} (known: ${Object.keys(DTYPE_SIZE).join(', ')})`);
        ok = false;
      } else {
        size = DTYPE_SIZE[dtype];
        if (!SUPPORTED.includes(dtype)) {
          problems.push(`${t} has dtype ${dtype}, which cannot be loaded as float32 (supported: ${SUPPORTED.join(', ')})`);
          // Keep checking its offsets: its bytes still take part in the layout.
        }
      }
    }
    if (hasOwn(raw, 'shape')) {
      if (!checkShapeInto(t, shape, problems)) ok = false;
    }
    let begin = 0, end = 0;
    if (hasOwn(raw, 'data_offsets')) {
      if (!Array.isArray(offsets) || offsets.length !== 2 || !isNonNegInt(offsets[0]) || !isNonNegInt(offsets[1])) {
        problems.push(`${t}: data_offsets must be [begin, end] with non-negative integers, got ` +
          (Array.isArray(offsets) ? `[${offsets.map((o) => describe(o)).join(', ')}]` : describe(offsets)));
        ok = false;
      } else if (offsets[0] > offsets[1]) {
        problems.push(`${t}: data_offsets [${offsets[0]}, ${offsets[1]}] are reversed: begin must be <= end`);
        ok = false;
      } else {
        [begin, end] = offsets as [number, number];
        if (end > dataLen) {
          problems.push(`truncated: ${t} needs bytes [${begin}, ${end}) but the data section has only ${dataLen} bytes`);
          ok = false;
        }
      }
    }
    if (ok && size > 0) {
      const dims = shape as number[];
      const n = numel(dims);
      const need = n * size;
      if (!Number.isSafeInteger(need) || need !== end - begin) {
        problems.push(`header lies: ${t} has shape ${fmtShape(dims)} and dtype ${dtype}, which needs ` +
          `${Number.isSafeInteger(need) ? need : 'more than 2^53'} bytes, but data_offsets [${begin}, ${end}] span ${end - begin} bytes`);
        ok = false;
      }
    }
    if (ok) entries.push({ name, dtype: dtype as string, shape: (shape as number[]).slice(), begin, end });
  }

  // Overlap: among the well-formed, non-empty ranges.
  const ranges = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  let reach: Entry | undefined; // the range seen so far that ends furthest
  for (const e of ranges) {
    if (reach && e.begin < reach.end) {
      problems.push(`tensors ${q(reach.name)} [${reach.begin}, ${reach.end}) and ${q(e.name)} [${e.begin}, ${e.end}) overlap`);
    }
    if (!reach || e.end > reach.end) reach = e;
  }

  if (problems.length > 0) bail();

  // Decode.
  const tensors = new Map<string, HostTensor>();
  for (const e of entries) {
    tensors.set(e.name, { dtype: 'float32', shape: e.shape, data: decode(bytes, view, dataStart + e.begin, numel(e.shape), e.dtype) });
  }
  return { tensors, metadata };
}

function decode(bytes: Uint8Array, view: DataView, at: number, n: number, dtype: string): Float32Array {
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

// ---------------------------------------------------------------------------------------------
// Writing

function compareUtf8(a: string, b: string): number {
  // Sort by UTF-8 bytes (as the reference implementation's Rust strings do), not UTF-16 code units.
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Encodes float32 tensors as a safetensors file (names sorted, data 8-byte aligned, little-endian). */
export function encodeSafetensors(tensors: TensorsToWrite, metadata?: Record<string, string>): Uint8Array {
  return encodeImpl(tensors, metadata, 'encodeSafetensors');
}

function encodeImpl(tensors: TensorsToWrite, metadata: Record<string, string> | undefined, fn: string): Uint8Array {
  let items: [string, unknown][];
  if (tensors instanceof Map) items = Array.from(tensors.entries()) as [string, unknown][];
  else if (isPlainObject(tensors)) items = Object.entries(tensors);
  else fail(`${fn}: tensors must be a Map or an object mapping names to {shape, data}, got ${describe(tensors)}`);

  const problems: string[] = [];
  if (metadata !== undefined && metadata !== null) {
    if (!isPlainObject(metadata)) problems.push(`metadata must be an object mapping strings to strings, got ${describe(metadata)}`);
    else {
      for (const [k, v] of Object.entries(metadata)) {
        if (typeof v !== 'string') problems.push(`metadata[${q(k)}] must be a string, got ${describe(v)}`);
      }
    }
  }
  const good: { name: string; shape: number[]; data: Float32Array }[] = [];
  for (const [name, value] of items) {
    if (typeof name !== 'string' || name === '') {
      problems.push(`tensor names must be non-empty strings, got ${describe(name)}`);
      continue;
    }
    const t = `tensor ${q(name)}`;
    if (name === METADATA_KEY) {
      problems.push(`${t}: the name ${METADATA_KEY} is reserved for the metadata`);
      continue;
    }
    if (!isPlainObject(value)) {
      problems.push(`${t} must be an object {shape, data}, got ${describe(value)}`);
      continue;
    }
    const { shape, data } = value as { shape?: unknown; data?: unknown };
    let ok = true;
    if (!checkShapeInto(t, shape, problems)) ok = false;
    if (!(data instanceof Float32Array)) {
      problems.push(`${t}: data must be a Float32Array, got ${describe(data)}`);
      ok = false;
    }
    if (!ok) continue;
    const dims = (shape as number[]).slice();
    const arr = data as Float32Array;
    const n = numel(dims);
    if (n !== arr.length) {
      problems.push(`${t}: shape ${fmtShape(dims)} has ${n} elements, but data has ${arr.length}`);
      continue;
    }
    good.push({ name, shape: dims, data: arr });
  }
  if (problems.length > 0) throw problemsError(`${fn}: cannot encode the tensors (${problems.length} problem(s)):`, problems);

  good.sort((a, b) => compareUtf8(a.name, b.name));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header[METADATA_KEY] = { ...metadata };
  let offset = 0;
  for (const t of good) {
    const end = offset + 4 * t.data.length;
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, end] };
    offset = end;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad > 0) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);

  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const t of good) {
    if (LITTLE_ENDIAN_HOST) {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    } else {
      const bits = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
      for (let i = 0; i < bits.length; i++) view.setUint32(at + 4 * i, bits[i], true);
    }
    at += t.data.byteLength;
  }
  return out;
}

/**
 * Writes float32 tensors to a safetensors file atomically: the bytes go to a temporary file in the
 * same folder, which is then renamed over `file`. Invalid input throws before anything is written,
 * and a failed write removes the temporary file, so no partial file is ever left behind.
 */
export async function writeSafetensors(file: string, tensors: TensorsToWrite, metadata?: Record<string, string>): Promise<void> {
  const fn = 'writeSafetensors';
  if (typeof file !== 'string' || file === '') fail(`${fn}: path must be a non-empty string, got ${describe(file)}`);
  const bytes = encodeImpl(tensors, metadata, fn);
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(tmp, 'wx');
    await handle.writeFile(bytes);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fsp.rename(tmp, file);
  } catch (e) {
    if (handle) await handle.close().catch(() => undefined);
    await fsp.unlink(tmp).catch(() => undefined);
    const err = e as { message?: string };
    throw new SppnetError(`${fn}: cannot write ${file}: ${err?.message ?? String(e)}`, 'SPPNET_INVALID_ARGUMENT');
  }
}

// ---------------------------------------------------------------------------------------------
// State dicts

/**
 * Checks a loaded state dict against the names and shapes a model expects. Throws one SppnetError
 * whose first line is `what` and which lists every missing, unexpected and wrong-shaped tensor.
 */
export function checkStateDict(
  expected: Map<string, ExpectedTensor> | Record<string, ExpectedTensor>,
  got: Map<string, HostTensor>,
  what: string,
): void {
  const fn = 'checkStateDict';
  if (typeof what !== 'string') fail(`${fn}: what must be a string, got ${describe(what)}`);
  let exp: [string, ExpectedTensor][];
  if (expected instanceof Map) exp = Array.from(expected.entries());
  else if (isPlainObject(expected)) exp = Object.entries(expected) as [string, ExpectedTensor][];
  else fail(`${fn}: expected must be a Map or an object mapping names to {shape}, got ${describe(expected)}`);
  if (!(got instanceof Map)) fail(`${fn}: got must be a Map of tensors, got ${describe(got)}`);
  for (const [name, e] of exp) {
    if (!isPlainObject(e) || !Array.isArray(e.shape) || !e.shape.every(isNonNegInt))
      fail(`${fn}: expected[${q(name)}] must be {shape: non-negative integers}, got ${describe(e)}`);
  }

  const missing: string[] = [];
  const wrong: string[] = [];
  const expNames = new Set<string>();
  for (const [name, e] of exp) {
    expNames.add(name);
    const g = got.get(name);
    if (g === undefined) {
      missing.push(`missing tensor ${q(name)} (expected shape ${fmtShape(e.shape)})`);
      continue;
    }
    const gs = Array.isArray(g?.shape) ? g.shape : [];
    if (gs.length !== e.shape.length || gs.some((d, i) => d !== e.shape[i]))
      wrong.push(`tensor ${q(name)} has shape ${fmtShape(gs)}, expected ${fmtShape(e.shape)}`);
  }
  const unexpected: string[] = [];
  const unexpectedNames: string[] = [];
  for (const [name, g] of got) {
    if (expNames.has(name)) continue;
    unexpectedNames.push(name);
    unexpected.push(`unexpected tensor ${q(name)} (shape ${fmtShape(Array.isArray(g?.shape) ? g.shape : [])})`);
  }
  if (missing.length + unexpected.length + wrong.length === 0) return;

  const counts = [
    missing.length ? `${missing.length} missing` : '',
    unexpected.length ? `${unexpected.length} unexpected` : '',
    wrong.length ? `${wrong.length} with the wrong shape` : '',
  ].filter(Boolean).join(', ');
  const lines = [...missing, ...unexpected, ...wrong];
  // A common cause: the weights were saved from a wrapped model (nn.DataParallel adds "module.").
  const missingNames = new Set(exp.map(([n]) => n).filter((n) => !got.has(n)));
  if (unexpectedNames.length > 0 && unexpectedNames.some((n) => n.startsWith('module.') && missingNames.has(n.slice(7))))
    lines.push('hint: some names carry a "module." prefix; the weights were probably saved from nn.DataParallel, strip the prefix');
  throw problemsError(`${what} (${counts}):`, lines);
}
