// The compiled addon, typed. Only lib/ talks to it; users never see these shapes.
/* eslint-disable @typescript-eslint/no-var-requires */

export interface NativeDeviceBuffer {
  readonly length: number;
  readonly freed: boolean;
  free(): void;
}

export interface NativeCudaInfo {
  built: boolean;
  deviceCount: number;
  runtimeVersion: number;
  driverVersion: number;
  error: string;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalMemory: number;
  archs: string;
}

export interface NativeInfo {
  cuda: NativeCudaInfo;
  cpu: { isa: string; threads: number; bf16: boolean; settings: Record<string, number> };
}

export type NativeFloats = Float32Array | NativeDeviceBuffer;

export interface NativeSppArgs {
  input: NativeFloats;
  inputOffset: number;
  offsets: Float64Array;
  heights: Int32Array;
  widths: Int32Array;
  channels: number;
  total: number;
  regions: Int32Array;
  levels: Int32Array;
  rule: number;
  pool: number;
  output: NativeFloats;
  outputOffset: number;
  gradOutput?: NativeFloats;
  gradOutputOffset?: number;
}

/** A float buffer argument `N` and its element offset `NOffset`. */
export type NativeBuf<N extends string> = { [K in N]: NativeFloats } & { [K in `${N}Offset`]: number };
/** The maps of a spatial argument under a prefix: `PChannels`, and per map `POffsets`, `PHeights`, `PWidths`. */
export type NativeLayout<P extends string> = { [K in `${P}Offsets`]: Float64Array } & { [K in `${P}Heights` | `${P}Widths`]: Int32Array } & { [K in `${P}Channels`]: number };
type In<N extends string> = NativeLayout<N>;

type Intersection<U> = (U extends unknown ? (k: U) => void : never) extends (k: infer I) => void ? I : never;

/**
 * One native argument object from parts (nativeBuf, nativeLayout, literals), their properties
 * copied in order. Cheaper than spreading the parts into a literal: V8 builds each spread of
 * these computed-key objects property by property with new hidden classes (about 15 us and 8 KB
 * of garbage for a conv's arguments, against about 1.5 us here: bench/RESULTS.md, "The cost of
 * a Model.run step"). Op calls that Model.run makes use it.
 */
export function argsOf<T extends object[]>(...parts: T): Intersection<T[number]> {
  const o: Record<string, unknown> = {};
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i] as Record<string, unknown>;
    for (const k in p) o[k] = p[k];
  }
  return o as Intersection<T[number]>;
}

/** Property names built from a prefix, made once per prefix (interned strings, not a new string per call). */
export function keyNames<K extends readonly string[]>(cache: Map<string, K>, prefix: string, make: (p: string) => K): K {
  let k = cache.get(prefix);
  if (!k) cache.set(prefix, (k = make(prefix)));
  return k;
}

/** Max pooling's window (binding/common.cpp's pool_params reads it into Pool2dParams). */
export interface NativePoolParams { kernelH: number; kernelW: number; strideH: number; strideW: number; padH: number; padW: number }
/** A convolution's geometry (conv_params reads it into Conv2dParams); math: a ConvMath code, forward only. */
export interface NativeConvParams {
  inChannels: number; outChannels: number; kernelH: number; kernelW: number; strideH: number; strideW: number;
  padH: number; padW: number; dilationH: number; dilationW: number; groups: number; math?: number;
}
/** within: Caffe's WITHIN_CHANNEL (a size x size window in the plane) instead of across channels. */
export interface NativeLrnParams { size: number; alpha: number; beta: number; k: number; within: boolean }

export type NativeConvShape = NativeLayout<'out'> & { conv: NativeConvParams; relu: boolean };
export type NativeConvArgs = NativeBuf<'input'> & NativeBuf<'output'> & NativeBuf<'weight'> & Partial<NativeBuf<'bias'>> & In<'in'> & NativeConvShape & { filterCache?: Float32Array };
export type NativePoolArgs = NativeBuf<'input'> & NativeBuf<'output'> & In<'in'> & NativeLayout<'out'> & { pool: NativePoolParams };
export type NativeLrnArgs = NativeBuf<'input'> & NativeBuf<'output'> & In<'in'> & NativeLrnParams;
export type NativeLinearArgs = NativeBuf<'input'> & NativeBuf<'output'> & NativeBuf<'weight'> & Partial<NativeBuf<'bias'>> &
  NativeLinearShape & { relu: boolean; /** the CPU AMX path's packed weights, kept between calls (linearCacheFloats of them) */ weightCache?: Float32Array };
export type NativeLinearShape = { rows: number; inFeatures: number; outFeatures: number; math: number; /** weight holds bfloat16 bits, two to a float */ weightBf16?: boolean };
export type NativeCopyChannelsArgs = NativeBuf<'part'> & NativeBuf<'whole'> & In<'in'> & NativeLayout<'out'> & { channelOffset: number; toWhole: boolean };
export type NativeChannelSumsArgs = NativeBuf<'u'> & Partial<NativeBuf<'v'>> & In<'in'> & { sums: Float64Array };
export type NativeChannelAffineArgs = NativeBuf<'u'> & Partial<NativeBuf<'v'>> & NativeBuf<'output'> & In<'in'> & { a: Float32Array; b?: Float32Array; d: Float32Array; relu: boolean };
export type NativeNmsArgs = NativeBuf<'boxes'> & NativeBuf<'scores'> & Partial<NativeBuf<'classes'>> & { n: number; iou: number; keep: Int32Array; kept: Int32Array };
export type NativeCropResizeArgs = NativeBuf<'input'> & NativeBuf<'boxes'> & NativeBuf<'output'> & In<'in'> &
  { k: number; outH: number; outW: number; context: number; align: number };
export type NativeElementwiseArgs = NativeBuf<'input'> & NativeBuf<'output'> & { op: 'relu' | 'softmax'; rows: number; cols: number };
type ParamGradBufs = NativeBuf<'gradWeight'> & Partial<NativeBuf<'gradInput'>> & Partial<NativeBuf<'gradBias'>>;
export type NativeConvBackwardArgs = NativeBuf<'input'> & NativeBuf<'weight'> & NativeBuf<'gradOutput'> & ParamGradBufs &
  In<'in'> & NativeLayout<'out'> & { conv: NativeConvParams };
export type NativePoolBackwardArgs = NativeBuf<'input'> & NativeBuf<'gradOutput'> & NativeBuf<'gradInput'> & In<'in'> & NativeLayout<'out'> & { pool: NativePoolParams };
export type NativeLrnBackwardArgs = NativeBuf<'input'> & NativeBuf<'gradOutput'> & NativeBuf<'gradInput'> & In<'in'> & NativeLrnParams;
export type NativeLinearBackwardArgs = NativeBuf<'input'> & NativeBuf<'weight'> & NativeBuf<'gradOutput'> & ParamGradBufs &
  { rows: number; inFeatures: number; outFeatures: number };
export type NativePointwiseArgs = NativeBuf<'a'> & NativeBuf<'b'> & NativeBuf<'output'> & { op: 'reluBackward' | 'multiply'; n: number };
export type NativeDropoutArgs = NativeBuf<'input'> & NativeBuf<'output'> & NativeBuf<'mask'> & { n: number; seed: number; threshold: number; scale: number };
export type NativeCrossEntropyArgs = NativeBuf<'logits'> & NativeBuf<'grad'> & { rows: number; cols: number; labels: Int32Array; rowLoss: Float64Array; rowCorrect: Int32Array };
export type NativeSgdArgs = NativeBuf<'param'> & NativeBuf<'grad'> & Partial<NativeBuf<'buf'>> &
  { n: number; lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean; firstStep: boolean };
export type NativeAdamArgs = NativeBuf<'param'> & NativeBuf<'grad'> & NativeBuf<'m'> & NativeBuf<'v'> &
  { n: number; lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; decoupled: boolean; stepSize: number; biasCorrection2Sqrt: number };

/** The C++ enums' values by name (binding/addon.cpp builds them from the headers). */
export interface NativeEnums {
  binRule: Readonly<Record<'adaptive' | 'paper' | 'caffe', number>>;
  binCheck: Readonly<Record<'ok' | 'badArgs' | 'zeroStride' | 'empty' | 'countMismatch', number>>;
  poolKind: Readonly<Record<'max' | 'avg', number>>;
  cropAlign: Readonly<Record<'pixels' | 'corners', number>>;
  convMath: Readonly<Record<'tf32' | 'bf16' | 'fp32' | 'direct', number>>;
  maxLevels: number;
  /** Bytes from which a host tensor's memory comes from the addon on huge pages (binding/host.cpp). */
  hostHugeAtLeast: number;
  /** The most bytes hostAlloc gives (an ArrayBuffer Node 20 wraps); larger tensors come from V8. */
  hostAllocMax: number;
  /** The rows of x from which the CPU's linear with math 'bf16' takes BF16 products (where it has them). */
  bf16ProductRows: Readonly<Record<'fp32Weights' | 'bf16Weights', number>>;
}

export interface Native {
  enums: NativeEnums;
  DeviceBuffer: new (length: number) => NativeDeviceBuffer;
  info(): NativeInfo;
  /** Whether math 'bf16' takes AMX tiles in this process (asks Linux for the tile state if not yet asked; cpu_info.h). */
  amxProductsGranted(): boolean;
  cpuPeak(threads: number, seconds: number, out: Float64Array): Promise<void>;
  /** SPPNET_CUDA_KERNEL_TIMES=1: GPU time per kernel since the load, { [kernel]: [launches, ms] }; else null */
  kernelTimes(): Record<string, [number, number]> | null;
  memoryStats(): { deviceBuffers: number; deviceBytes: number; /** ops run inline on the JS thread / queued (binding/common.h, InlineState) */ opsInline: number; opsQueued: number; /** ns spent inside CPU ops (on the executor, and inline) */ cpuOpNs: number; /** ns spent on the CUDA executor (launches, the GPU's work, each task's stream sync) */ cudaOpNs: number; /** host memory kept for reuse (hostRecycle), and the allocations it served */ hostCacheBytes: number; hostCacheReused: number; deviceFree?: number; deviceTotal?: number; devicePoolReserved?: number; devicePoolUsed?: number };
  trimDeviceMemory(): void;
  cudaUpload(dst: NativeDeviceBuffer, dstOffset: number, src: Float32Array): void;
  cudaCopy(dst: NativeDeviceBuffer, dstOffset: number, src: NativeDeviceBuffer, srcOffset: number, n: number): void;
  /** n floats from src to dst (host arrays or device buffers, in any pair) as an op: after the ops called before it. */
  copy(dst: Float32Array | NativeDeviceBuffer, dstOffset: number, src: Float32Array | NativeDeviceBuffer, srcOffset: number, n: number): Promise<void>;
  /** Copies inputs[i] to output at offsets[i], on a libuv thread. */
  gatherFloats(args: { output: Float32Array; inputs: Float32Array[]; offsets: Float64Array }): Promise<void>;
  /**
   * Host memory (binding/host.cpp), zeroed unless `zero` is false (then a block reused from the
   * cache keeps what it held; new memory is zero anyway): given back by hostRecycle (to the addon's cache of
   * blocks for reuse) or hostFree (to the system), each detaching the buffer, or when the
   * ArrayBuffer is collected; a block a queued op uses goes back when the op is over. Both return
   * false, and do nothing, for a buffer that is not hostAlloc's.
   */
  hostAlloc(bytes: number, zero?: boolean): ArrayBuffer;
  hostFree(buffer: ArrayBuffer): boolean;
  hostRecycle(buffer: ArrayBuffer): boolean;
  /** Empties the host cache and gives the C library's free heap memory back to the system (glibc), off the event loop. */
  trimHostMemory(): Promise<void>;
  /** output[c][y][x] = input[y][x][c] * scale[c] + bias[c], on a libuv thread. */
  pixelsToPlanar(args: { input: Uint8Array; height: number; width: number; channels: number; scale: Float32Array; bias: Float32Array; output: Float32Array }): Promise<void>;
  binCheck(rule: number, n: number, a: number): number;
  sppForward(args: NativeSppArgs): Promise<void>;
  sppBackward(args: NativeSppArgs): Promise<void>;
  conv2d(args: NativeConvArgs): Promise<void>;
  /** Floats of the CPU Winograd path's filter cache for this conv, or 0 when that path does not take it. */
  convCacheFloats(args: NativeConvShape): number;
  maxPool2d(args: NativePoolArgs): Promise<void>;
  lrn(args: NativeLrnArgs): Promise<void>;
  lrnMaxPool2d(args: NativePoolArgs & NativeLrnParams): Promise<void>;
  linear(args: NativeLinearArgs): Promise<void>;
  /** Floats of the CPU AMX path's weight cache for this linear call, or 0 when that path does not take it. */
  linearCacheFloats(args: NativeLinearShape): number;
  elementwise(args: NativeElementwiseArgs): Promise<void>;
  /** Part's maps to or from channels [channelOffset, ...) of whole's (concat along channels, and its gradient). */
  copyChannels(args: NativeCopyChannelsArgs): Promise<void>;
  /** Per (map, channel) plane: the sums of u and u * v (v absent: u * u), float64, into sums (2 per plane). */
  channelSums(args: NativeChannelSumsArgs): Promise<void>;
  /** y = a u + b v + d per channel (then ReLU when relu). */
  channelAffine(args: NativeChannelAffineArgs): Promise<void>;
  /** NMS of n boxes (batched when classes is given): the kept indices into keep, their count into kept[0]. */
  nms(args: NativeNmsArgs): Promise<void>;
  /** k windows of the input maps (boxes [k, 5], checked natively) bilinearly warped to [k, C, outH, outW]. */
  cropResize(args: NativeCropResizeArgs): Promise<void>;
  /** Selective search of raw RGB (include/sppnet/proposals.h), on a libuv thread: 4 ints a box (x1, y1, x2, y2), best first. */
  proposals(args: { data: Uint8Array; width: number; height: number; fast: boolean; ks: Float64Array; sigma: number; minSide: number; maxBoxes: number; seed: number }): Promise<Int32Array>;
  /** Felzenszwalb-Huttenlocher segmentation of raw RGB in a colour space (0 HSV, 1 Lab, 2 RGB): each pixel's label (tests). */
  segmentImage(args: { data: Uint8Array; width: number; height: number; space: number; sigma: number; k: number; minSize: number }): Promise<Int32Array>;
  conv2dBackward(args: NativeConvBackwardArgs): Promise<void>;
  maxPool2dBackward(args: NativePoolBackwardArgs): Promise<void>;
  lrnBackward(args: NativeLrnBackwardArgs): Promise<void>;
  linearBackward(args: NativeLinearBackwardArgs): Promise<void>;
  pointwise(args: NativePointwiseArgs): Promise<void>;
  dropout(args: NativeDropoutArgs): Promise<void>;
  softmaxCrossEntropy(args: NativeCrossEntropyArgs): Promise<void>;
  sgdStep(args: NativeSgdArgs): Promise<void>;
  adamStep(args: NativeAdamArgs): Promise<void>;
  /**
   * [fn0, args0, fn1, args1, ...]: op entry points of this addon and their arguments, run as one
   * task in that order (lib/core/sequence.ts); a plan of compileSequence in place of fn (args
   * undefined) runs its steps there.
   */
  runSequence(steps: unknown[]): Promise<void>;
  /**
   * The steps as runSequence takes them, made into tasks once and kept (nothing runs): a plan for
   * runSequence. `timed`: each run of it times each step (planTimes reads the sums).
   */
  compileSequence(steps: unknown[], timed?: boolean): NativePlan;
  /** A timed plan's [runs, ms of step 0, ms of step 1, ...] (totals over its runs); undefined if not timed. */
  planTimes(plan: NativePlan): Float64Array | undefined;
  /** Drops a plan's tasks and what they hold (device memory included) now; it must not run again. */
  releasePlan(plan: NativePlan): void;
  /** CPU and CUDA ops queued and not started are not run: their promises reject (SPPNET_UNAVAILABLE). At exit. */
  cancelQueued(): void;
}

/** A compiled op sequence (binding/common.cpp, SequencePlan): what it reads and writes is fixed. */
export interface NativePlan {
  readonly __nativePlan: unique symbol;
}

const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => unknown;
const path = require('path') as typeof import('path');

// SPPNET_CUDA_EMULATOR=1 loads sppnet_emu.node instead: the same binding with cuda/*.cu compiled
// for the CPU against tools/emu's model of the CUDA runtime, whose one "device" runs every CUDA
// kernel on the CPU (slowly, one fiber per CUDA thread). For tests of the CUDA path without a GPU.
const addon = process.env.SPPNET_CUDA_EMULATOR === '1' ? 'sppnet_emu' : 'sppnet';
export const native = bindings({ bindings: addon, module_root: path.resolve(__dirname, '..', '..') }) as Native;
// process.exit() (or the end of the event loop) waits for libuv's threads, and each of those
// waits for the op (CPU or CUDA) it took: without this, for every op queued behind the one
// running (40 queued convolutions: 12 s). A worker's terminate() does the same through the addon's cleanup hook.
process.once('exit', () => native.cancelQueued());
