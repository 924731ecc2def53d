// 2-D convolution on ragged batches and dense tensors, forward and backward: PyTorch's conv2d per
// map (each map keeps its own output size), one native call for the whole batch.
import { Device, kernelMath } from '../core/backend';
import { allocateAs, booleanOption, checkBias, checkOpts, checkOutputSizes, checkSpatialLike, outputFor, Pair, pair, sameDevice, settle } from '../core/checks';
import { CallSite, describe, fail, isPositiveInt, SppnetError } from '../core/errors';
import { callMath, MathMode } from '../core/math';
import { argsOf, native, NativeConvParams, NativeConvShape } from '../core/native';
import { callOp, OpSequence, sequenceOf } from '../core/sequence';
import { ChannelSlice, nativeLayout, Spatial, spatialLayout, SpatialLayout } from '../core/spatial';
import { allocate, nativeBuf, Tensor } from '../core/tensor';

/** Output side of a convolution along one axis (PyTorch's formula). */
export function convOutSide(a: number, k: number, s: number, p: number, d: number): number {
  return Math.floor((a + 2 * p - d * (k - 1) - 1) / s) + 1;
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
  /** CUDA only: how to multiply (default sp.getMath().conv, 'tf32'); the CPU computes in FP32 (bf16x3 on AMX tiles under SPPNET_AMX=1: README). */
  math?: MathMode;
  /** @internal Record the native call into this sequence instead of making it (Model.run). */
  sequence?: OpSequence;
}

/**
 * Checks a conv weight against the input and the stride/padding/dilation/groups
 * options, and gives the geometry and every map's output size (conv2d and its backward).
 */
function convGeometry(fn: string, L: SpatialLayout, weight: Tensor, o: { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number }) {
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
  sameDevice(fn, 'weight', weight.device, 'the input', L.device);
  const [sh, sw] = pair(fn, 'options.stride', o.stride, [1, 1], 1);
  const [ph, pw] = pair(fn, 'options.padding', o.padding, [0, 0], 0);
  const [dh, dw] = pair(fn, 'options.dilation', o.dilation, [1, 1], 1);
  const outSizes = L.sizes.map(([h, w]) => [convOutSide(h, kh, sh, ph, dh), convOutSide(w, kw, sw, pw, dw)] as const);
  checkOutputSizes(fn, outSizes, cout, (i) =>
    `map ${i} of size ${L.sizes[i][0]}x${L.sizes[i][1]} (HxW) is too small for kernel ${kh}x${kw} with padding ${ph}x${pw} and dilation ${dh}x${dw}: the output would be ${outSizes[i][0]}x${outSizes[i][1]}`);
  const conv: NativeConvParams = {
    inChannels: L.channels, outChannels: cout, kernelH: kh, kernelW: kw, strideH: sh, strideW: sw, padH: ph, padW: pw, dilationH: dh, dilationW: dw, groups,
  };
  return { ws, cout, outSizes, conv };
}

/**
 * 2-D convolution, PyTorch's conv2d: weight [out, in/groups, kh, kw], bias [out] or null.
 * Returns the input's kind: a RaggedBatch (each map its own output size), [N, out, Ho, Wo] or [out, Ho, Wo].
 */
export async function conv2d<T extends Spatial>(input: T, weight: Tensor, bias?: Tensor | null, opts?: Conv2dOptions): Promise<T> {
  return conv2dAs(input, weight, bias, opts, null);
}

/** @internal conv2d's options, where `out` may also be a channel slice of a larger output (Model.run's in-place concat, CPU). */
export type InternalConv2dOptions = Omit<Conv2dOptions, 'out'> & { out?: Spatial | ChannelSlice };

/**
 * @internal conv2d where the CPU's Winograd or direct path, when it takes the call, keeps the layer's
 * transformed or packed filters between calls in a buffer of `floats` floats that `cache(floats)` returns
 * (the same one for the same size; a zeroed new one whenever the weights may have changed). Only
 * for weights that nothing changes behind the caller's back (a Model's).
 */
export async function conv2dCached<T extends Spatial>(input: T, weight: Tensor, bias: Tensor | null | undefined, opts: InternalConv2dOptions,
  cache: (floats: number) => Float32Array): Promise<T> {
  return conv2dAs(input, weight, bias, opts, null, cache);
}

/** @internal conv2d with the ConvMath code `forced` instead of the mode's (the tensor-core check). */
export async function conv2dAs<T extends Spatial>(input: T, weight: Tensor, bias: Tensor | null | undefined, opts: InternalConv2dOptions | undefined, forced: number | null,
  cache?: (floats: number) => Float32Array): Promise<T> {
  const fn = 'sp.conv2d';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  const mode = callMath(fn, o.math, 'conv');
  const L = spatialLayout(fn, input);
  const { ws, cout, outSizes, conv } = convGeometry(fn, L, weight, o);
  const bs = checkBias(fn, bias, cout, 'the input', L.device);
  const o2 = outputFor(fn, o.out, L.kind, L.device, cout, outSizes, true);
  const code = forced ?? (await kernelMath(L.device, mode));
  const outOffsets = o2.out instanceof ChannelSlice ? o2.out.offsets : undefined;
  const shape: NativeConvShape = argsOf(nativeLayout('out', cout, outSizes, outOffsets), { conv: { ...conv, math: code }, relu: o.relu === true });
  // The native side says whether its Winograd or direct path takes this call (and the cache's size).
  const floats = cache && L.device === 'cpu' ? native.convCacheFloats(shape) : 0;
  await settle(site, fn, o2.owned ? [o2.out as Spatial] : [], () =>
    callOp(sequenceOf(o), 'conv2d', argsOf(
      nativeBuf('input', L.store), nativeBuf('output', o2.out.storage(fn, 'the output')), nativeBuf('weight', ws),
      bs ? nativeBuf('bias', bs) : {},
      nativeLayout('in', L.channels, L.sizes, L.offsets), shape,
      floats > 0 ? { filterCache: cache!(floats) } : {},
    )),
  );
  return o2.out as T;
}

export interface Conv2dBackwardOptions extends Omit<Conv2dOptions, 'out'> {
  /** Compute gradInput (default true; the first layer skips it). */
  needInputGrad?: boolean;
  /** The layer has a bias: compute gradBias (default true). */
  bias?: boolean;
  /** @internal Write gradWeight / gradBias into these (a model's, kept between steps; their shapes) instead of new tensors. */
  into?: GradInto;
}

/** @internal Where a backward writes its parameters' gradients (Model.trainStep's kept buffers). */
export interface GradInto {
  weight?: Tensor;
  bias?: Tensor;
}

/** @internal The gradient tensor of `shape`: `given` (checked) or a new one, and whether it is the caller's to free on failure. */
export function gradTensor(fn: string, given: Tensor | undefined, shape: readonly number[], device: Device): { t: Tensor; owned: boolean } {
  if (given === undefined) return { t: allocate(shape, device, fn), owned: true };
  if (!(given instanceof Tensor) || given.device !== device || given.shape.length !== shape.length || given.shape.some((d, i) => d !== shape[i]))
    throw new SppnetError(`${fn}: a kept gradient of shape [${given.shape}] on ${given.device} for [${shape}] on ${device}`, 'SPPNET_INTERNAL');
  return { t: given, owned: false };
}

export interface ParamGrads<T> {
  gradInput?: T;
  gradWeight: Tensor;
  gradBias?: Tensor;
}

/** @internal The gradients an op with parameters computed, without the absent ones. */
export function paramGrads<T>(gradWeight: Tensor, gradInput: T | undefined, gradBias: Tensor | undefined): ParamGrads<T> {
  const res: ParamGrads<T> = { gradWeight };
  if (gradInput) res.gradInput = gradInput;
  if (gradBias) res.gradBias = gradBias;
  return res;
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
  const { ws, cout, outSizes, conv } = convGeometry(fn, L, weight, o);
  const needInput = booleanOption(fn, o, 'needInputGrad', true);
  const hasBias = booleanOption(fn, o, 'bias', true);
  const gs = checkSpatialLike(fn, 'gradOutput', L, gradOutput, cout, outSizes, 'the forward output');
  const gradInput = needInput ? allocateAs(input, fn) : undefined;
  const into = o.into as GradInto | undefined;
  const gw = gradTensor(fn, into?.weight, weight.shape, L.device);
  const gb = hasBias ? gradTensor(fn, into?.bias, [cout], L.device) : undefined;
  const gradWeight = gw.t, gradBias = gb?.t;
  const owned = [gradInput, gw.owned ? gradWeight : undefined, gb?.owned ? gradBias : undefined].filter((t): t is NonNullable<typeof t> => t !== undefined);
  await settle(site, fn, owned, () =>
    native.conv2dBackward({
      ...nativeBuf('input', L.store), ...nativeBuf('weight', ws), ...nativeBuf('gradOutput', gs),
      ...nativeBuf('gradWeight', gradWeight.storage(fn, 'gradWeight')),
      ...(gradInput ? nativeBuf('gradInput', gradInput.storage(fn, 'gradInput')) : {}),
      ...(gradBias ? nativeBuf('gradBias', gradBias.storage(fn, 'gradBias')) : {}),
      ...nativeLayout('in', L.channels, L.sizes, L.offsets), ...nativeLayout('out', cout, outSizes),
      conv,
    }),
  );
  return paramGrads(gradWeight, gradInput, gradBias);
}
