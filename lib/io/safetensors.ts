// Reading safetensors files (the Hugging Face format; writing: lib/io/safetensors-write.ts):
//
//   [8 bytes: little-endian u64 N] [N bytes: UTF-8 JSON header] [data buffer]
//
// The header maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} with the offsets
// relative to the start of the data buffer, plus an optional "__metadata__": {string: string}.
// sppnet loads every tensor as float32: F32, F16, BF16 and F64 are converted (F16 and BF16 exactly,
// F64 rounded to nearest); integer and boolean tensors are refused. Every problem found in a file is
// reported at once, in one SppnetError.
// This module reads, and re-exports the writer: one module to import.
import { promises as fsp } from 'fs';
import { describe, fail, SppnetError } from '../core/errors';
import { DTYPE_SIZE, HostTensor, MAX_HEADER_BYTES, METADATA_KEY, SUPPORTED, SafetensorsFile, checkShapeInto, decode, fmtShape, hasOwn, isNonNegInt, isPlainObject, numel, problemsError, q } from './safetensors-format';
export type { ExpectedTensor, HostTensor, SafetensorsFile, TensorsToWrite, TensorToWrite } from './safetensors-format';
export { checkStateDict, encodeSafetensors, writeSafetensors } from './safetensors-write';

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
