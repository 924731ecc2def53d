// Max pooling per map (PyTorch's max_pool2d, ceil mode included), its backward, and the fused
// LRN-then-pool of AlexNet and ZF-5 at inference.
import { allocateAs, checkOpts, checkOutputSizes, checkSpatialLike, MAX_INT32, outputFor, Pair, pair, settle } from '../core/checks';
import { CallSite, describe, fail } from '../core/errors';
import { argsOf, native, NativePoolArgs, NativePoolParams } from '../core/native';
import { callOp, OpSequence, sequenceOf } from '../core/sequence';
import { nativeLayout, Spatial, spatialLayout, SpatialLayout } from '../core/spatial';
import { nativeBuf } from '../core/tensor';
import { LrnOptions, lrnParams } from './lrn';

/** Output side of max pooling along one axis (PyTorch's formula, ceil mode included). */
export function poolOutSide(a: number, k: number, s: number, p: number, ceil: boolean): number {
  const span = a + 2 * p - k;
  let n = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  if (ceil && (n - 1) * s >= a + p) n -= 1; // the last window must start inside the map or its left padding
  return n;
}

export interface MaxPool2dOptions {
  kernel: Pair;
  /** Default: the kernel size. */
  stride?: Pair;
  padding?: Pair;
  ceilMode?: boolean;
  out?: Spatial;
  /** @internal Record the native call into this sequence instead of making it (Model.run). */
  sequence?: OpSequence;
}

/**
 * @internal Checked max-pooling window: kernel (required), stride (default: the kernel), padding
 * (at most half the kernel), ceilMode; `prefix` names where the options sit, for messages.
 * `max` bounds kernel, stride and padding.
 */
export function poolWindow(fn: string, o: Record<string, unknown>, prefix = 'options', max = MAX_INT32) {
  if (o.kernel === undefined) fail(`${fn}: ${prefix}.kernel is required`);
  const [kh, kw] = pair(fn, `${prefix}.kernel`, o.kernel, [1, 1], 1, max);
  const [sh, sw] = pair(fn, `${prefix}.stride`, o.stride, [kh, kw], 1, max);
  const [ph, pw] = pair(fn, `${prefix}.padding`, o.padding, [0, 0], 0, max);
  if (ph * 2 > kh || pw * 2 > kw) fail(`${fn}: ${prefix}.padding ${ph}x${pw} must be at most half the kernel ${kh}x${kw}`);
  if (o.ceilMode !== undefined && typeof o.ceilMode !== 'boolean') fail(`${fn}: ${prefix}.ceilMode must be a boolean, got ${describe(o.ceilMode)}`);
  return { kh, kw, sh, sw, ph, pw, ceil: o.ceilMode === true };
}

/** Checked pooling geometry: kernel, stride, padding and each map's output size. */
function poolGeometry(fn: string, L: SpatialLayout, o: Record<string, unknown>, prefix = 'options') {
  const { kh, kw, sh, sw, ph, pw, ceil } = poolWindow(fn, o, prefix);
  const outSizes = L.sizes.map(([h, w]) => [poolOutSide(h, kh, sh, ph, ceil), poolOutSide(w, kw, sw, pw, ceil)] as const);
  checkOutputSizes(fn, outSizes, L.channels, (i) =>
    `map ${i} of size ${L.sizes[i][0]}x${L.sizes[i][1]} (HxW) is too small for kernel ${kh}x${kw} with padding ${ph}x${pw}: the output would be ${outSizes[i][0]}x${outSizes[i][1]}`);
  const pool: NativePoolParams = { kernelH: kh, kernelW: kw, strideH: sh, strideW: sw, padH: ph, padW: pw };
  return { outSizes, pool };
}

/** Runs a pooling-shaped native call (the input's channels, each map to outSizes) into `given` or a new output. */
async function pooled(site: CallSite, fn: string, L: SpatialLayout, given: unknown, outSizes: Array<readonly [number, number]>,
  call: (args: Omit<NativePoolArgs, 'pool'>) => Promise<void>): Promise<Spatial> {
  const o2 = outputFor(fn, given, L.kind, L.device, L.channels, outSizes);
  await settle(site, fn, [o2], () =>
    call(argsOf(
      nativeBuf('input', L.store), nativeBuf('output', o2.out.storage(fn, 'the output')),
      nativeLayout('in', L.channels, L.sizes, L.offsets), nativeLayout('out', L.channels, outSizes),
    )),
  );
  return o2.out;
}

/** PyTorch's max_pool2d per map (padding never wins; NaN propagates; ceil mode as PyTorch). */
export async function maxPool2d<T extends Spatial>(input: T, opts: MaxPool2dOptions): Promise<T> {
  const fn = 'sp.maxPool2d';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  const { outSizes, pool } = poolGeometry(fn, L, o);
  return (await pooled(site, fn, L, o.out, outSizes, (args) => callOp(sequenceOf(o), 'maxPool2d', argsOf(args, { pool })))) as T;
}

/**
 * Gradient of maxPool2d: each output's gradient goes to its window's argmax, chosen as PyTorch does
 * (the first maximum in row-major window order; a NaN wins, the last NaN when there are several);
 * overlapping windows add up. ceilMode and padding as in maxPool2d.
 */
export async function maxPool2dBackward<T extends Spatial>(input: T, gradOutput: T, opts: MaxPool2dOptions): Promise<T> {
  const fn = 'sp.maxPool2dBackward';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  const { outSizes, pool } = poolGeometry(fn, L, o);
  const gs = checkSpatialLike(fn, 'gradOutput', L, gradOutput, L.channels, outSizes, 'the forward output');
  const out = allocateAs(input, fn);
  await settle(site, fn, [out], () =>
    native.maxPool2dBackward({
      ...nativeBuf('input', L.store), ...nativeBuf('gradOutput', gs), ...nativeBuf('gradInput', out.storage(fn, 'gradInput')),
      ...nativeLayout('in', L.channels, L.sizes, L.offsets), ...nativeLayout('out', L.channels, outSizes),
      pool,
    }),
  );
  return out;
}

export interface LrnMaxPool2dOptions {
  /** The localResponseNorm options (no `out`: the LRN map is never materialised). */
  lrn: Omit<LrnOptions, 'out'>;
  /** The maxPool2d options (no `out`: pass it here, at the top level). */
  pool: Omit<MaxPool2dOptions, 'out'>;
  out?: Spatial;
  /** @internal Record the native call into this sequence instead of making it (Model.run). */
  sequence?: OpSequence;
}

/**
 * maxPool2d(localResponseNorm(input, lrn), pool) in one pass that never writes the LRN map: the
 * same values, bit for bit, as the two calls (AlexNet / ZF-5's norm-then-pool; Model.run uses it
 * for every LRN layer followed by a max pool). Inference only: training needs the LRN map.
 */
export async function lrnMaxPool2d<T extends Spatial>(input: T, opts: LrnMaxPool2dOptions): Promise<T> {
  const fn = 'sp.lrnMaxPool2d';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  for (const part of ['lrn', 'pool'] as const) {
    const v = o[part];
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(`${fn}: options.${part} must be an object of ${part === 'lrn' ? 'localResponseNorm' : 'maxPool2d'} options, got ${describe(v)}`);
    if ((v as Record<string, unknown>).out !== undefined) fail(`${fn}: options.${part}.out is not used: pass options.out`);
  }
  const lp = lrnParams(fn, o.lrn as Record<string, unknown>, 'options.lrn');
  if (lp.within) fail(`${fn}: options.lrn.region 'within' is not fused: run sp.localResponseNorm, then sp.maxPool2d`);
  const { outSizes, pool } = poolGeometry(fn, L, o.pool as Record<string, unknown>, 'options.pool');
  return (await pooled(site, fn, L, o.out, outSizes, (args) => callOp(sequenceOf(o), 'lrnMaxPool2d', argsOf(args, { pool }, lp)))) as T;
}
