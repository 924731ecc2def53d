// Network layers on ragged batches and dense tensors. Each spatial op keeps every map's own size:
// output sizes follow PyTorch's formulas per map, and one native call covers the whole batch.
import { CallSite, describe, fail, isPositiveInt, MAX_ELEMENTS, SppnetError } from './errors';
import { native } from './native';
import { RaggedBatch } from './ragged';
import { nativeLayout, outputFor, Spatial, spatialLayout, SpatialLayout } from './spatial';
import { allocate, nativeRef, Storage, Tensor, tensor } from './tensor';
import { callMath, MATH_CODE, MATH_TOLERANCE, MathMode, registerTensorCoreProbe, tensorCoreCheck, TensorCoreCheck, worstError } from './math';
import { cudaUnavailableReason, tensorCoresPresent } from './backend';
import { ragged } from './ragged';

type Pair = number | [number, number];

/**
 * @internal An integer in [min, max] or a pair [h, w] of them (the native side takes 32-bit
 * integers), `dflt` when undefined; `path` names it for messages ('options.stride').
 */
export function pair(fn: string, path: string, v: unknown, dflt: [number, number], min: number, max = MAX_INT32): [number, number] {
  if (v === undefined) return dflt;
  const p = typeof v === 'number' ? [v, v] : v;
  if (!Array.isArray(p) || p.length !== 2 || !p.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max))
    fail(`${fn}: ${path} must be an integer >= ${min} and <= ${max}, or a pair [h, w] of them, got ${describe(v)}`);
  return [p[0], p[1]];
}

const MAX_INT32 = 2 ** 31 - 1;

/** @internal */
export function checkOpts(fn: string, opts: unknown): Record<string, unknown> {
  if (opts === undefined) return {};
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  return opts as Record<string, unknown>;
}

function sameDevice(fn: string, layout: SpatialLayout | { device: string }, t: Tensor, name: string) {
  if (t.device !== layout.device)
    throw new SppnetError(`${fn}: ${name} is on ${t.device}, the input on ${layout.device}`, 'SPPNET_DEVICE_MISMATCH');
}

/** @internal */
export function checkOutputSizes(fn: string, sizes: Array<readonly [number, number]>, channels: number, what: (i: number) => string) {
  let total = 0;
  sizes.forEach(([h, w], i) => {
    if (h < 1 || w < 1) fail(`${fn}: ${what(i)}`);
    total += channels * h * w;
  });
  if (total > MAX_ELEMENTS) fail(`${fn}: the output would hold ${total} elements, more than the 2^31-1 a tensor may hold`);
}

async function run(site: CallSite, fn: string, o: { out: Spatial | Tensor; owned: boolean }, call: () => Promise<void>) {
  try {
    await site.run(fn, call);
  } catch (e) {
    if (o.owned) o.out.dispose();
    throw e;
  }
}

/** Output side of a convolution along one axis (PyTorch's formula). */
export function convOutSide(a: number, k: number, s: number, p: number, d: number): number {
  return Math.floor((a + 2 * p - d * (k - 1) - 1) / s) + 1;
}

/** Output side of max pooling along one axis (PyTorch's formula, ceil mode included). */
export function poolOutSide(a: number, k: number, s: number, p: number, ceil: boolean): number {
  const span = a + 2 * p - k;
  let n = (ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1;
  if (ceil && (n - 1) * s >= a + p) n -= 1; // the last window must start inside the map or its left padding
  return n;
}

const outRef = (o: Spatial) => nativeRef(o.storage('sppnet', 'the output'));

/**
 * @internal Checks a conv weight against the input and the stride/padding/dilation/groups
 * options, and gives the geometry and every map's output size (shared by conv2d and its backward).
 */
export function convGeometry(fn: string, L: SpatialLayout, weight: Tensor, o: { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number }) {
  if (!(weight instanceof Tensor)) fail(`${fn}: weight must be a Tensor [out, in/groups, kh, kw], got ${describe(weight)}`);
  const ws = weight.storage(fn, 'weight');
  if (weight.rank !== 4) fail(`${fn}: weight must have rank 4 [out, in/groups, kh, kw], got shape [${weight.shape.join(', ')}]`);
  const groups = o.groups === undefined ? 1 : o.groups;
  if (!isPositiveInt(groups)) fail(`${fn}: options.groups must be a positive integer, got ${describe(o.groups)}`);
  const [cout, cinG, kh, kw] = weight.shape;
  if (cout < 1 || kh < 1 || kw < 1) fail(`${fn}: weight has an empty axis: shape [${weight.shape.join(', ')}]`);
  if (L.channels % groups !== 0) fail(`${fn}: input channels ${L.channels} are not divisible by groups ${groups}`);
  if (cout % groups !== 0) fail(`${fn}: weight axis 0 (out channels) ${cout} is not divisible by groups ${groups}`);
  if (cinG * groups !== L.channels)
    fail(`${fn}: weight axis 1 (in channels / groups) is ${cinG}, but the input has ${L.channels} channels and groups = ${groups}, so ${L.channels / groups} is expected`);
  sameDevice(fn, L, weight, 'weight');
  const [sh, sw] = pair(fn, 'options.stride', o.stride, [1, 1], 1);
  const [ph, pw] = pair(fn, 'options.padding', o.padding, [0, 0], 0);
  const [dh, dw] = pair(fn, 'options.dilation', o.dilation, [1, 1], 1);
  const outSizes = L.sizes.map(([h, w]) => [convOutSide(h, kh, sh, ph, dh), convOutSide(w, kw, sw, pw, dw)] as const);
  checkOutputSizes(fn, outSizes, cout, (i) =>
    `map ${i} of size ${L.sizes[i][0]}x${L.sizes[i][1]} (HxW) is too small for kernel ${kh}x${kw} with padding ${ph}x${pw} and dilation ${dh}x${dw}: the output would be ${outSizes[i][0]}x${outSizes[i][1]}`);
  return { ws, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, outSizes };
}

export interface Conv2dOptions {
  stride?: Pair;
  padding?: Pair;
  dilation?: Pair;
  groups?: number;
  /** Apply ReLU to the output (fused). */
  relu?: boolean;
  /** Write here: the input's kind with the output's layout, on its device. */
  out?: Spatial;
  /** CUDA only: how to multiply (default sp.getMath().conv, 'tf32'); the CPU computes in FP32. */
  math?: MathMode;
}

/**
 * The ConvMath code a CUDA call runs with: the mode asked for, or 'direct' when the GPU has no
 * TF32/BF16 tensor cores or the tensor-core check found this mode wrong on it.
 */
async function mathCode(device: Storage['device'], mode: MathMode): Promise<number> {
  if (device !== 'cuda' || mode === 'direct') return MATH_CODE[mode];
  if (!tensorCoresPresent()) return MATH_CODE.direct;
  const r = await tensorCoreCheck();
  return r.modes[mode as 'tf32' | 'bf16' | 'fp32'].ok ? MATH_CODE[mode] : MATH_CODE.direct;
}

/**
 * 2-D convolution, PyTorch's conv2d: weight [out, in/groups, kh, kw], bias [out] or null.
 * Returns the input's kind: a RaggedBatch (each map its own output size), [N, out, Ho, Wo] or [out, Ho, Wo].
 */
export async function conv2d<T extends Spatial>(input: T, weight: Tensor, bias?: Tensor | null, opts?: Conv2dOptions): Promise<T> {
  return conv2dAs(input, weight, bias, opts, null);
}

/**
 * @internal conv2d where the CPU's Winograd path, when it takes the call, keeps the layer's
 * transformed filters between calls in a buffer of `floats` floats that `cache(floats)` returns
 * (the same one for the same size; a zeroed new one whenever the weights may have changed). Only
 * for weights that nothing changes behind the caller's back (a Model's).
 */
export async function conv2dCached<T extends Spatial>(input: T, weight: Tensor, bias: Tensor | null | undefined, opts: Conv2dOptions,
  cache: (floats: number) => Float32Array): Promise<T> {
  return conv2dAs(input, weight, bias, opts, null, cache);
}

async function conv2dAs<T extends Spatial>(input: T, weight: Tensor, bias: Tensor | null | undefined, opts: Conv2dOptions | undefined, forced: number | null,
  cache?: (floats: number) => Float32Array): Promise<T> {
  const fn = 'sp.conv2d';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const mode = callMath(fn, o.math, 'conv');
  const L = spatialLayout(fn, input);
  const { ws, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, outSizes } = convGeometry(fn, L, weight, o);
  let bs: Storage | undefined;
  if (bias !== undefined && bias !== null) {
    if (!(bias instanceof Tensor)) fail(`${fn}: bias must be a Tensor [${cout}] or null, got ${describe(bias)}`);
    bs = bias.storage(fn, 'bias');
    if (bias.rank !== 1 || bias.shape[0] !== cout) fail(`${fn}: bias must have shape [${cout}], got [${bias.shape.join(', ')}]`);
    sameDevice(fn, L, bias, 'bias');
  }
  const o2 = outputFor(fn, o.out, L.kind, L.device, cout, outSizes);
  const out = o2.out;
  const x = nativeRef(L.store), y = outRef(out), w = nativeRef(ws);
  const b = bs && nativeRef(bs);
  const code = forced ?? (await mathCode(L.device, mode));
  const shape = { ...nativeLayout('out', cout, outSizes), params: Int32Array.from([L.channels, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, code]), relu: o.relu === true };
  // The native side says whether its Winograd path takes this call (and the cache's size).
  const floats = cache && L.device === 'cpu' ? native.winogradCacheFloats(shape) : 0;
  await run(site, fn, o2, () =>
    native.conv2d({
      input: x.buf, inputOffset: x.offset, output: y.buf, outputOffset: y.offset, weight: w.buf, weightOffset: w.offset,
      ...(b ? { bias: b.buf, biasOffset: b.offset } : {}),
      ...nativeLayout('in', L.channels, L.sizes, L.offsets), ...shape,
      ...(floats > 0 ? { filterCache: cache!(floats) } : {}),
    }),
  );
  return out as T;
}

export interface MaxPool2dOptions {
  kernel: Pair;
  /** Default: the kernel size. */
  stride?: Pair;
  padding?: Pair;
  ceilMode?: boolean;
  out?: Spatial;
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

/** @internal Checked pooling geometry: kernel, stride, padding and each map's output size. */
export function poolGeometry(fn: string, L: ReturnType<typeof spatialLayout>, o: Record<string, unknown>, prefix = 'options') {
  const { kh, kw, sh, sw, ph, pw, ceil } = poolWindow(fn, o, prefix);
  const outSizes = L.sizes.map(([h, w]) => [poolOutSide(h, kh, sh, ph, ceil), poolOutSide(w, kw, sw, pw, ceil)] as const);
  checkOutputSizes(fn, outSizes, L.channels, (i) =>
    `map ${i} of size ${L.sizes[i][0]}x${L.sizes[i][1]} (HxW) is too small for kernel ${kh}x${kw} with padding ${ph}x${pw}: the output would be ${outSizes[i][0]}x${outSizes[i][1]}`);
  return { outSizes, params: Int32Array.from([kh, kw, sh, sw, ph, pw]) };
}

/** PyTorch's max_pool2d per map (padding never wins; NaN propagates; ceil mode as PyTorch). */
export async function maxPool2d<T extends Spatial>(input: T, opts: MaxPool2dOptions): Promise<T> {
  const fn = 'sp.maxPool2d';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  const { outSizes, params } = poolGeometry(fn, L, o);
  return (await pooled(site, fn, L, o.out, outSizes, (args) => native.maxPool2d({ ...args, params }))) as T;
}

/** Runs a pooling-shaped native call (the input's channels, each map to outSizes) into `given` or a new output. */
async function pooled(site: CallSite, fn: string, L: ReturnType<typeof spatialLayout>, given: unknown, outSizes: Array<readonly [number, number]>,
  call: (args: Record<string, unknown>) => Promise<void>): Promise<Spatial> {
  const o2 = outputFor(fn, given, L.kind, L.device, L.channels, outSizes);
  const x = nativeRef(L.store), y = outRef(o2.out);
  await run(site, fn, o2, () =>
    call({
      input: x.buf, inputOffset: x.offset, output: y.buf, outputOffset: y.offset,
      ...nativeLayout('in', L.channels, L.sizes, L.offsets), ...nativeLayout('out', L.channels, outSizes),
    }),
  );
  return o2.out;
}

export interface LrnOptions {
  size: number;
  alpha?: number;
  beta?: number;
  k?: number;
  out?: Spatial;
}

/** @internal Checked LRN parameters (PyTorch's defaults). */
export function lrnParams(fn: string, o: Record<string, unknown>, prefix = 'options') {
  if (!isPositiveInt(o.size)) fail(`${fn}: ${prefix}.size must be a positive integer, got ${describe(o.size)}`);
  if (o.size > MAX_INT32) fail(`${fn}: ${prefix}.size must be at most 2^31-1, got ${o.size}`);
  const num = (name: string, d: number) => {
    const v = o[name] === undefined ? d : o[name];
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${fn}: ${prefix}.${name} must be a finite number, got ${describe(v)}`);
    return v;
  };
  return { size: o.size as number, alpha: num('alpha', 1e-4), beta: num('beta', 0.75), k: num('k', 1) };
}

/** PyTorch's local_response_norm across channels: x / (k + alpha/size * sum of squares over size channels)^beta. */
export async function localResponseNorm<T extends Spatial>(input: T, opts: LrnOptions): Promise<T> {
  const fn = 'sp.localResponseNorm';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  const lp = lrnParams(fn, o);
  const o2 = outputFor(fn, o.out, L.kind, L.device, L.channels, L.sizes);
  const out = o2.out;
  const x = nativeRef(L.store), y = outRef(out);
  await run(site, fn, o2, () =>
    native.lrn({
      input: x.buf, inputOffset: x.offset, output: y.buf, outputOffset: y.offset,
      ...nativeLayout('in', L.channels, L.sizes, L.offsets),
      ...lp,
    }),
  );
  return out as T;
}

export interface LrnMaxPool2dOptions {
  /** The localResponseNorm options (no `out`: the LRN map is never materialised). */
  lrn: Omit<LrnOptions, 'out'>;
  /** The maxPool2d options (no `out`: pass it here, at the top level). */
  pool: Omit<MaxPool2dOptions, 'out'>;
  out?: Spatial;
}

/**
 * maxPool2d(localResponseNorm(input, lrn), pool) in one pass that never writes the LRN map: the
 * same values, bit for bit, as the two calls (AlexNet / ZF-5's norm-then-pool; Model.run uses it
 * for every LRN layer followed by a max pool). Inference only: training needs the LRN map.
 */
export async function lrnMaxPool2d<T extends Spatial>(input: T, opts: LrnMaxPool2dOptions): Promise<T> {
  const fn = 'sp.lrnMaxPool2d';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  for (const part of ['lrn', 'pool'] as const) {
    const v = o[part];
    if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(`${fn}: options.${part} must be an object of ${part === 'lrn' ? 'localResponseNorm' : 'maxPool2d'} options, got ${describe(v)}`);
    if ((v as Record<string, unknown>).out !== undefined) fail(`${fn}: options.${part}.out is not used: pass options.out`);
  }
  const lp = lrnParams(fn, o.lrn as Record<string, unknown>, 'options.lrn');
  const { outSizes, params } = poolGeometry(fn, L, o.pool as Record<string, unknown>, 'options.pool');
  return (await pooled(site, fn, L, o.out, outSizes, (args) => native.lrnMaxPool2d({ ...args, params, ...lp }))) as T;
}

function matrixOut(fn: string, given: unknown, rows: number, cols: number, device: Storage['device']): { out: Tensor; owned: boolean } {
  if (given === undefined) return { out: allocate([rows, cols], device, fn), owned: true };
  if (!(given instanceof Tensor) || given.rank !== 2 || given.shape[0] !== rows || given.shape[1] !== cols)
    fail(`${fn}: options.out must be a Tensor [${rows}, ${cols}], got ${given instanceof Tensor ? String(given) : describe(given)}`);
  given.storage(fn, 'options.out');
  if (given.device !== device) fail(`${fn}: options.out is on ${given.device}, the input on ${device}`);
  return { out: given, owned: false };
}

/** @internal */
export function matrix(fn: string, x: unknown, name: string): { t: Tensor; s: Storage } {
  if (!(x instanceof Tensor)) fail(`${fn}: ${name} must be a Tensor, got ${describe(x)}`);
  const s = x.storage(fn, name);
  if (x.rank !== 2) fail(`${fn}: ${name} must have rank 2, got shape [${x.shape.join(', ')}]`);
  return { t: x, s };
}

export interface LinearOptions {
  relu?: boolean;
  out?: Tensor;
  /** CUDA only: how to multiply (default sp.getMath().linear, 'fp32'); the CPU computes in FP32. */
  math?: MathMode;
}

/** y = x . weight^T + bias: x [N, in], weight [out, in] (PyTorch's nn.Linear layout), bias [out] or null. */
export async function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, opts?: LinearOptions): Promise<Tensor> {
  return linearAs(x, weight, bias, opts, null);
}

async function linearAs(x: Tensor, weight: Tensor, bias: Tensor | null | undefined, opts: LinearOptions | undefined, forced: number | null): Promise<Tensor> {
  const fn = 'sp.linear';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const mode = callMath(fn, o.math, 'linear');
  const X = matrix(fn, x, 'x'), Wt = matrix(fn, weight, 'weight');
  const [rows, inF] = X.t.shape, [outF, inW] = Wt.t.shape;
  if (inW !== inF) fail(`${fn}: weight axis 1 (in features) is ${inW}, x axis 1 is ${inF}`);
  if (Wt.s.device !== X.s.device) throw new SppnetError(`${fn}: weight is on ${Wt.s.device}, x on ${X.s.device}`, 'SPPNET_DEVICE_MISMATCH');
  let bs: Storage | undefined;
  if (bias !== undefined && bias !== null) {
    if (!(bias instanceof Tensor)) fail(`${fn}: bias must be a Tensor [${outF}] or null, got ${describe(bias)}`);
    bs = bias.storage(fn, 'bias');
    if (bias.rank !== 1 || bias.shape[0] !== outF) fail(`${fn}: bias must have shape [${outF}], got [${bias.shape.join(', ')}]`);
    if (bs.device !== X.s.device) throw new SppnetError(`${fn}: bias is on ${bs.device}, x on ${X.s.device}`, 'SPPNET_DEVICE_MISMATCH');
  }
  if (rows * outF > MAX_ELEMENTS) fail(`${fn}: the output [${rows}, ${outF}] would exceed 2^31-1 elements`);
  const o2 = matrixOut(fn, o.out, rows, outF, X.s.device);
  const out = o2.out as Tensor;
  const xi = nativeRef(X.s), w = nativeRef(Wt.s), y = nativeRef(out.storage(fn, 'the output'));
  const b = bs && nativeRef(bs);
  const code = forced ?? (await mathCode(X.s.device, mode));
  await run(site, fn, o2, () =>
    native.linear({
      input: xi.buf, inputOffset: xi.offset, output: y.buf, outputOffset: y.offset, weight: w.buf, weightOffset: w.offset,
      ...(b ? { bias: b.buf, biasOffset: b.offset } : {}), rows, inFeatures: inF, outFeatures: outF, relu: o.relu === true, math: code,
    }),
  );
  return out;
}

/** max(x, 0) elementwise (NaN stays NaN); the input's kind and shape. */
export async function relu<T extends Tensor | RaggedBatch>(x: T, opts?: { out?: T }): Promise<T> {
  const fn = 'sp.relu';
  const site = new CallSite();
  const given = checkOpts(fn, opts).out;
  let o2: { out: Spatial; owned: boolean };
  let n: number;
  if (x instanceof RaggedBatch) {
    x.storage(fn, 'x');
    o2 = outputFor(fn, given, 'ragged', x.device, x.channels, [...x.sizes]);
    n = x.total;
  } else if (x instanceof Tensor) {
    x.storage(fn, 'x');
    if (given === undefined) o2 = { out: allocate(x.shape, x.device, fn), owned: true };
    else {
      if (!(given instanceof Tensor) || given.shape.length !== x.shape.length || given.shape.some((d, i) => d !== x.shape[i]))
        fail(`${fn}: options.out must be a Tensor [${x.shape.join(', ')}]`);
      given.storage(fn, 'options.out');
      if (given.device !== x.device) fail(`${fn}: options.out is on ${given.device}, x on ${x.device}`);
      o2 = { out: given, owned: false };
    }
    n = x.size;
  } else return fail(`${fn}: x must be a Tensor or a RaggedBatch, got ${describe(x)}`);
  const out = o2.out;
  const xi = nativeRef(x.storage(fn, 'x')), y = outRef(out);
  await run(site, fn, o2, () => native.elementwise({ op: 'relu', rows: 1, cols: n, input: xi.buf, inputOffset: xi.offset, output: y.buf, outputOffset: y.offset }));
  return out as T;
}

/** Softmax over axis 1 of x [N, K] (numerically stable; NaN propagates). */
export async function softmax(x: Tensor): Promise<Tensor> {
  const fn = 'sp.softmax';
  const site = new CallSite();
  const X = matrix(fn, x, 'x');
  const [rows, cols] = X.t.shape;
  const out = allocate([rows, cols], X.s.device, fn);
  if (cols === 0) return out;
  const xi = nativeRef(X.s), y = outRef(out);
  await run(site, fn, { out, owned: true }, () => native.elementwise({ op: 'softmax', rows, cols, input: xi.buf, inputOffset: xi.offset, output: y.buf, outputOffset: y.offset }));
  return out;
}

/** [N, ...] -> [N, rest] as a view sharing memory. */
export function flatten(x: Tensor): Tensor {
  if (!(x instanceof Tensor)) fail(`sp.flatten: x must be a Tensor, got ${describe(x)}`);
  x.storage('sp.flatten', 'x');
  if (x.rank < 1) fail('sp.flatten: x must have rank >= 1');
  return x.reshape([x.shape[0], x.shape.slice(1).reduce((a, b) => a * b, 1)]);
}

// ---- the tensor-core check (lib/math.ts runs it once per thread before the first tensor-core call) ----

function lcg(seed: number) {
  let t = seed >>> 0;
  return () => {
    t = (Math.imul(t, 1664525) + 1013904223) >>> 0;
    return t / 2147483648 - 1; // [-1, 1)
  };
}

async function probeTensorCores(): Promise<TensorCoreCheck> {
  const r = lcg(0x5eed5);
  const rand = (n: number) => Float32Array.from({ length: n }, () => r());
  const abs = (a: Float32Array) => a.map(Math.abs);
  const owned: Array<{ dispose(): void }> = [];
  const keep = <T extends { dispose(): void }>(t: T) => (owned.push(t), t);
  const cuda = (a: Float32Array, shape: number[]) => keep(tensor(a, shape, { device: 'cuda' }));
  const modes = ['tf32', 'bf16', 'fp32'] as const;
  if (!tensorCoresPresent()) {
    const none = { ok: false, worst: NaN };
    return {
      ok: false, ran: false,
      modes: { tf32: { ...none, tolerance: MATH_TOLERANCE.tf32 }, bf16: { ...none, tolerance: MATH_TOLERANCE.bf16 }, fp32: { ...none, tolerance: MATH_TOLERANCE.fp32 } },
      detail: `not run: ${cudaUnavailableReason() ?? 'the CUDA device predates compute capability 8.0 (no TF32/BF16 tensor cores)'}`,
    };
  }
  const worst = { tf32: 0, bf16: 0, fp32: 0 };
  try {
    // conv: a ragged batch whose tiles span maps (1x1 included), groups 2, 20 out channels.
    const sizes: Array<[number, number]> = [[11, 13], [1, 1], [6, 4], [17, 9]];
    const C = 6, O = 20, opts: Conv2dOptions = { padding: 1, groups: 2 };
    const xs = sizes.map(([h, w]) => rand(C * h * w));
    const wv = rand(O * 3 * 3 * 3), bv = rand(O);
    const batch = (arrs: Float32Array[]) => keep(ragged(arrs.map((a, i) => cuda(a, [C, sizes[i][0], sizes[i][1]]))));
    const x = batch(xs), xa = batch(xs.map(abs));
    const w = cuda(wv, [O, 3, 3, 3]), wa = cuda(abs(wv), [O, 3, 3, 3]);
    const b = cuda(bv, [O]), ba = cuda(abs(bv), [O]);
    const want = await keep(await conv2dAs(x, w, b, opts, MATH_CODE.direct)).data();
    const mag = await keep(await conv2dAs(xa, wa, ba, opts, MATH_CODE.direct)).data();
    for (const m of modes) worst[m] = worstError(await keep(await conv2dAs(x, w, b, opts, MATH_CODE[m])).data(), want, mag);
    // linear: rows and features off the tile sizes.
    const lx = rand(37 * 70), lw = rand(33 * 70), lb = rand(33);
    const X = cuda(lx, [37, 70]), W = cuda(lw, [33, 70]), B = cuda(lb, [33]);
    const lwant = await keep(await linearAs(X, W, B, {}, MATH_CODE.direct)).data();
    const lmag = await keep(await linearAs(cuda(abs(lx), [37, 70]), cuda(abs(lw), [33, 70]), cuda(abs(lb), [33]), {}, MATH_CODE.direct)).data();
    for (const m of modes) worst[m] = Math.max(worst[m], worstError(await keep(await linearAs(X, W, B, {}, MATH_CODE[m])).data(), lwant, lmag));
  } finally {
    for (const t of owned.reverse()) t.dispose();
  }
  const res = {} as TensorCoreCheck['modes'];
  // The direct kernels are FP32 themselves: allow their error on top of each mode's.
  for (const m of modes) res[m] = { ok: worst[m] <= MATH_TOLERANCE[m] + MATH_TOLERANCE.direct, worst: worst[m], tolerance: MATH_TOLERANCE[m] };
  const ok = modes.every((m) => res[m].ok);
  const detail = `conv2d on 4 ragged maps (1x1 to 17x9, 6 -> 20 channels, 3x3, groups 2) and linear 37x70 -> 33 against the direct FP32 kernels; ` +
    modes.map((m) => `${m} worst ${res[m].worst.toExponential(2)} (tolerance ${res[m].tolerance})`).join(', ');
  return { ok, ran: true, modes: res, detail };
}

registerTensorCoreProbe(probeTensorCores);
