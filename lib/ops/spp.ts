// Spatial pyramid pooling over ragged batches, dense batches and detection windows.
import { allocateAs, Output, sameDevice, settle, tensorOut } from '../core/checks';
import { CallSite, describe, fail, MAX_ELEMENTS } from '../core/errors';
import { argsOf, native } from '../core/native';
import { callOp, OpSequence, sequenceOf } from '../core/sequence';
import { RaggedBatch } from '../core/ragged';
import { spatialLayout } from '../core/spatial';
import { nativeBuf, nativeRef, Storage, Tensor } from '../core/tensor';

export type BinRule = 'adaptive' | 'paper' | 'caffe';
export type PoolKind = 'max' | 'avg';

export interface SppOptions {
  /** Pyramid levels: level n pools each map into n x n bins. Default [6, 3, 2, 1]. */
  levels?: number[];
  /** Default 'max'. */
  pool?: PoolKind;
  /** How bins are laid out over a map; see the README. Default 'adaptive' (PyTorch's rule). */
  bins?: BinRule;
  /**
   * Detection windows [K, 5]: (map index, x0, y0, x1, y1) in map coordinates, inclusive
   * integers. Each window is pooled into the pyramid; the output has one row per window.
   */
  windows?: Tensor | ArrayLike<ArrayLike<number>>;
  /** Write the result here instead of a new tensor: [rows, features], on the input's device. */
  out?: Tensor;
  /** @internal Record the native call into this sequence instead of making it (Model.run). */
  sequence?: OpSequence;
}

export interface SppBackwardOptions extends Omit<SppOptions, 'out' | 'sequence'> {
  /** Write d(input) here: a tensor of the input's shape, or a batch of the input's layout. */
  out?: Tensor | RaggedBatch;
}

export const DEFAULT_LEVELS: readonly number[] = Object.freeze([6, 3, 2, 1]);
// The C++ enums' values, from the addon (include/sppnet/spp.h, bins.h).
const { binRule: RULES, poolKind: POOLS, binCheck: CHECK } = native.enums;
/** Most levels one pyramid may have (the kernels' limit). */
export const MAX_LEVELS: number = native.enums.maxLevels;

/** Output features per map or window: channels * sum(n * n). */
export function sppFeatures(channels: number, levels: readonly number[] = DEFAULT_LEVELS): number {
  return channels * levels.reduce((a, n) => a + n * n, 0);
}

interface Plan {
  store: Storage;
  channels: number;
  sizes: Array<readonly [number, number]>;
  offsets: number[];
  total: number;
  regions: Int32Array;
  rows: number;
  levels: number[];
  rule: number;
  pool: number;
  features: number;
}

function checkLevels(fn: string, levels: unknown, path: string): number[] {
  if (levels === undefined) return [...DEFAULT_LEVELS];
  if (!Array.isArray(levels)) fail(`${fn}: ${path} must be an array of positive integers, got ${describe(levels)}`);
  if (levels.length === 0) fail(`${fn}: ${path} must name at least one level`);
  if (levels.length > MAX_LEVELS) fail(`${fn}: ${path} may name at most ${MAX_LEVELS} levels, got ${levels.length}`);
  levels.forEach((n, i) => {
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1)
      fail(`${fn}: ${path}[${i}] must be a positive integer, got ${describe(n)}`);
    if (n > 46340) fail(`${fn}: ${path}[${i}] = ${n} gives more than 2^31-1 bins per channel`);
  });
  return [...levels];
}

function checkEnum<T extends string>(fn: string, path: string, v: unknown, allowed: Record<T, number>, dflt: T): number {
  if (v === undefined) return allowed[dflt];
  if (typeof v !== 'string' || !(v in allowed))
    fail(`${fn}: ${path} must be ${Object.keys(allowed).map((k) => `'${k}'`).join(', ')}, got ${describe(v)}`);
  return allowed[v as T];
}

/**
 * @internal The checked pyramid of an spp call or a model's spp layer: levels, bin rule and pool
 * kind (codes), from options under `prefix` (for messages).
 */
export function sppPyramid(fn: string, o: { levels?: unknown; bins?: unknown; pool?: unknown }, prefix = 'options') {
  return {
    levels: checkLevels(fn, o.levels, `${prefix}.levels`),
    rule: checkEnum<BinRule>(fn, `${prefix}.bins`, o.bins, RULES, 'adaptive'),
    pool: checkEnum<PoolKind>(fn, `${prefix}.pool`, o.pool, POOLS, 'max'),
  };
}

async function windowRows(fn: string, windows: Tensor): Promise<ArrayLike<number>[]> {
  if (windows.rank !== 2 || windows.shape[1] !== 5)
    fail(`${fn}: options.windows must have shape [K, 5] (map, x0, y0, x1, y1), got [${windows.shape.join(', ')}]`);
  windows.storage(fn, 'options.windows');
  const d = await windows.data();
  return Array.from({ length: windows.shape[0] }, (_, k) => d.subarray(5 * k, 5 * k + 5));
}

function windowList(fn: string, windows: unknown): ArrayLike<number>[] {
  if (!Array.isArray(windows) && !ArrayBuffer.isView(windows))
    fail(`${fn}: options.windows must be a Tensor [K, 5] or an array of [map, x0, y0, x1, y1], got ${describe(windows)}`);
  return Array.from(windows as ArrayLike<ArrayLike<number>>, (row, k) => {
    if (row == null || typeof row !== 'object' || (row as ArrayLike<number>).length !== 5)
      fail(`${fn}: options.windows[${k}] must be [map, x0, y0, x1, y1], got ${describe(row)}`);
    return row;
  });
}

const axisName = (a: number) => (a === 0 ? 'H' : 'W');

// native.binCheck's answers by (rule, level, length): the same few map sizes come back call after
// call, and an answer never changes (bounded: cleared when it grows past 4096 entries).
const binChecks = new Map<number, number>();
function binCheck(rule: number, n: number, a: number): number {
  const key = (rule * 65536 + n) * 2 ** 31 + a; // n <= 46340, a < 2^31: exact in a double
  let code = binChecks.get(key);
  if (code === undefined) {
    if (binChecks.size >= 4096) binChecks.clear();
    binChecks.set(key, (code = native.binCheck(rule, n, a)));
  }
  return code;
}

/** Whether every level bins an h x w region under the rule (no message: see checkBins). */
function binsOk(rule: number, levels: number[], h: number, w: number): boolean {
  for (let i = 0; i < levels.length; ++i)
    if (binCheck(rule, levels[i], h) !== CHECK.ok || binCheck(rule, levels[i], w) !== CHECK.ok) return false;
  return true;
}

function checkBins(fn: string, rule: number, ruleName: string, levels: number[], h: number, w: number, what: string) {
  for (const n of levels) {
    for (let axis = 0; axis < 2; ++axis) {
      const a = axis === 0 ? h : w;
      const code = binCheck(rule, n, a);
      if (code === CHECK.ok) continue;
      const size = `${h}x${w} (HxW)`;
      if (code === CHECK.zeroStride)
        fail(`${fn}: bins 'paper' need ${what} to be at least n along each axis for each level n: ${what} is ${size}, ` +
            `smaller than level ${n} along ${axisName(axis)} (stride floor(${a}/${n}) = 0). Use bins 'adaptive', or drop the level.`);
      if (code === CHECK.empty)
        fail(`${fn}: bins 'caffe' leave a bin of level ${n} empty on ${what} of size ${size} along ${axisName(axis)} ` +
            `(the bin lies wholly in Caffe's padding; its layer outputs -FLT_MAX there). Use bins 'adaptive' or 'paper'.`);
      if (code === CHECK.countMismatch)
        fail(`${fn}: bins 'caffe' cannot pool ${what} of size ${size} into level ${n} along ${axisName(axis)}: ` +
            `Caffe's pooling would not produce ${n} bins for length ${a} (its SPP layer fails there). Use bins 'adaptive' or 'paper'.`);
      fail(`${fn}: cannot pool ${what} of size ${size} into level ${n}`);
    }
  }
}

/** plan(), or a promise of it when the windows are a tensor (read from its device first). */
function planOf(fn: string, input: unknown, opts: SppOptions | SppBackwardOptions | undefined): Plan | Promise<Plan> {
  if (opts !== undefined && (typeof opts !== 'object' || opts === null)) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const o = opts ?? {};
  if (!(o.windows instanceof Tensor)) return plan(fn, input, o, undefined);
  // The checks in plan()'s order: the input, the pyramid, then the windows (read from their device).
  spatialLayout(fn, input);
  sppPyramid(fn, o);
  return windowRows(fn, o.windows).then((rows) => plan(fn, input, o, rows));
}

/** The checked plan; `read`: the rows of tensor windows, else o.windows (an array, or none) is read here. */
function plan(fn: string, input: unknown, o: SppOptions | SppBackwardOptions, read: ArrayLike<number>[] | undefined): Plan {
  const src = spatialLayout(fn, input);
  const { levels, rule, pool } = sppPyramid(fn, o);
  const ruleName = o.bins ?? 'adaptive';
  const windows = read ?? (o.windows === undefined ? undefined : windowList(fn, o.windows));
  let regions: Int32Array;
  if (windows === undefined) {
    regions = new Int32Array(5 * src.sizes.length);
    for (let i = 0; i < src.sizes.length; ++i) {
      const [h, w] = src.sizes[i];
      regions[5 * i] = i;
      regions[5 * i + 3] = h;
      regions[5 * i + 4] = w;
      checkBins(fn, rule, ruleName, levels, h, w, `map ${i}`);
    }
  } else {
    // Thousands of windows a call (a detector's proposals): no allocation per window, and each
    // message is built only when it is thrown.
    const rows = windows;
    const names = ['map', 'x0', 'y0', 'x1', 'y1'];
    const nmaps = src.sizes.length;
    regions = new Int32Array(5 * rows.length);
    let lastH = -1, lastW = -1; // the last window size whose bins were checked
    for (let k = 0; k < rows.length; ++k) {
      const r = rows[k];
      const m = r[0], x0 = r[1], y0 = r[2], x1 = r[3], y1 = r[4];
      if (!(Number.isInteger(m) && Number.isInteger(x0) && Number.isInteger(y0) && Number.isInteger(x1) && Number.isInteger(y1))) {
        for (let j = 0; j < 5; ++j)
          if (!Number.isInteger(r[j])) fail(`${fn}: options.windows[${k}].${names[j]} must be an integer, got ${describe(r[j])}`);
      }
      if (m < 0 || m >= nmaps) fail(`${fn}: options.windows[${k}] names map ${m}, but the input has ${nmaps} map(s)`);
      const size = src.sizes[m];
      const H = size[0], W = size[1];
      const where = () => `options.windows[${k}] = (map ${m}, x0 ${x0}, y0 ${y0}, x1 ${x1}, y1 ${y1})`;
      if (x1 < x0 || y1 < y0) fail(`${fn}: ${where()} is empty: need x0 <= x1 and y0 <= y1`);
      if (x0 < 0 || y0 < 0 || x1 >= W || y1 >= H)
        fail(`${fn}: ${where()} lies outside map ${m} of size ${H}x${W} (HxW): need 0 <= x0 <= x1 < ${W} and 0 <= y0 <= y1 < ${H}`);
      const h = y1 - y0 + 1, w = x1 - x0 + 1, o = 5 * k;
      regions[o] = m;
      regions[o + 1] = y0;
      regions[o + 2] = x0;
      regions[o + 3] = h;
      regions[o + 4] = w;
      if (h === lastH && w === lastW) continue;
      if (!binsOk(rule, levels, h, w)) checkBins(fn, rule, ruleName, levels, h, w, `window ${k}`);
      (lastH = h), (lastW = w);
    }
  }
  const rows = regions.length / 5;
  const features = sppFeatures(src.channels, levels);
  if (features > MAX_ELEMENTS || rows * features > MAX_ELEMENTS)
    fail(`${fn}: the output would be [${rows}, ${features}] = ${rows * features} elements, more than the 2^31-1 a tensor may hold`);
  return { ...src, regions, rows, levels, rule, pool, features };
}

function nativeArgs(p: Plan) {
  const n = p.sizes.length;
  const offsets = new Float64Array(n), heights = new Int32Array(n), widths = new Int32Array(n), levels = new Int32Array(p.levels.length);
  for (let i = 0; i < n; ++i) {
    offsets[i] = p.offsets[i];
    heights[i] = p.sizes[i][0];
    widths[i] = p.sizes[i][1];
  }
  for (let i = 0; i < levels.length; ++i) levels[i] = p.levels[i];
  const input = nativeRef(p.store);
  return { input: input.buf, inputOffset: input.offset, offsets, heights, widths, channels: p.channels, total: p.total, regions: p.regions, levels, rule: p.rule, pool: p.pool };
}

/**
 * Spatial pyramid pooling. Returns [N, C * sum(n*n)] for N maps (or [K, ...] for K windows),
 * level by level, channel-major within a level, bins row-major: the layout of
 * torch.cat([F.adaptive_max_pool2d(x, n).flatten(1) for n in levels], 1).
 */
export async function spp(input: RaggedBatch | Tensor, opts?: SppOptions): Promise<Tensor> {
  const fn = 'sp.spp';
  const site = new CallSite(opts);
  const pp = planOf(fn, input, opts);
  const p = pp instanceof Promise ? await pp : pp;
  // Every bin of every row written (test/spp.test.js: into a poisoned output, every path).
  const o2 = tensorOut(fn, opts?.out, [p.rows, p.features], p.store.device, true);
  const args = nativeArgs(p);
  const out = nativeRef(o2.out.storage(fn, 'options.out'));
  await settle(site, fn, [o2], () => callOp(sequenceOf((opts ?? {}) as Record<string, unknown>), 'sppForward', argsOf(args, { output: out.buf, outputOffset: out.offset })));
  return o2.out;
}

/**
 * Gradient of spp with respect to its input: d(input) from d(output) [rows, features].
 * Max pooling routes each bin's gradient to its first maximum in row-major order (a NaN counts as
 * the maximum); avg spreads it evenly over the bin. Overlapping bins and windows add up.
 * Returns a tensor of the input's shape, or a batch of the input's layout.
 */
export async function sppBackward<T extends RaggedBatch | Tensor>(input: T, gradOutput: Tensor, opts?: SppBackwardOptions): Promise<T> {
  const fn = 'sp.sppBackward';
  const site = new CallSite();
  const p = await planOf(fn, input, opts);
  if (!(gradOutput instanceof Tensor)) fail(`${fn}: gradOutput must be a Tensor [${p.rows}, ${p.features}], got ${describe(gradOutput)}`);
  const g = gradOutput.storage(fn, 'gradOutput');
  if (gradOutput.rank !== 2 || gradOutput.shape[0] !== p.rows || gradOutput.shape[1] !== p.features)
    fail(`${fn}: gradOutput must have shape [${p.rows}, ${p.features}] (rows, C * sum(n*n)), got [${gradOutput.shape.join(', ')}]`);
  sameDevice(fn, 'gradOutput', g.device, 'the input', p.store.device);
  const given = opts?.out;
  if (given !== undefined) {
    const same =
      input instanceof RaggedBatch
        ? given instanceof RaggedBatch && given.channels === input.channels && given.sizes.every((s, i) => s[0] === input.sizes[i][0] && s[1] === input.sizes[i][1]) && given.count === input.count
        : given instanceof Tensor && given.shape.length === input.shape.length && given.shape.every((d, i) => d === (input as Tensor).shape[i]);
    if (!same) fail(`${fn}: options.out must have the input's shape or layout`);
    sameDevice(fn, 'options.out', given.device, 'the input', p.store.device);
  }
  const o2: Output<T> = given !== undefined ? { out: given as T, owned: false } : { out: allocateAs(input, fn), owned: true };
  await settle(site, fn, [o2], () =>
    native.sppBackward({ ...nativeArgs(p), ...nativeBuf('output', o2.out.storage(fn, 'options.out')), ...nativeBuf('gradOutput', g) }));
  return o2.out;
}
