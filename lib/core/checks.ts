// The argument checks every op shares, once each: options objects, integers and pairs, booleans
// and numbers in a range, the device rule, tensors shaped like another, output tensors given by
// the caller (`out`), and "free what the op allocated if the native call fails".
import { Device } from './backend';
import { CallSite, describe, fail, isPositiveInt, MAX_ELEMENTS, SppnetError } from './errors';
import { RaggedBatch } from './ragged';
import { allocateLike, ChannelSlice, Spatial, spatialLayout, SpatialLayout } from './spatial';
import { allocate, Storage, Tensor } from './tensor';

export const MAX_INT32 = 2 ** 31 - 1;

export type Pair = number | [number, number];

/** The options argument of a call: {} when undefined, else it must be an object. */
export function checkOpts(fn: string, opts: unknown): Record<string, unknown> {
  if (opts === undefined) return {};
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  return opts as Record<string, unknown>;
}

/**
 * An integer in [min, max] or a pair [h, w] of them (the native side takes 32-bit integers),
 * `dflt` when undefined; `path` names it for messages ('options.stride').
 */
export function pair(fn: string, path: string, v: unknown, dflt: [number, number], min: number, max = MAX_INT32): [number, number] {
  if (v === undefined) return dflt;
  const p = typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(p) || p.length !== 2 || !p.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max))
    fail(`${fn}: ${path} must be an integer >= ${min} and <= ${max}, or a pair [h, w] of them, got ${describe(v)}`);
  return [p[0], p[1]];
}

/** A pair as given in a spec (checked already): [v, v] for a number, `d` for undefined. */
export const pairOf = (v: Pair | undefined, d: number): [number, number] => (v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : v);

/** options[name] as a boolean, `dflt` when undefined. */
export function booleanOption(fn: string, o: Record<string, unknown>, name: string, dflt: boolean): boolean {
  const v = o[name];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') fail(`${fn}: options.${name} must be a boolean, got ${describe(v)}`);
  return v;
}

/** options[name] as a finite number that `check` accepts (`range` says which), `dflt` when undefined (required when dflt is). */
export function numberOption(fn: string, o: Record<string, unknown>, name: string, dflt: number | undefined, check: (v: number) => boolean, range: string): number {
  const v = o[name] === undefined ? dflt : o[name];
  if (v === undefined) fail(`${fn}: options.${name} is required (${range})`);
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) fail(`${fn}: options.${name} must be ${range}, got ${describe(v)}`);
  return v;
}

/** The device rule: `name` must be on `device`, where `refName` is. */
export function sameDevice(fn: string, name: string, actual: Device, refName: string, device: Device): void {
  if (actual !== device) throw new SppnetError(`${fn}: ${name} is on ${actual}, ${refName} on ${device}`, 'SPPNET_DEVICE_MISMATCH');
}

/** A [rows, cols] tensor argument and its storage. */
export function matrix(fn: string, x: unknown, name: string): { t: Tensor; s: Storage } {
  if (!(x instanceof Tensor)) fail(`${fn}: ${name} must be a Tensor, got ${describe(x)}`);
  const s = x.storage(fn, name);
  if (x.rank !== 2) fail(`${fn}: ${name} must have rank 2, got shape [${x.shape.join(', ')}]`);
  return { t: x, s };
}

/** An optional bias [n] on `device`, where `refName` is; its storage. */
export function checkBias(fn: string, bias: unknown, n: number, refName: string, device: Device): Storage | undefined {
  if (bias === undefined || bias === null) return undefined;
  if (!(bias instanceof Tensor)) fail(`${fn}: bias must be a Tensor [${n}] or null, got ${describe(bias)}`);
  const s = bias.storage(fn, 'bias');
  if (bias.rank !== 1 || bias.shape[0] !== n) fail(`${fn}: bias must have shape [${n}], got [${bias.shape.join(', ')}]`);
  sameDevice(fn, 'bias', s.device, refName, device);
  return s;
}

/** Every map's output size is at least 1x1 (else `what(i)` says why) and they fit in a tensor. */
export function checkOutputSizes(fn: string, sizes: Array<readonly [number, number]>, channels: number, what: (i: number) => string): void {
  let total = 0;
  sizes.forEach(([h, w], i) => {
    if (h < 1 || w < 1) fail(`${fn}: ${what(i)}`);
    total += channels * h * w;
  });
  if (total > MAX_ELEMENTS) fail(`${fn}: the output would hold ${total} elements, more than the 2^31-1 a tensor may hold`);
}

const AXES4 = ['N', 'C', 'H', 'W'];
const AXES3 = ['C', 'H', 'W'];

/** A tensor argument with `ref`'s shape and device; its storage. */
export function checkTensorLike(fn: string, name: string, t: unknown, ref: Tensor, refName: string): Storage {
  if (!(t instanceof Tensor)) fail(`${fn}: ${name} must be a Tensor [${ref.shape.join(', ')}] like ${refName}, got ${describe(t)}`);
  const s = t.storage(fn, name);
  if (t.rank !== ref.rank) fail(`${fn}: ${name} must have ${refName}'s shape [${ref.shape.join(', ')}], got [${t.shape.join(', ')}]`);
  t.shape.forEach((d, i) => {
    if (d !== ref.shape[i]) fail(`${fn}: ${name} axis ${i} is ${d}, expected ${ref.shape[i]} (${refName} has shape [${ref.shape.join(', ')}])`);
  });
  sameDevice(fn, name, t.device, refName, ref.device);
  return s;
}

/**
 * `g` has exactly the layout `channels` x `sizes` in the kind of `L` (a gradient of a forward
 * output, or a tensor like the input), on L's device; its storage.
 */
export function checkSpatialLike(fn: string, name: string, L: SpatialLayout, g: unknown, channels: number,
                                 sizes: Array<readonly [number, number]>, what: string): Storage {
  if (L.kind === 'ragged') {
    if (!(g instanceof RaggedBatch))
      fail(`${fn}: ${name} must be a RaggedBatch (${what}: ${sizes.length} maps of ${channels} channels), got ${g instanceof Tensor ? String(g) : describe(g)}`);
    const s = g.storage(fn, name);
    if (g.count !== sizes.length) fail(`${fn}: ${name} has ${g.count} maps, expected ${sizes.length} (${what})`);
    if (g.channels !== channels) fail(`${fn}: ${name} has ${g.channels} channels, expected ${channels} (${what})`);
    g.sizes.forEach(([h, w], i) => {
      const [eh, ew] = sizes[i];
      if (h !== eh) fail(`${fn}: ${name} map ${i} axis H is ${h}, expected ${eh} (${what} is ${eh}x${ew}, HxW)`);
      if (w !== ew) fail(`${fn}: ${name} map ${i} axis W is ${w}, expected ${ew} (${what} is ${eh}x${ew}, HxW)`);
    });
    sameDevice(fn, name, s.device, 'the input', L.device);
    return s;
  }
  const shape = L.kind === 'dense' ? [sizes.length, channels, ...(sizes[0] ?? [0, 0])] : [channels, ...sizes[0]];
  const axes = L.kind === 'dense' ? AXES4 : AXES3;
  if (!(g instanceof Tensor)) fail(`${fn}: ${name} must be a Tensor [${shape.join(', ')}] (${what}), got ${g instanceof RaggedBatch ? String(g) : describe(g)}`);
  const s = g.storage(fn, name);
  if (g.rank !== shape.length) fail(`${fn}: ${name} must have rank ${shape.length} [${shape.join(', ')}] (${what}), got shape [${g.shape.join(', ')}]`);
  g.shape.forEach((d, i) => {
    // An empty dense batch has no map sizes to hold to: any H and W (the forward makes them 0).
    if (d !== shape[i] && !(sizes.length === 0 && i >= 2))
      fail(`${fn}: ${name} axis ${i} (${axes[i]}) is ${d}, expected ${shape[i]}: ${what} has shape [${shape.join(', ')}]`);
  });
  sameDevice(fn, name, s.device, 'the input', L.device);
  return s;
}

/** An elementwise operand: a Tensor or a RaggedBatch with exactly `ref`'s layout. */
export function checkElementwiseLike(fn: string, name: string, t: unknown, ref: Tensor | RaggedBatch, refName: string): Storage {
  if (ref instanceof Tensor) return checkTensorLike(fn, name, t, ref, refName);
  return checkSpatialLike(fn, name, spatialLayout(fn, ref, refName), t, ref.channels, [...ref.sizes], `the layout of ${refName}`);
}

/** The first operand of an elementwise op: its storage and element count. */
export function elementwiseInput(fn: string, name: string, x: unknown): { store: Storage; n: number; x: Tensor | RaggedBatch } {
  if (x instanceof RaggedBatch) return { store: x.storage(fn, name), n: x.total, x };
  if (x instanceof Tensor) return { store: x.storage(fn, name), n: x.size, x };
  return fail(`${fn}: ${name} must be a Tensor or a RaggedBatch, got ${describe(x)}`);
}

/** A new tensor or batch with the layout of `x` (dense inputs keep their shape, N = 0 included). */
export function allocateAs<T extends Tensor | RaggedBatch>(x: T, fn: string): T {
  if (x instanceof RaggedBatch) return allocateLike('ragged', x.device, x.channels, [...x.sizes], fn) as T;
  return allocate((x as Tensor).shape, x.device, fn) as T;
}

/** An op's output: `given` (its `out` option) or a new one; `owned` when the op made it. */
export interface Output<T> {
  out: T;
  owned: boolean;
}

/**
 * The output tensor of shape `shape` on `device`: `given` (checked) or a new one; `writesAll`: the
 * op writes every element (its tests check it into a poisoned output), so host memory reused from
 * the addon's cache need not be zeroed first.
 */
export function tensorOut(fn: string, given: unknown, shape: readonly number[], device: Device, writesAll = false): Output<Tensor> {
  if (given === undefined) return { out: allocate(shape, device, fn, writesAll), owned: true };
  if (!(given instanceof Tensor)) fail(`${fn}: options.out must be a Tensor [${shape.join(', ')}], got ${given instanceof RaggedBatch ? String(given) : describe(given)}`);
  given.storage(fn, 'options.out');
  if (given.rank !== shape.length || given.shape.some((d, i) => d !== shape[i]))
    fail(`${fn}: options.out must have shape [${shape.join(', ')}], got [${given.shape.join(', ')}]`);
  sameDevice(fn, 'options.out', given.device, 'the input', device);
  return { out: given, owned: false };
}

/**
 * The output of a spatial op: `given` (an `out` option), checked to have exactly the layout the
 * op will write, or a new one of the input's kind.
 */
export function outputFor(fn: string, given: unknown, kind: SpatialLayout['kind'], device: Device, channels: number,
                          sizes: Array<readonly [number, number]>): Output<Spatial>;
/** The same, where the op also writes into a ChannelSlice (Model.run's in-place concat; internal). */
export function outputFor(fn: string, given: unknown, kind: SpatialLayout['kind'], device: Device, channels: number,
                          sizes: Array<readonly [number, number]>, slices: true): Output<Spatial | ChannelSlice>;
export function outputFor(fn: string, given: unknown, kind: SpatialLayout['kind'], device: Device, channels: number,
                          sizes: Array<readonly [number, number]>, slices?: true): Output<Spatial | ChannelSlice> {
  if (slices && given instanceof ChannelSlice) {
    if (given.kind !== kind || given.device !== device || given.channels !== channels || given.sizes.length !== sizes.length ||
        given.sizes.some((s, i) => s[0] !== sizes[i][0] || s[1] !== sizes[i][1]))
      fail(`internal: ${fn} into a channel slice of another layout`);
    return { out: given, owned: false };
  }
  if (kind !== 'ragged') return tensorOut(fn, given, kind === 'dense' ? [sizes.length, channels, ...(sizes[0] ?? [0, 0])] : [channels, ...sizes[0]], device);
  if (given === undefined) return { out: allocateLike(kind, device, channels, sizes, fn), owned: true };
  if (!(given instanceof RaggedBatch && given.channels === channels && given.count === sizes.length &&
      given.sizes.every((s, i) => s[0] === sizes[i][0] && s[1] === sizes[i][1])))
    fail(`${fn}: options.out must be a RaggedBatch of ${sizes.length} maps with ${channels} channels and sizes ${sizes.map(([h, w]) => `${h}x${w}`).join(', ')}, ` +
      `got ${given instanceof RaggedBatch || given instanceof Tensor ? String(given) : describe(given)}`);
  given.storage(fn, 'options.out');
  sameDevice(fn, 'options.out', given.device, 'the input', device);
  return { out: given, owned: false };
}

/** The output of an elementwise op: `given` with exactly the layout of `x`, or a new one. */
export function outputLike<T extends Tensor | RaggedBatch>(fn: string, given: unknown, x: T): Output<T> {
  if (x instanceof RaggedBatch) return outputFor(fn, given, 'ragged', x.device, x.channels, [...x.sizes]) as Output<T>;
  return tensorOut(fn, given, (x as Tensor).shape, x.device) as Output<T>;
}

/**
 * Whether elements [0, an) of storage a and [0, bn) of b share memory (an op must not write where
 * it reads). Views of one allocation that do not overlap do not (a model's activations are views
 * of one arena).
 */
export function sharesMemory(a: Storage, an: number, b: Storage, bn: number): boolean {
  if (an <= 0 || bn <= 0) return false;
  if (a.device === 'cpu') {
    if (b.device !== 'cpu' || a.array.buffer !== b.array.buffer) return false;
    const a0 = a.array.byteOffset, b0 = b.array.byteOffset;
    return a0 < b0 + 4 * bn && b0 < a0 + 4 * an;
  }
  return b.device === 'cuda' && a.buffer === b.buffer && a.offset < b.offset + bn && b.offset < a.offset + an;
}

type Disposable = { dispose(): void };

/**
 * Runs an op's native call with the caller's stack on failure; on failure frees what the op
 * allocated for its results (`owned`) before rethrowing.
 */
export async function settle(site: CallSite, fn: string, owned: ReadonlyArray<Disposable | Output<Disposable>>, call: () => Promise<void>): Promise<void> {
  try {
    await site.run(fn, call);
  } catch (e) {
    for (const o of owned) {
      if ('owned' in o) {
        if (o.owned) o.out.dispose();
      } else o.dispose();
    }
    throw e;
  }
}

/** A positive integer no larger than a 32-bit int (`prefix.name`); for spec fields and options. */
export function positiveInt32(fn: string, prefix: string, name: string, v: unknown): number {
  if (!isPositiveInt(v)) fail(`${fn}: ${prefix}.${name} must be a positive integer, got ${describe(v)}`);
  if (v > MAX_INT32) fail(`${fn}: ${prefix}.${name} must be at most 2^31-1, got ${v}`);
  return v;
}

/**
 * Integer class labels, one per row, each in [0, classes), as an Int32Array. `against` words the
 * messages for what the labels go with: a loss's logits, or a training step's images.
 */
export function checkLabels(fn: string, labels: unknown, rows: number, classes: number, against: 'logits' | 'images' | 'rows'): Int32Array {
  const logits = against === 'logits';
  if (!(labels instanceof Int32Array) && !Array.isArray(labels) && !ArrayBuffer.isView(labels))
    fail(`${fn}: labels must be ${logits ? 'an Int32Array or an array of integers' : 'an array of class indices'}, got ${describe(labels)}`);
  const arr = labels as ArrayLike<number>;
  if (arr.length !== rows) fail(logits ? `${fn}: labels has ${arr.length} values, but logits axis 0 (rows) is ${rows}` : `${fn}: labels has ${arr.length} entries for ${rows} ${against}`);
  const out = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    const v = arr[i];
    if (typeof v !== 'number' || !Number.isInteger(v)) {
      if (logits) fail(`${fn}: labels[${i}] must be an integer, got ${describe(v)}`);
      fail(`${fn}: labels[${i}] is ${typeof v === 'number' ? v : describe(v)}, outside the classes [0, ${classes})`);
    }
    if (v < 0 || v >= classes)
      fail(logits ? `${fn}: labels[${i}] = ${v} is out of range: logits axis 1 has ${classes} classes, so labels must be in [0, ${classes})` : `${fn}: labels[${i}] is ${v}, outside the classes [0, ${classes})`);
    out[i] = v;
  }
  return out;
}
