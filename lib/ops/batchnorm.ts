// Batch normalisation in training mode (PyTorch's BatchNorm2d.train()), over ragged batches: the
// statistics of each channel over every pixel of every map, the running statistics updated with
// momentum (the unbiased variance, as PyTorch), and the backward. Two native ops do the work:
// per-plane sums (float64) and a per-channel affine map; the per-channel arithmetic in between
// (C numbers) runs here in float64. At inference a batch norm is folded into its conv (lib/nn/fold.ts).
import { allocateAs, checkSpatialLike } from '../core/checks';
import { CallSite, fail } from '../core/errors';
import { native } from '../core/native';
import { RaggedBatch } from '../core/ragged';
import { mapElements, nativeLayout, Spatial, SpatialLayout, spatialLayout } from '../core/spatial';
import { nativeBuf, Storage, Tensor, tensor, writeTensor } from '../core/tensor';

/** The parameters and buffers of a batch norm (BatchNorm2d's state_dict: weight, bias, running_mean, running_var, num_batches_tracked). */
export interface BatchNormParams {
  weight: Tensor;
  bias: Tensor;
  runningMean: Tensor;
  runningVar: Tensor;
  numBatchesTracked?: Tensor;
}

export interface BatchNormTrainOptions {
  /** Added to the variance (default 1e-5). */
  eps?: number;
  /** Weight of the batch in the running statistics (default 0.1). */
  momentum?: number;
  /** A ReLU after the normalisation. */
  relu?: boolean;
}

/** What the backward needs from the forward. */
export interface BatchNormSaved {
  mean: Float64Array;
  invstd: Float64Array;
  /** gamma * invstd per channel. */
  scale: Float64Array;
  /** Elements per channel in the batch. */
  count: number;
}

/** Per channel: the sum of u and of u * v (v absent: u * u) over the batch, and the element count. */
async function channelSums(fn: string, site: CallSite, L: SpatialLayout, u: Storage, v?: Storage): Promise<{ s: Float64Array; p: Float64Array; count: number }> {
  const C = L.channels, N = L.sizes.length;
  const sums = new Float64Array(2 * N * C);
  await site.run(fn, () => native.channelSums({ ...nativeBuf('u', u), ...(v ? nativeBuf('v', v) : {}), ...nativeLayout('in', C, L.sizes, L.offsets), sums }));
  const s = new Float64Array(C), p = new Float64Array(C);
  for (let m = 0; m < N; m++) {
    for (let c = 0; c < C; c++) {
      s[c] += sums[2 * (m * C + c)];
      p[c] += sums[2 * (m * C + c) + 1];
    }
  }
  return { s, p, count: mapElements(1, L.sizes) };
}

/** y = a u + b v + d per channel into `out` (v absent: no b term). */
async function channelAffine(fn: string, site: CallSite, L: SpatialLayout, u: Storage, a: ArrayLike<number>, v: Storage | undefined, b: ArrayLike<number> | undefined,
                             d: ArrayLike<number>, relu: boolean, out: Storage): Promise<void> {
  await site.run(fn, () => native.channelAffine({
    ...nativeBuf('u', u), ...(v ? { ...nativeBuf('v', v), b: Float32Array.from(b!) } : {}), ...nativeBuf('output', out),
    ...nativeLayout('in', L.channels, L.sizes, L.offsets), a: Float32Array.from(a), d: Float32Array.from(d), relu,
  }));
}

/**
 * Batch norm in training mode (sp.batchNormTrain): normalises with the batch's statistics, updates the
 * running ones (momentum; the unbiased variance) and num_batches_tracked, as PyTorch's
 * BatchNorm2d in train() mode.
 */
export async function batchNormTrain<T extends Spatial>(x: T, p: BatchNormParams, o: BatchNormTrainOptions = {}): Promise<{ output: T; saved: BatchNormSaved }> {
  const fn = 'sp.batchNormTrain';
  const site = new CallSite();
  const L = spatialLayout(fn, x);
  const eps = o.eps ?? 1e-5, momentum = o.momentum ?? 0.1;
  const { s, p: sq, count } = await channelSums(fn, site, L, L.store);
  if (count < 2) fail(`${fn}: batch norm in training needs more than one value per channel, got ${count} (a batch of one 1x1 map)`);
  const [g, b, rm, rv] = await Promise.all([p.weight, p.bias, p.runningMean, p.runningVar].map((t) => t.data()));
  const C = L.channels;
  const mean = new Float64Array(C), invstd = new Float64Array(C), scale = new Float64Array(C), shift = new Float64Array(C);
  const nrm = new Float32Array(C), nrv = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    mean[c] = s[c] / count;
    const v = Math.max(0, sq[c] / count - mean[c] * mean[c]);
    invstd[c] = 1 / Math.sqrt(v + eps);
    scale[c] = g[c] * invstd[c];
    shift[c] = b[c] - mean[c] * scale[c];
    nrm[c] = (1 - momentum) * rm[c] + momentum * mean[c];
    nrv[c] = (1 - momentum) * rv[c] + momentum * v * (count / (count - 1));
  }
  const out = allocateAs(x as Tensor | RaggedBatch, fn) as T;
  try {
    await channelAffine(fn, site, L, L.store, scale, undefined, undefined, shift, o.relu === true, spatialLayout(fn, out, 'the output').store);
    await Promise.all([writeTensor(p.runningMean, nrm, fn), writeTensor(p.runningVar, nrv, fn)]);
    if (p.numBatchesTracked) await writeTensor(p.numBatchesTracked, Float32Array.of((await p.numBatchesTracked.data())[0] + 1), fn);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return { output: out, saved: { mean, invstd, scale, count } };
}

/**
 * Gradients of batchNormTrain (sp.batchNormBackward) (without its ReLU: give the gradient after the ReLU's
 * backward): of the input (when needInputGrad), of weight (gamma) and of bias (beta).
 */
export async function batchNormBackward<T extends Spatial>(input: T, gradOutput: T, saved: BatchNormSaved, needInputGrad = true): Promise<{ gradInput?: T; gradWeight: Tensor; gradBias: Tensor }> {
  const fn = 'sp.batchNormBackward';
  const site = new CallSite();
  const L = spatialLayout(fn, input);
  const gs = checkSpatialLike(fn, 'gradOutput', L, gradOutput, L.channels, L.sizes, 'the input');
  const C = L.channels, M = saved.count;
  const { s: sdy, p: sdyx } = await channelSums(fn, site, L, gs, L.store);
  const dgamma = new Float32Array(C), dbeta = new Float32Array(C);
  const pc = new Float64Array(C), qc = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    const sdyxhat = saved.invstd[c] * (sdyx[c] - saved.mean[c] * sdy[c]);
    dgamma[c] = sdyxhat;
    dbeta[c] = sdy[c];
    // dx = scale (dy - sum(dy) / M - xhat sum(dy xhat) / M) = scale dy + p x + q.
    pc[c] = (-saved.scale[c] * saved.invstd[c] * sdyxhat) / M;
    qc[c] = (-saved.scale[c] * sdy[c]) / M - pc[c] * saved.mean[c];
  }
  const moved = [tensor(dgamma, [C], { device: L.device }), tensor(dbeta, [C], { device: L.device })];
  if (!needInputGrad) return { gradWeight: moved[0], gradBias: moved[1] };
  const dx = allocateAs(input as Tensor | RaggedBatch, fn) as T;
  try {
    await channelAffine(fn, site, L, gs, saved.scale, L.store, pc, qc, false, spatialLayout(fn, dx, 'gradInput').store);
  } catch (e) {
    dx.dispose();
    moved.forEach((t) => t.dispose());
    throw e;
  }
  return { gradInput: dx, gradWeight: moved[0], gradBias: moved[1] };
}

/** @internal y = x * scale[c] + shift[c] per channel (a constant affine layer, and its backward with shift 0). */
export async function affineChannels<T extends Spatial>(x: T, scale: ArrayLike<number>, shift: ArrayLike<number>): Promise<T> {
  const fn = 'sp.affineChannels';
  const site = new CallSite();
  const L = spatialLayout(fn, x);
  if (scale.length !== L.channels || shift.length !== L.channels) fail(`${fn}: scale and shift must have ${L.channels} values (one per channel)`);
  const out = allocateAs(x as Tensor | RaggedBatch, fn) as T;
  try {
    await channelAffine(fn, site, L, L.store, scale, undefined, undefined, shift, false, spatialLayout(fn, out, 'the output').store);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}

/** @internal a + b elementwise for two spatial values of one layout (gradients meeting at a fork). */
export async function addSpatial<T extends Spatial>(a: T, b: T): Promise<T> {
  const fn = 'sp.add';
  const site = new CallSite();
  const L = spatialLayout(fn, a);
  const bs = checkSpatialLike(fn, 'b', L, b, L.channels, L.sizes, 'a');
  const ones = new Float64Array(L.channels).fill(1);
  const out = allocateAs(a as Tensor | RaggedBatch, fn) as T;
  try {
    await channelAffine(fn, site, L, L.store, ones, bs, ones, new Float64Array(L.channels), false, spatialLayout(fn, out, 'the output').store);
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}
