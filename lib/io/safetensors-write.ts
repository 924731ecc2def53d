// Writing safetensors files (names sorted, data 8-byte aligned, little-endian float32; atomic
// writes), and checking a state_dict against the tensors a model expects.
import { promises as fsp } from 'fs';
import * as path from 'path';
import { randomBytes } from 'crypto';
import { describe, fail, SppnetError } from '../core/errors';
import { ExpectedTensor, HostTensor, LITTLE_ENDIAN_HOST, METADATA_KEY, TensorsToWrite, checkShapeInto, fmtShape, isNonNegInt, isPlainObject, numel, problemsError, q } from './safetensors-format';

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
