// Images from files or bytes (JPEG, PNG, WebP, and whatever else sharp decodes) into CHW float
// tensors: RGB, scaled to [0, 1], normalised with mean/std, optionally resized as the SPP-net paper
// does (shorter side to s, aspect ratio kept).
import { Device } from './backend';
import { describe, fail, isPositiveInt, SppnetError } from './errors';
import { Tensor, tensor } from './tensor';

export interface ImageOptions {
  /** Resize so that the shorter side is this many pixels (the paper's scale s); default: keep the size. */
  shorterSide?: number;
  /** Per-channel mean subtracted after scaling to [0, 1]; default ImageNet's [0.485, 0.456, 0.406]. */
  mean?: number[];
  /** Per-channel standard deviation divided by; default ImageNet's [0.229, 0.224, 0.225]. */
  std?: number[];
  device?: Device;
  /** Refuse images with more pixels than this (default 100 megapixels), before decoding them. */
  maxPixels?: number;
}

export const IMAGENET_MEAN = Object.freeze([0.485, 0.456, 0.406]);
export const IMAGENET_STD = Object.freeze([0.229, 0.224, 0.225]);

type SharpFactory = (input?: Buffer | string, opts?: object) => {
  rotate(): ReturnType<SharpFactory>;
  removeAlpha(): ReturnType<SharpFactory>;
  toColourspace(c: string): ReturnType<SharpFactory>;
  resize(o: object): ReturnType<SharpFactory>;
  raw(): ReturnType<SharpFactory>;
  metadata(): Promise<{ width?: number; height?: number; orientation?: number }>;
  toBuffer(o: { resolveWithObject: true }): Promise<{ data: Buffer; info: { width: number; height: number; channels: number } }>;
};

let sharpModule: SharpFactory | undefined;
function sharp(): SharpFactory {
  if (!sharpModule) {
    try {
      sharpModule = require('sharp') as SharpFactory;
    } catch (e) {
      throw new SppnetError(`image decoding needs the 'sharp' package, which failed to load: ${(e as Error).message}`, 'SPPNET_UNAVAILABLE');
    }
  }
  return sharpModule;
}

function checkTriple(fn: string, name: string, v: unknown, dflt: readonly number[], positive: boolean): number[] {
  if (v === undefined) return [...dflt];
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0)))
    fail(`${fn}: options.${name} must be 3 finite numbers${positive ? ' > 0' : ''} (R, G, B), got ${describe(v)}`);
  return v as number[];
}

/** Decodes one image to a [3, H, W] float32 tensor. */
export async function readImage(source: string | Uint8Array, opts: ImageOptions = {}): Promise<Tensor> {
  const fn = 'sp.readImage';
  const what = typeof source === 'string' ? source : `a ${source?.constructor?.name ?? typeof source} of ${(source as Uint8Array)?.length} bytes`;
  if (typeof source !== 'string' && !(source instanceof Uint8Array)) fail(`${fn}: source must be a file path or the image's bytes, got ${describe(source)}`);
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  if (opts.maxPixels !== undefined && !isPositiveInt(opts.maxPixels)) fail(`${fn}: options.maxPixels must be a positive integer, got ${describe(opts.maxPixels)}`);
  if (opts.shorterSide !== undefined && !isPositiveInt(opts.shorterSide)) fail(`${fn}: options.shorterSide must be a positive integer, got ${describe(opts.shorterSide)}`);
  const mean = checkTriple(fn, 'mean', opts.mean, IMAGENET_MEAN, false);
  const std = checkTriple(fn, 'std', opts.std, IMAGENET_STD, true);
  const input = typeof source === 'string' ? source : Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  let decoded: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    const limit = opts.maxPixels ?? 100_000_000;
    let img = sharp()(input, { failOn: 'error', limitInputPixels: limit }).rotate(); // honour EXIF orientation
    if (opts.shorterSide !== undefined) {
      const meta = await sharp()(input, { limitInputPixels: limit }).metadata();
      let w = meta.width ?? 0, h = meta.height ?? 0;
      if ((meta.orientation ?? 1) >= 5) [w, h] = [h, w];
      if (!(w > 0 && h > 0)) throw new Error('the image has no size');
      const s = opts.shorterSide;
      const [W, H] = w <= h ? [s, Math.max(1, Math.round((h * s) / w))] : [Math.max(1, Math.round((w * s) / h)), s];
      img = img.resize({ width: W, height: H, fit: 'fill', kernel: 'cubic' });
    }
    decoded = await img.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    const msg = (e as Error).message;
    const err = new SppnetError(`${fn}: cannot decode ${what}: ${msg}`, 'SPPNET_INVALID_ARGUMENT');
    if (/pixel limit/i.test(msg)) (err as SppnetError & { tooLarge?: boolean }).tooLarge = true;
    throw err;
  }
  const { width: W, height: H, channels } = decoded.info;
  if (channels !== 3) throw new SppnetError(`${fn}: ${what} decoded to ${channels} channels, expected RGB`, 'SPPNET_INTERNAL');
  const px = decoded.data;
  const out = new Float32Array(3 * H * W);
  const plane = H * W;
  for (let c = 0; c < 3; c++) {
    const m = mean[c], inv = 1 / (255 * std[c]), off = m / std[c];
    const o = out.subarray(c * plane, (c + 1) * plane);
    for (let i = 0, j = c; i < plane; i++, j += 3) o[i] = px[j] * inv - off;
  }
  return tensor(out, [3, H, W], { device: opts.device });
}

/** Decodes several images (in parallel on the libuv pool). */
export async function readImages(sources: Array<string | Uint8Array>, opts: ImageOptions = {}): Promise<Tensor[]> {
  if (!Array.isArray(sources)) fail(`sp.readImages: sources must be an array of paths or byte arrays, got ${describe(sources)}`);
  const res = await Promise.allSettled(sources.map((s) => readImage(s, opts)));
  const bad = res.map((r, i) => (r.status === 'rejected' ? `  [${i}] ${(r.reason as Error).message}` : '')).filter(Boolean);
  if (bad.length) {
    res.forEach((r) => r.status === 'fulfilled' && r.value.dispose());
    throw new SppnetError(`sp.readImages: ${bad.length} of ${sources.length} images failed:\n${bad.join('\n')}`, 'SPPNET_INVALID_ARGUMENT');
  }
  return res.map((r) => (r as PromiseFulfilledResult<Tensor>).value);
}
