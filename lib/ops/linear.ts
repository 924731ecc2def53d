// Fully connected layers: y = x . weight^T + bias (PyTorch's nn.Linear layout), forward and backward.
import { kernelMath } from '../core/backend';
import { booleanOption, checkBias, checkOpts, matrix, sameDevice, settle, tensorOut } from '../core/checks';
import { CallSite, fail, MAX_ELEMENTS } from '../core/errors';
import { callMath, MathMode } from '../core/math';
import { argsOf, native } from '../core/native';
import { callOp, OpSequence, sequenceOf } from '../core/sequence';
import { allocate, nativeBuf, Tensor } from '../core/tensor';
import { BF16Matrix } from './bf16';
import { GradInto, gradTensor, ParamGrads, paramGrads } from './conv2d';

export interface LinearOptions {
  relu?: boolean;
  out?: Tensor;
  /**
   * How to multiply (default sp.getMath().linear, 'fp32'). CUDA: every mode. CPU: 'bf16' rounds x
   * and the weights to bfloat16 and sums their products in FP32 where the CPU has AVX-512 BF16
   * (sp.backend().cpu.bf16) and x has 256 rows or more (8 with a BF16Matrix weight); FP32 otherwise.
   * A BF16Matrix weight takes FP32 products of its values in every other mode. With SPPNET_AMX=1
   * (README, "AMX on the CPU") the CPU multiplies on AMX tiles from 128 rows.
   */
  math?: MathMode;
  /** @internal Record the native call into this sequence instead of making it (Model.run). */
  sequence?: OpSequence;
}

/** x [N, in] and weight [out, in] (a Tensor, or a BF16Matrix where `bf16` allows), checked together. */
function operands(fn: string, x: unknown, weight: unknown, bf16 = false) {
  const X = matrix(fn, x, 'x');
  if (weight instanceof BF16Matrix && !bf16) fail(`${fn}: weight is a BF16Matrix, which is for inference (sp.linear) only; pass the float32 weight`);
  const Wt = weight instanceof BF16Matrix ? { s: weight.storage(fn, 'weight'), shape: weight.shape } : (({ t, s }) => ({ s, shape: t.shape }))(matrix(fn, weight, 'weight'));
  const [rows, inF] = X.t.shape, [outF, inW] = Wt.shape;
  if (inW !== inF) fail(`${fn}: weight axis 1 (in features) is ${inW}, x axis 1 is ${inF}`);
  sameDevice(fn, 'weight', Wt.s.device, 'x', X.s.device);
  return { X, Wt, rows, inF, outF, device: X.s.device, weightBf16: weight instanceof BF16Matrix };
}

/**
 * y = x . weight^T + bias: x [N, in], weight [out, in] (PyTorch's nn.Linear layout; a Tensor, or a
 * BF16Matrix from sp.toBF16: bfloat16 weights, FP32 products and sums), bias [out] or null.
 */
export async function linear(x: Tensor, weight: Tensor | BF16Matrix, bias?: Tensor | null, opts?: LinearOptions): Promise<Tensor> {
  return linearAs(x, weight, bias, opts, null);
}

/**
 * @internal linear with `cache(floats)` giving a Float32Array of that length kept for this layer
 * between calls (a model's), where the CPU's AMX path keeps the packed weights (none: as linear).
 */
export async function linearCached(x: Tensor, weight: Tensor | BF16Matrix, bias: Tensor | null | undefined, opts: LinearOptions | undefined, cache: ((floats: number) => Float32Array) | undefined): Promise<Tensor> {
  return linearAs(x, weight, bias, opts, null, cache);
}

/** @internal linear with the ConvMath code `forced` instead of the mode's (the tensor-core check). */
export async function linearAs(x: Tensor, weight: Tensor | BF16Matrix, bias: Tensor | null | undefined, opts: LinearOptions | undefined, forced: number | null,
  cache?: (floats: number) => Float32Array): Promise<Tensor> {
  const fn = 'sp.linear';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  const mode = callMath(fn, o.math, 'linear');
  const { X, Wt, rows, inF, outF, device, weightBf16 } = operands(fn, x, weight, true);
  const bs = checkBias(fn, bias, outF, 'x', device);
  if (rows * outF > MAX_ELEMENTS) fail(`${fn}: the output [${rows}, ${outF}] would exceed 2^31-1 elements`);
  const o2 = tensorOut(fn, o.out, [rows, outF], device);
  const code = forced ?? (await kernelMath(device, mode));
  const shape = { rows, inFeatures: inF, outFeatures: outF, math: code, weightBf16 };
  // The native side says whether its AMX path takes this call (and the cache's size).
  const floats = cache && device === 'cpu' ? native.linearCacheFloats(shape) : 0;
  await settle(site, fn, [o2], () =>
    callOp(sequenceOf(o), 'linear', argsOf(
      nativeBuf('input', X.s), nativeBuf('output', o2.out.storage(fn, 'the output')), nativeBuf('weight', Wt.s),
      bs ? nativeBuf('bias', bs) : {}, shape, { relu: o.relu === true },
      floats > 0 ? { weightCache: cache!(floats) } : {},
    )),
  );
  return o2.out;
}

/** Gradients of linear (no fused ReLU): x [N, in], weight [out, in], gradOutput [N, out]. */
export async function linearBackward(x: Tensor, weight: Tensor, gradOutput: Tensor, opts?: { needInputGrad?: boolean; bias?: boolean; /** @internal */ into?: GradInto }): Promise<ParamGrads<Tensor>> {
  const fn = 'sp.linearBackward';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const { X, Wt, rows, inF, outF, device } = operands(fn, x, weight);
  const G = matrix(fn, gradOutput, 'gradOutput');
  if (G.t.shape[0] !== rows) fail(`${fn}: gradOutput axis 0 (rows) is ${G.t.shape[0]}, expected ${rows} (x axis 0)`);
  if (G.t.shape[1] !== outF) fail(`${fn}: gradOutput axis 1 (out features) is ${G.t.shape[1]}, expected ${outF} (weight axis 0)`);
  sameDevice(fn, 'gradOutput', G.s.device, 'x', device);
  const needInput = booleanOption(fn, o, 'needInputGrad', true);
  const hasBias = booleanOption(fn, o, 'bias', true);
  const gradInput = needInput ? allocate([rows, inF], device, fn) : undefined;
  const into = o.into as GradInto | undefined;
  const gw = gradTensor(fn, into?.weight, [outF, inF], device);
  const gb = hasBias ? gradTensor(fn, into?.bias, [outF], device) : undefined;
  const gradWeight = gw.t, gradBias = gb?.t;
  const owned = [gradInput, gw.owned ? gradWeight : undefined, gb?.owned ? gradBias : undefined].filter((t): t is Tensor => t !== undefined);
  await settle(site, fn, owned, () =>
    native.linearBackward({
      ...nativeBuf('input', X.s), ...nativeBuf('weight', Wt.s), ...nativeBuf('gradOutput', G.s),
      ...nativeBuf('gradWeight', gradWeight.storage(fn, 'gradWeight')),
      ...(gradInput ? nativeBuf('gradInput', gradInput.storage(fn, 'gradInput')) : {}),
      ...(gradBias ? nativeBuf('gradBias', gradBias.storage(fn, 'gradBias')) : {}),
      rows, inFeatures: inF, outFeatures: outF,
    }),
  );
  return paramGrads(gradWeight, gradInput, gradBias);
}
