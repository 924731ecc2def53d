// sp.proposals: selective search in its "fast mode" (Uijlings et al., IJCV 2013), the region
// proposals R-CNN and SPP-net use, computed by our own C++ (include/sppnet/proposals.h says how:
// segmentation, grouping, ranking) on a libuv thread, on the CPU whatever the backend.
import { checkOpts } from '../core/checks';
import { CallSite, describe, fail, isPositiveInt, overLimit } from '../core/errors';
import { native } from '../core/native';
import { decodeRgb, describeSource, probeImage } from '../io/images';

export interface ProposalOptions {
  /** 'fast' (default): HSV and Lab x ks x two similarity strategies (8 hierarchies); 'single': HSV x ks, colour + texture + size + fill. */
  mode?: 'fast' | 'single';
  /** The segmentations' k (each also its minimum component size); default [50, 100] ('fast'), [100] ('single'). */
  ks?: number[];
  /** Gaussian smoothing before segmentation (default 0.8). */
  sigma?: number;
  /** Boxes narrower or shorter than this many pixels are dropped (default 20, as R-CNN). */
  minSide?: number;
  /** At most this many boxes, best ranked first (default 10,000). */
  maxBoxes?: number;
  /** The ranking's random seed (default 0): the same image, options and seed give the same boxes. */
  seed?: number;
  /** Refuse images with more pixels than this (default 4,000,000): SPPNET_TOO_LARGE. */
  maxPixels?: number;
}

export interface Proposals {
  /** count x 4 floats: x1, y1, x2, y2, 0-based inclusive pixel indices (integers), best ranked first. */
  boxes: Float32Array;
  count: number;
  /** The image's size (after EXIF rotation, for a decoded image). */
  width: number;
  height: number;
  /** Wall time of the call, decoding included. */
  seconds: number;
}

export type ProposalImage = string | Uint8Array | { data: Uint8Array; width: number; height: number };

export const PROPOSALS_DEFAULT_MAX_PIXELS = 4_000_000;
const FN = 'sp.proposals';
const OPTIONS = ['mode', 'ks', 'sigma', 'minSide', 'maxBoxes', 'seed', 'maxPixels'];

interface Checked {
  fast: boolean;
  ks: number[];
  sigma: number;
  minSide: number;
  maxBoxes: number;
  seed: number;
  maxPixels: number;
}

function checkOptions(options: unknown): Checked {
  const o = checkOpts(FN, options);
  for (const key of Object.keys(o))
    if (!OPTIONS.includes(key)) fail(`${FN}: options.${key} is not an option (they are ${OPTIONS.join(', ')})`);
  const mode = o.mode ?? 'fast';
  if (mode !== 'fast' && mode !== 'single') fail(`${FN}: options.mode must be 'fast' or 'single', got ${describe(o.mode)}`);
  const ks = o.ks ?? (mode === 'fast' ? [50, 100] : [100]);
  if (!Array.isArray(ks) || ks.length < 1 || ks.length > 8 || !ks.every((k) => Number.isInteger(k) && k >= 1 && k <= 1e6))
    fail(`${FN}: options.ks must be 1 to 8 integers in [1, 1000000], got ${describe(o.ks)}`);
  const int = (name: string, dflt: number, lo: number, hi: number) => {
    const v = o[name] ?? dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) fail(`${FN}: options.${name} must be an integer in [${lo}, ${hi}], got ${describe(o[name])}`);
    return v;
  };
  const sigma = o.sigma ?? 0.8;
  if (typeof sigma !== 'number' || !Number.isFinite(sigma) || sigma < 0 || sigma > 10) fail(`${FN}: options.sigma must be a number in [0, 10], got ${describe(o.sigma)}`);
  const maxPixels = o.maxPixels ?? PROPOSALS_DEFAULT_MAX_PIXELS;
  if (!isPositiveInt(maxPixels)) fail(`${FN}: options.maxPixels must be a positive integer, got ${describe(o.maxPixels)}`);
  return {
    fast: mode === 'fast',
    ks: ks as number[],
    sigma,
    minSide: int('minSide', 20, 0, 2 ** 31 - 1),
    maxBoxes: int('maxBoxes', 10000, 1, 2 ** 31 - 1),
    seed: int('seed', 0, 0, 2 ** 32 - 1),
    maxPixels,
  };
}

/** @internal The image as raw RGB, checked against maxPixels (decoded when it is a path or bytes). */
export async function rgbImage(fn: string, image: unknown, maxPixels: number): Promise<{ data: Uint8Array; width: number; height: number }> {
  if (typeof image === 'string' || image instanceof Uint8Array) {
    if (typeof image === 'string' && image === '') fail(`${fn}: image must be a file path, encoded bytes or { data, width, height }, got the empty string`);
    const header = await probeImage(fn, image);
    const pixels = header.width * header.height;
    if (pixels > maxPixels) throw overLimit(fn, `${describeSource(image)} (${header.width}x${header.height}) has`, pixels, 'pixels', 'options.maxPixels', maxPixels);
    return decodeRgb(fn, image, header);
  }
  if (typeof image !== 'object' || image === null) fail(`${fn}: image must be a file path, encoded bytes or { data, width, height }, got ${describe(image)}`);
  const { data, width, height } = image as Record<string, unknown>;
  if (!(data instanceof Uint8Array)) fail(`${fn}: image.data must be a Uint8Array of interleaved RGB, got ${describe(data)}`);
  if (!isPositiveInt(width) || width > 2 ** 31 - 1) fail(`${fn}: image.width must be a positive integer, got ${describe(width)}`);
  if (!isPositiveInt(height) || height > 2 ** 31 - 1) fail(`${fn}: image.height must be a positive integer, got ${describe(height)}`);
  const pixels = width * height;
  if (pixels > maxPixels) throw overLimit(fn, `the image (${width}x${height}) has`, pixels, 'pixels', 'options.maxPixels', maxPixels);
  if (data.length !== pixels * 3) fail(`${fn}: image.data has ${data.length} bytes, expected width x height x 3 = ${pixels * 3} (interleaved RGB)`);
  return { data, width, height };
}

/**
 * Selective search's region proposals of one image (a file path, encoded bytes, or raw interleaved
 * 8-bit RGB as { data, width, height }): boxes best ranked first, without duplicates or sides
 * under minSide. CPU only; the work runs on a libuv thread.
 */
export async function proposals(image: ProposalImage, options?: ProposalOptions): Promise<Proposals> {
  const t0 = process.hrtime.bigint();
  const site = new CallSite();
  const o = checkOptions(options);
  const img = await rgbImage(FN, image, o.maxPixels);
  const out = await site.run(FN, () =>
    native.proposals({ data: img.data, width: img.width, height: img.height, fast: o.fast, ks: Float64Array.from(o.ks), sigma: o.sigma, minSide: o.minSide, maxBoxes: o.maxBoxes, seed: o.seed }),
  );
  const boxes = Float32Array.from(out);
  return { boxes, count: boxes.length / 4, width: img.width, height: img.height, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

/** @internal Felzenszwalb-Huttenlocher segmentation of raw RGB (tests): each pixel's component label. */
export async function segmentImage(image: { data: Uint8Array; width: number; height: number }, opts: { space: 'hsv' | 'lab' | 'rgb'; sigma: number; k: number; minSize: number }): Promise<Int32Array> {
  const img = await rgbImage('segmentImage', image, 2 ** 31 - 1);
  const space = { hsv: 0, lab: 1, rgb: 2 }[opts.space];
  return new CallSite().run('segmentImage', () => native.segmentImage({ ...img, space, sigma: opts.sigma, k: opts.k, minSize: opts.minSize }));
}
