// Training: backward passes of the layers, dropout, the softmax cross-entropy loss and the
// optimizer steps (PyTorch's SGD and Adam/AdamW), on the CPU and CUDA.
//
// Final signatures (T = RaggedBatch | Tensor [N, C, H, W] | [C, H, W], as the forward op takes):
//   conv2dBackward(input: T, weight: Tensor, gradOutput: T, opts?: Conv2dBackwardOptions)
//     -> Promise<{ gradInput?: T; gradWeight: Tensor; gradBias?: Tensor }>
//     opts: stride, padding, dilation, groups (as conv2d), needInputGrad = true, bias = true.
//     options.relu is ignored: for a fused conv + ReLU, pass gradOutput through reluBackward first.
//   maxPool2dBackward(input: T, gradOutput: T, opts: MaxPool2dOptions) -> Promise<T>
//   localResponseNormBackward(input: T, gradOutput: T, opts: LrnOptions) -> Promise<T>
//   linearBackward(x: Tensor [N, in], weight: Tensor [out, in], gradOutput: Tensor [N, out],
//                  opts?: { needInputGrad = true, bias = true })
//     -> Promise<{ gradInput?: Tensor; gradWeight: Tensor; gradBias?: Tensor }>
//   reluBackward(output: T, gradOutput: T) -> Promise<T>          (output <= 0 ? 0 : grad, as PyTorch)
//   dropout(x: T, { p, seed, training = true }) -> Promise<{ output: T; mask?: T }>
//   dropoutBackward(gradOutput: T, mask: T | null | undefined) -> Promise<T>
//   softmaxCrossEntropy(logits: Tensor [N, K], labels: Int32Array | number[])
//     -> Promise<{ loss: number; gradLogits: Tensor; correct: number }>
//   sgdStep(param, grad, momentumBuf: Tensor | null, { lr, momentum = 0, dampening = 0, weightDecay = 0,
//           nesterov = false, step }) -> Promise<void>         (step: 1-based, required when momentum != 0)
//   adamStep(param, grad, m, v, { lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = 0,
//            decoupled = false, step }) -> Promise<void>       (step: 1-based, required)
// Every result is a new tensor on the input's device; the optimizer steps update in place.
import { CallSite, describe, fail, isPositiveInt, SppnetError } from './errors';
import { checkOpts, convGeometry, MaxPool2dOptions, Conv2dOptions, LrnOptions, lrnParams, matrix, poolGeometry } from './layers';
import { native } from './native';
import { RaggedBatch } from './ragged';
import { allocateLike, nativeLayout, Spatial, spatialLayout, SpatialLayout } from './spatial';
import { allocate, nativeRef, Storage, Tensor } from './tensor';

type Disposable = { dispose(): void };

/** Runs the native call; on failure disposes what the op allocated and rethrows with the caller's stack. */
async function settle(site: CallSite, fn: string, owned: Disposable[], call: () => Promise<void>): Promise<void> {
  try {
    await site.run(fn, call);
  } catch (e) {
    owned.forEach((o) => o.dispose());
    throw e;
  }
}

function mismatch(fn: string, what: string, device: string, other: string, otherDevice: string): never {
  throw new SppnetError(`${fn}: ${what} is on ${device}, ${other} on ${otherDevice}`, 'SPPNET_DEVICE_MISMATCH');
}

const AXES4 = ['N', 'C', 'H', 'W'];
const AXES3 = ['C', 'H', 'W'];

/**
 * Checks that `g` has exactly the layout `channels` x `sizes` in the kind of `L` (a gradient of a
 * forward output, or a tensor like the input), on L's device. Returns its storage.
 */
function checkSpatialLike(fn: string, name: string, L: SpatialLayout, g: unknown, channels: number,
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
    if (s.device !== L.device) mismatch(fn, name, s.device, 'the input', L.device);
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
  if (s.device !== L.device) mismatch(fn, name, s.device, 'the input', L.device);
  return s;
}

/** A tensor argument with `ref`'s shape and device. */
function checkTensorLike(fn: string, name: string, t: unknown, ref: Tensor, refName: string): Storage {
  if (!(t instanceof Tensor)) fail(`${fn}: ${name} must be a Tensor [${ref.shape.join(', ')}] like ${refName}, got ${describe(t)}`);
  const s = t.storage(fn, name);
  if (t.rank !== ref.rank) fail(`${fn}: ${name} must have ${refName}'s shape [${ref.shape.join(', ')}], got [${t.shape.join(', ')}]`);
  t.shape.forEach((d, i) => {
    if (d !== ref.shape[i]) fail(`${fn}: ${name} axis ${i} is ${d}, expected ${ref.shape[i]} (${refName} has shape [${ref.shape.join(', ')}])`);
  });
  if (t.device !== ref.device) mismatch(fn, name, t.device, refName, ref.device);
  return s;
}

/** An elementwise operand: a Tensor or a RaggedBatch with exactly `ref`'s layout. */
function checkElementwiseLike(fn: string, name: string, t: unknown, ref: Tensor | RaggedBatch, refName: string): Storage {
  if (ref instanceof Tensor) return checkTensorLike(fn, name, t, ref, refName);
  return checkSpatialLike(fn, name, spatialLayout(fn, ref, refName), t, ref.channels, [...ref.sizes], `the layout of ${refName}`);
}

function elementwiseInput(fn: string, name: string, x: unknown): { store: Storage; n: number; x: Tensor | RaggedBatch } {
  if (x instanceof RaggedBatch) return { store: x.storage(fn, name), n: x.total, x };
  if (x instanceof Tensor) return { store: x.storage(fn, name), n: x.size, x };
  return fail(`${fn}: ${name} must be a Tensor or a RaggedBatch, got ${describe(x)}`);
}

function allocateAs<T extends Tensor | RaggedBatch>(x: T, fn: string): T {
  if (x instanceof RaggedBatch) return allocateLike('ragged', x.device, x.channels, [...x.sizes], fn) as T;
  return allocate((x as Tensor).shape, x.device, fn) as T;
}

/** A new tensor or batch shaped like the spatial input (dense inputs keep their shape, N = 0 included). */
function gradInputFor<T extends Spatial>(L: SpatialLayout, input: T, fn: string): T {
  return (input instanceof Tensor ? allocate(input.shape, L.device, fn) : allocateLike('ragged', L.device, L.channels, L.sizes, fn)) as T;
}

function flag(fn: string, o: Record<string, unknown>, name: string, dflt: boolean): boolean {
  const v = o[name];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') fail(`${fn}: options.${name} must be a boolean, got ${describe(v)}`);
  return v;
}

/** @internal The dropout probability o.p, a number in [0, 1); `prefix` names where o sits, for messages. */
export function dropoutRate(fn: string, o: Record<string, unknown>, prefix = 'options'): number {
  const v = o.p;
  if (v === undefined) fail(`${fn}: ${prefix}.p is required (a number in [0, 1))`);
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) fail(`${fn}: ${prefix}.p must be a number in [0, 1), got ${describe(v)}`);
  return v;
}

function num(fn: string, o: Record<string, unknown>, name: string, dflt: number | undefined, check: (v: number) => boolean, range: string): number {
  const v = o[name] === undefined ? dflt : o[name];
  if (v === undefined) fail(`${fn}: options.${name} is required (${range})`);
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) fail(`${fn}: options.${name} must be ${range}, got ${describe(v)}`);
  return v;
}

// ---------------------------------------------------------------- convolution

export interface Conv2dBackwardOptions extends Omit<Conv2dOptions, 'out'> {
  /** Compute gradInput (default true; the first layer skips it). */
  needInputGrad?: boolean;
  /** The layer has a bias: compute gradBias (default true). */
  bias?: boolean;
}

export interface ParamGrads<T> {
  gradInput?: T;
  gradWeight: Tensor;
  gradBias?: Tensor;
}

/**
 * Gradients of conv2d (no fused ReLU: apply reluBackward to gradOutput first). gradWeight
 * [out, in/groups, kh, kw] and gradBias [out] are summed over every map of the batch.
 */
export async function conv2dBackward<T extends Spatial>(input: T, weight: Tensor, gradOutput: T, opts?: Conv2dBackwardOptions): Promise<ParamGrads<T>> {
  const fn = 'sp.conv2dBackward';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  const { ws, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, outSizes } = convGeometry(fn, L, weight, o);
  const needInput = flag(fn, o, 'needInputGrad', true);
  const hasBias = flag(fn, o, 'bias', true);
  const gs = checkSpatialLike(fn, 'gradOutput', L, gradOutput, cout, outSizes, 'the forward output');
  const gradInput = needInput ? (gradInputFor(L, input, fn)) : undefined;
  const gradWeight = allocate(weight.shape, L.device, fn);
  const gradBias = hasBias ? allocate([cout], L.device, fn) : undefined;
  const x = nativeRef(L.store), w = nativeRef(ws), g = nativeRef(gs), gw = nativeRef(gradWeight.storage(fn, 'gradWeight'));
  const gi = gradInput && nativeRef(gradInput.storage(fn, 'gradInput'));
  const gb = gradBias && nativeRef(gradBias.storage(fn, 'gradBias'));
  const owned = [gradInput, gradWeight, gradBias].filter((t): t is NonNullable<typeof t> => t !== undefined);
  await settle(site, fn, owned, () =>
    native.conv2dBackward({
      input: x.buf, inputOffset: x.offset, weight: w.buf, weightOffset: w.offset, gradOutput: g.buf, gradOutputOffset: g.offset,
      gradWeight: gw.buf, gradWeightOffset: gw.offset,
      ...(gi ? { gradInput: gi.buf, gradInputOffset: gi.offset } : {}),
      ...(gb ? { gradBias: gb.buf, gradBiasOffset: gb.offset } : {}),
      ...nativeLayout('in', L.channels, L.sizes, L.offsets), ...nativeLayout('out', cout, outSizes),
      params: Int32Array.from([L.channels, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups]),
    }),
  );
  const res: ParamGrads<T> = { gradWeight };
  if (gradInput) res.gradInput = gradInput;
  if (gradBias) res.gradBias = gradBias;
  return res;
}

// ---------------------------------------------------------------- pooling, LRN

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
  const { outSizes, params } = poolGeometry(fn, L, o);
  const gs = checkSpatialLike(fn, 'gradOutput', L, gradOutput, L.channels, outSizes, 'the forward output');
  const out = gradInputFor(L, input, fn);
  const x = nativeRef(L.store), g = nativeRef(gs), y = nativeRef(out.storage(fn, 'gradInput'));
  await settle(site, fn, [out], () =>
    native.maxPool2dBackward({
      input: x.buf, inputOffset: x.offset, gradOutput: g.buf, gradOutputOffset: g.offset, gradInput: y.buf, gradInputOffset: y.offset,
      ...nativeLayout('in', L.channels, L.sizes, L.offsets), ...nativeLayout('out', L.channels, outSizes),
      params,
    }),
  );
  return out;
}

/** Gradient of localResponseNorm (PyTorch's local_response_norm), from the forward input. */
export async function localResponseNormBackward<T extends Spatial>(input: T, gradOutput: T, opts: LrnOptions): Promise<T> {
  const fn = 'sp.localResponseNormBackward';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  const lp = lrnParams(fn, o);
  const gs = checkSpatialLike(fn, 'gradOutput', L, gradOutput, L.channels, L.sizes, 'the forward output');
  const out = gradInputFor(L, input, fn);
  const x = nativeRef(L.store), g = nativeRef(gs), y = nativeRef(out.storage(fn, 'gradInput'));
  await settle(site, fn, [out], () =>
    native.lrnBackward({
      input: x.buf, inputOffset: x.offset, gradOutput: g.buf, gradOutputOffset: g.offset, gradInput: y.buf, gradInputOffset: y.offset,
      ...nativeLayout('in', L.channels, L.sizes, L.offsets), ...lp,
    }),
  );
  return out;
}

// ---------------------------------------------------------------- linear

/** Gradients of linear (no fused ReLU): x [N, in], weight [out, in], gradOutput [N, out]. */
export async function linearBackward(x: Tensor, weight: Tensor, gradOutput: Tensor, opts?: { needInputGrad?: boolean; bias?: boolean }): Promise<ParamGrads<Tensor>> {
  const fn = 'sp.linearBackward';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const X = matrix(fn, x, 'x'), Wt = matrix(fn, weight, 'weight'), G = matrix(fn, gradOutput, 'gradOutput');
  const [rows, inF] = X.t.shape, [outF, inW] = Wt.t.shape;
  if (inW !== inF) fail(`${fn}: weight axis 1 (in features) is ${inW}, x axis 1 is ${inF}`);
  if (G.t.shape[0] !== rows) fail(`${fn}: gradOutput axis 0 (rows) is ${G.t.shape[0]}, expected ${rows} (x axis 0)`);
  if (G.t.shape[1] !== outF) fail(`${fn}: gradOutput axis 1 (out features) is ${G.t.shape[1]}, expected ${outF} (weight axis 0)`);
  if (Wt.s.device !== X.s.device) mismatch(fn, 'weight', Wt.s.device, 'x', X.s.device);
  if (G.s.device !== X.s.device) mismatch(fn, 'gradOutput', G.s.device, 'x', X.s.device);
  const needInput = flag(fn, o, 'needInputGrad', true);
  const hasBias = flag(fn, o, 'bias', true);
  const device = X.s.device;
  const gradInput = needInput ? allocate([rows, inF], device, fn) : undefined;
  const gradWeight = allocate([outF, inF], device, fn);
  const gradBias = hasBias ? allocate([outF], device, fn) : undefined;
  const xi = nativeRef(X.s), w = nativeRef(Wt.s), g = nativeRef(G.s), gw = nativeRef(gradWeight.storage(fn, 'gradWeight'));
  const gi = gradInput && nativeRef(gradInput.storage(fn, 'gradInput'));
  const gb = gradBias && nativeRef(gradBias.storage(fn, 'gradBias'));
  const owned = [gradInput, gradWeight, gradBias].filter((t): t is Tensor => t !== undefined);
  await settle(site, fn, owned, () =>
    native.linearBackward({
      input: xi.buf, inputOffset: xi.offset, weight: w.buf, weightOffset: w.offset, gradOutput: g.buf, gradOutputOffset: g.offset,
      gradWeight: gw.buf, gradWeightOffset: gw.offset,
      ...(gi ? { gradInput: gi.buf, gradInputOffset: gi.offset } : {}),
      ...(gb ? { gradBias: gb.buf, gradBiasOffset: gb.offset } : {}),
      rows, inFeatures: inF, outFeatures: outF,
    }),
  );
  const res: ParamGrads<Tensor> = { gradWeight };
  if (gradInput) res.gradInput = gradInput;
  if (gradBias) res.gradBias = gradBias;
  return res;
}

// ---------------------------------------------------------------- elementwise

/**
 * Gradient of relu from its forward OUTPUT: output <= 0 ? 0 : gradOutput (PyTorch's
 * threshold_backward: a NaN output passes its gradient on). Tensors or ragged batches.
 */
export async function reluBackward<T extends Tensor | RaggedBatch>(output: T, gradOutput: T): Promise<T> {
  const fn = 'sp.reluBackward';
  const site = new CallSite();
  const A = elementwiseInput(fn, 'output', output);
  const gs = checkElementwiseLike(fn, 'gradOutput', gradOutput, A.x, 'output');
  const out = allocateAs(A.x, fn) as T;
  const a = nativeRef(A.store), b = nativeRef(gs), y = nativeRef(out.storage(fn, 'the result'));
  await settle(site, fn, [out], () =>
    native.pointwise({ op: 'reluBackward', n: A.n, a: a.buf, aOffset: a.offset, b: b.buf, bOffset: b.offset, output: y.buf, outputOffset: y.offset }),
  );
  return out;
}

export interface DropoutOptions {
  /** Probability of zeroing an element, in [0, 1). */
  p: number;
  /** Integer in [0, 2^53): the mask is a pure function of (seed, element index), the same on every device. */
  seed?: number;
  /** Default true; false gives the identity. */
  training?: boolean;
}

/** A copy of x on its device. */
async function copyOf<T extends Tensor | RaggedBatch>(fn: string, site: CallSite, x: T, s: Storage, n: number): Promise<T> {
  const out = allocateAs(x, fn);
  const d = out.storage(fn, 'the copy');
  try {
    if (s.device === 'cpu' && d.device === 'cpu') d.array.set(s.array.subarray(0, n));
    else if (s.device === 'cuda' && d.device === 'cuda') native.cudaCopy(d.buffer, d.offset, s.buffer, s.offset, n);
  } catch (e) {
    out.dispose();
    throw site.wrap(e, fn);
  }
  return out;
}

/**
 * Inverted dropout: output = x * mask, mask elements 0 or 1 / (1 - p), element i dropped when the
 * top 24 bits of a SplitMix64 hash of (seed, i) fall below p * 2^24. With training false or p = 0
 * the output is a copy of x and mask is absent.
 */
export async function dropout<T extends Tensor | RaggedBatch>(x: T, opts: DropoutOptions): Promise<{ output: T; mask?: T }> {
  const fn = 'sp.dropout';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const X = elementwiseInput(fn, 'x', x);
  const p = dropoutRate(fn, o);
  const training = flag(fn, o, 'training', true);
  if (!training || p === 0) {
    if (o.seed !== undefined && !(Number.isSafeInteger(o.seed) && (o.seed as number) >= 0))
      fail(`${fn}: options.seed must be an integer in [0, 2^53), got ${describe(o.seed)}`);
    return { output: await copyOf(fn, site, X.x as T, X.store, X.n) };
  }
  if (o.seed === undefined) fail(`${fn}: options.seed is required when training with p > 0 (an integer in [0, 2^53))`);
  if (typeof o.seed !== 'number' || !Number.isSafeInteger(o.seed) || o.seed < 0)
    fail(`${fn}: options.seed must be an integer in [0, 2^53), got ${describe(o.seed)}`);
  const output = allocateAs(X.x as T, fn), mask = allocateAs(X.x as T, fn);
  const xi = nativeRef(X.store), y = nativeRef(output.storage(fn, 'the output')), m = nativeRef(mask.storage(fn, 'the mask'));
  // Dropped when bits < threshold: P(drop) = threshold / 2^24, the nearest 24-bit fraction to p.
  const threshold = Math.min(16777216, Math.round(p * 16777216));
  const scale = 1 / (1 - p);
  await settle(site, fn, [output, mask], () =>
    native.dropout({
      n: X.n, input: xi.buf, inputOffset: xi.offset, output: y.buf, outputOffset: y.offset, mask: m.buf, maskOffset: m.offset,
      seed: o.seed as number, threshold, scale,
    }),
  );
  return { output, mask };
}

/** Gradient of dropout: gradOutput * mask (a copy of gradOutput when mask is null or undefined: dropout was the identity). */
export async function dropoutBackward<T extends Tensor | RaggedBatch>(gradOutput: T, mask: T | null | undefined): Promise<T> {
  const fn = 'sp.dropoutBackward';
  const site = new CallSite();
  const G = elementwiseInput(fn, 'gradOutput', gradOutput);
  if (mask === null || mask === undefined) return copyOf(fn, site, G.x as T, G.store, G.n);
  const ms = checkElementwiseLike(fn, 'mask', mask, G.x, 'gradOutput');
  const out = allocateAs(G.x as T, fn);
  const a = nativeRef(G.store), b = nativeRef(ms), y = nativeRef(out.storage(fn, 'the result'));
  await settle(site, fn, [out], () =>
    native.pointwise({ op: 'multiply', n: G.n, a: a.buf, aOffset: a.offset, b: b.buf, bOffset: b.offset, output: y.buf, outputOffset: y.offset }),
  );
  return out;
}

// ---------------------------------------------------------------- loss

/**
 * Mean softmax cross-entropy of logits [N, K] against integer labels (PyTorch's cross_entropy with
 * reduction 'mean'), computed stably (max subtracted, float64 sums). gradLogits = (softmax - onehot) / N.
 * correct: rows whose argmax (the first maximum) is the label. NaN or infinite logits give a NaN
 * loss rather than an error.
 */
export async function softmaxCrossEntropy(logits: Tensor, labels: Int32Array | ArrayLike<number>): Promise<{ loss: number; gradLogits: Tensor; correct: number }> {
  const fn = 'sp.softmaxCrossEntropy';
  const site = new CallSite();
  const X = matrix(fn, logits, 'logits');
  const [rows, cols] = X.t.shape;
  if (rows < 1) fail(`${fn}: logits must have at least one row, got shape [${X.t.shape.join(', ')}]`);
  if (cols < 1) fail(`${fn}: logits must have at least one class (axis 1), got shape [${X.t.shape.join(', ')}]`);
  if (!(labels instanceof Int32Array) && !Array.isArray(labels) && !ArrayBuffer.isView(labels))
    fail(`${fn}: labels must be an Int32Array or an array of integers, got ${describe(labels)}`);
  const lab = labels as ArrayLike<number>;
  if (lab.length !== rows) fail(`${fn}: labels has ${lab.length} values, but logits axis 0 (rows) is ${rows}`);
  const l = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    const v = lab[i];
    if (typeof v !== 'number' || !Number.isInteger(v)) fail(`${fn}: labels[${i}] must be an integer, got ${describe(v)}`);
    if (v < 0 || v >= cols) fail(`${fn}: labels[${i}] = ${v} is out of range: logits axis 1 has ${cols} classes, so labels must be in [0, ${cols})`);
    l[i] = v;
  }
  const grad = allocate([rows, cols], X.s.device, fn);
  const rowLoss = new Float64Array(rows), rowCorrect = new Int32Array(rows);
  const xi = nativeRef(X.s), g = nativeRef(grad.storage(fn, 'gradLogits'));
  await settle(site, fn, [grad], () =>
    native.softmaxCrossEntropy({ rows, cols, logits: xi.buf, logitsOffset: xi.offset, grad: g.buf, gradOffset: g.offset, labels: l, rowLoss, rowCorrect }),
  );
  let sum = 0, correct = 0;
  for (let i = 0; i < rows; i++) {
    sum += rowLoss[i];
    correct += rowCorrect[i];
  }
  return { loss: sum / rows, gradLogits: grad, correct };
}

// ---------------------------------------------------------------- optimizers

export interface SgdOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
  /** 1-based step number; required when momentum != 0 (step 1 sets buf = d, as PyTorch's first step). */
  step?: number;
}

function checkParamGroup(fn: string, param: unknown, others: Array<[string, unknown]>): { p: Storage; rest: Storage[] } {
  if (!(param instanceof Tensor)) fail(`${fn}: param must be a Tensor, got ${describe(param)}`);
  const p = param.storage(fn, 'param');
  const rest = others.map(([name, t]) => checkTensorLike(fn, name, t, param, 'param'));
  const named: Array<[string, unknown]> = [['param', param], ...others];
  for (let j = 1; j < named.length; j++)
    for (let i = 0; i < j; i++)
      if (named[i][1] === named[j][1]) fail(`${fn}: ${named[j][0]} is the same tensor as ${named[i][0]}; each must be its own tensor`);
  return { p, rest };
}

/**
 * One step of torch.optim.SGD on one parameter, in place:
 *   d = grad + weightDecay * param
 *   buf = step == 1 ? d : momentum * buf + (1 - dampening) * d;  d = nesterov ? d + momentum * buf : buf   (when momentum != 0)
 *   param -= lr * d
 * momentumBuf may be null when momentum is 0.
 */
export async function sgdStep(param: Tensor, grad: Tensor, momentumBuf: Tensor | null | undefined, opts: SgdOptions): Promise<void> {
  const fn = 'sp.sgdStep';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  if (opts === undefined) fail(`${fn}: options with lr are required`);
  const lr = num(fn, o, 'lr', undefined, (v) => v >= 0, 'a finite number >= 0');
  const momentum = num(fn, o, 'momentum', 0, (v) => v >= 0, 'a finite number >= 0');
  const dampening = num(fn, o, 'dampening', 0, () => true, 'a finite number');
  const weightDecay = num(fn, o, 'weightDecay', 0, (v) => v >= 0, 'a finite number >= 0');
  const nesterov = flag(fn, o, 'nesterov', false);
  if (nesterov && (momentum <= 0 || dampening !== 0)) fail(`${fn}: options.nesterov needs momentum > 0 and dampening 0 (as PyTorch), got momentum ${momentum}, dampening ${dampening}`);
  let step = 0;
  if (momentum !== 0) {
    if (!isPositiveInt(o.step)) fail(`${fn}: options.step must be the 1-based step number (a positive integer) when momentum != 0, got ${describe(o.step)}`);
    step = o.step;
  }
  const useBuf = momentum !== 0;
  if (useBuf && (momentumBuf === null || momentumBuf === undefined)) fail(`${fn}: momentumBuf must be a Tensor like param when momentum != 0, got ${describe(momentumBuf)}`);
  const { p, rest } = checkParamGroup(fn, param, [['grad', grad], ...(useBuf ? [['momentumBuf', momentumBuf] as [string, unknown]] : [])]);
  const pr = nativeRef(p), gr = nativeRef(rest[0]), br = useBuf ? nativeRef(rest[1]) : undefined;
  await settle(site, fn, [], () =>
    native.sgdStep({
      n: param.size, param: pr.buf, paramOffset: pr.offset, grad: gr.buf, gradOffset: gr.offset,
      ...(br ? { buf: br.buf, bufOffset: br.offset } : {}),
      lr, momentum, dampening, weightDecay, nesterov, firstStep: step === 1,
    }),
  );
}

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** AdamW: decay the parameter by lr * weightDecay instead of adding weightDecay * param to the gradient. */
  decoupled?: boolean;
  /** 1-based step number (for the bias corrections). */
  step: number;
}

/**
 * One step of torch.optim.Adam (or AdamW with decoupled: true) on one parameter, in place:
 *   AdamW: param *= 1 - lr * weightDecay;   Adam: g = grad + weightDecay * param
 *   m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
 *   param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 * m and v start as zeros.
 */
export async function adamStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, opts: AdamOptions): Promise<void> {
  const fn = 'sp.adamStep';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  if (opts === undefined) fail(`${fn}: options with lr and step are required`);
  const lr = num(fn, o, 'lr', undefined, (x) => x >= 0, 'a finite number >= 0');
  const beta1 = num(fn, o, 'beta1', 0.9, (x) => x >= 0 && x < 1, 'a number in [0, 1)');
  const beta2 = num(fn, o, 'beta2', 0.999, (x) => x >= 0 && x < 1, 'a number in [0, 1)');
  const eps = num(fn, o, 'eps', 1e-8, (x) => x >= 0, 'a finite number >= 0');
  const weightDecay = num(fn, o, 'weightDecay', 0, (x) => x >= 0, 'a finite number >= 0');
  const decoupled = flag(fn, o, 'decoupled', false);
  if (!isPositiveInt(o.step)) fail(`${fn}: options.step must be the 1-based step number (a positive integer), got ${describe(o.step)}`);
  const step = o.step;
  const { p, rest } = checkParamGroup(fn, param, [['grad', grad], ['m', m], ['v', v]]);
  const stepSize = lr / (1 - beta1 ** step);
  const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** step);
  const [pr, gr, mr, vr] = [p, ...rest].map(nativeRef);
  await settle(site, fn, [], () =>
    native.adamStep({
      n: param.size, param: pr.buf, paramOffset: pr.offset, grad: gr.buf, gradOffset: gr.offset, m: mr.buf, mOffset: mr.offset,
      v: vr.buf, vOffset: vr.offset, lr, beta1, beta2, eps, weightDecay, decoupled, stepSize, biasCorrection2Sqrt,
    }),
  );
}
