// Local response normalisation across channels (PyTorch's local_response_norm), forward and backward.
import { allocateAs, checkOpts, checkSpatialLike, outputFor, positiveInt32, settle } from '../core/checks';
import { CallSite, describe, fail } from '../core/errors';
import { argsOf, native, NativeLrnParams } from '../core/native';
import { callOp, OpSequence, sequenceOf } from '../core/sequence';
import { nativeLayout, Spatial, spatialLayout } from '../core/spatial';
import { nativeBuf } from '../core/tensor';

export interface LrnOptions {
  size: number;
  alpha?: number;
  beta?: number;
  k?: number;
  /**
   * 'across' (default): across size neighbouring channels, PyTorch's local_response_norm (Caffe's
   * ACROSS_CHANNELS). 'within': Caffe's WITHIN_CHANNEL, a size x size window in each map's own
   * plane, x / (k + alpha/size^2 * sum of squares)^beta (size odd; Caffe's k is 1).
   */
  region?: 'across' | 'within';
  out?: Spatial;
  /** @internal Record the native call into this sequence instead of making it (Model.run). */
  sequence?: OpSequence;
}

/** @internal Checked LRN parameters (PyTorch's defaults); `prefix` names where o sits, for messages. */
export function lrnParams(fn: string, o: Record<string, unknown>, prefix = 'options'): NativeLrnParams {
  const size = positiveInt32(fn, prefix, 'size', o.size);
  const num = (name: string, d: number) => {
    const v = o[name] === undefined ? d : o[name];
    if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${fn}: ${prefix}.${name} must be a finite number, got ${describe(v)}`);
    return v;
  };
  const region = o.region ?? 'across';
  if (region !== 'across' && region !== 'within') fail(`${fn}: ${prefix}.region must be 'across' or 'within', got ${describe(o.region)}`);
  if (region === 'within' && size % 2 === 0) fail(`${fn}: ${prefix}.size must be odd with region 'within' (a window centred on each pixel, as Caffe's), got ${size}`);
  return { size, alpha: num('alpha', 1e-4), beta: num('beta', 0.75), k: num('k', 1), within: region === 'within' };
}

/** PyTorch's local_response_norm across channels: x / (k + alpha/size * sum of squares over size channels)^beta; or Caffe's WITHIN_CHANNEL (options.region). */
export async function localResponseNorm<T extends Spatial>(input: T, opts: LrnOptions): Promise<T> {
  const fn = 'sp.localResponseNorm';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  const lp = lrnParams(fn, o);
  const o2 = outputFor(fn, o.out, L.kind, L.device, L.channels, L.sizes);
  await settle(site, fn, [o2], () =>
    callOp(sequenceOf(o), 'lrn', argsOf(
      nativeBuf('input', L.store), nativeBuf('output', o2.out.storage(fn, 'the output')),
      nativeLayout('in', L.channels, L.sizes, L.offsets), lp,
    )),
  );
  return o2.out as T;
}

/** Gradient of localResponseNorm (PyTorch's local_response_norm), from the forward input. */
export async function localResponseNormBackward<T extends Spatial>(input: T, gradOutput: T, opts: LrnOptions): Promise<T> {
  const fn = 'sp.localResponseNormBackward';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const L = spatialLayout(fn, input);
  const lp = lrnParams(fn, o);
  const gs = checkSpatialLike(fn, 'gradOutput', L, gradOutput, L.channels, L.sizes, 'the forward output');
  const out = allocateAs(input, fn);
  await settle(site, fn, [out], () =>
    native.lrnBackward({
      ...nativeBuf('input', L.store), ...nativeBuf('gradOutput', gs), ...nativeBuf('gradInput', out.storage(fn, 'gradInput')),
      ...nativeLayout('in', L.channels, L.sizes, L.offsets), ...lp,
    }),
  );
  return out;
}
