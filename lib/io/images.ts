// Images from files or bytes (JPEG, PNG, WebP, and whatever else sharp decodes) into CHW float
// tensors: RGB, scaled to [0, 1], normalised with mean/std, optionally resized as the SPP-net paper
// does (shorter side to s, aspect ratio kept).
import { backend, Device } from '../core/backend';
import { CallSite, describe, fail, isPositiveInt, overLimit, SppnetError } from '../core/errors';
import { native } from '../core/native';
import { allocateReleasable, freeReleasable, Tensor, tensor } from '../core/tensor';

export interface ImageOptions {
  /** Resize so that the shorter side is this many pixels (the paper's scale s); default: keep the size. */
  shorterSide?: number;
  /** Per-channel mean subtracted after scaling to [0, 1]; default ImageNet's [0.485, 0.456, 0.406]. */
  mean?: number[];
  /** Per-channel standard deviation divided by; default ImageNet's [0.229, 0.224, 0.225]. */
  std?: number[];
  device?: Device;
  /**
   * Refuse images with more pixels than this (default 100 megapixels), from the header, before
   * decoding them, and images that shorterSide would resize to more (a 32542x1 JPEG at
   * shorterSide 48 would be 1,562,016x48): SPPNET_TOO_LARGE.
   */
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

/** @internal A mean or std option: 3 finite numbers (std: > 0), or the default. */
export function checkTriple(fn: string, name: string, v: unknown, dflt: readonly number[], positive: boolean): number[] {
  if (v === undefined) return [...dflt];
  if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!positive || x > 0)))
    fail(`${fn}: options.${name} must be 3 finite numbers${positive ? ' > 0' : ''} (R, G, B), got ${describe(v)}`);
  return v as number[];
}

/** @internal An image's size as its header states it, EXIF orientation applied; read without decoding. */
export interface ImageHeader {
  width: number;
  height: number;
  format: string;
}

/** @internal How `what` is named in messages: its path, or its type and byte length. */
export function describeSource(source: string | Uint8Array): string {
  return typeof source === 'string' ? source : `a ${source?.constructor?.name ?? typeof source} of ${(source as Uint8Array)?.length} bytes`;
}

const sharpInput = (source: string | Uint8Array) => (typeof source === 'string' ? source : Buffer.from(source.buffer, source.byteOffset, source.byteLength));

/**
 * @internal Reads only the header (sharp's metadata(): no pixel is decoded, so a decompression bomb
 * costs its header's bytes): the size to check against pixel budgets before any decoding.
 */
export async function probeImage(fn: string, source: string | Uint8Array): Promise<ImageHeader> {
  let meta: { width?: number; height?: number; orientation?: number; format?: string };
  try {
    meta = await sharp()(sharpInput(source), { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new SppnetError(`${fn}: cannot decode ${describeSource(source)}: ${(e as Error).message}`, 'SPPNET_INVALID_ARGUMENT');
  }
  let w = meta.width ?? 0, h = meta.height ?? 0;
  if ((meta.orientation ?? 1) >= 5) [w, h] = [h, w];
  if (!(w > 0 && h > 0)) throw new SppnetError(`${fn}: cannot decode ${describeSource(source)}: the image has no size`, 'SPPNET_INVALID_ARGUMENT');
  return { width: w, height: h, format: meta.format ?? 'unknown' };
}

/** @internal [H, W] after the paper's resize (shorter side to s, aspect ratio kept), or as it is. */
export function targetSize(header: { width: number; height: number }, shorterSide: number | undefined): [number, number] {
  const { width: w, height: h } = header;
  if (shorterSide === undefined) return [h, w];
  const s = shorterSide;
  return w <= h ? [Math.max(1, Math.round((h * s) / w)), s] : [s, Math.max(1, Math.round((w * s) / h))];
}

interface DecodeOptions {
  shorterSide?: number;
  mean: readonly number[];
  std: readonly number[];
  device?: Device;
  /** On the CPU, a tensor whose memory freeReleasable() gives back at once (the HTTP service's). */
  releasable?: boolean;
}

/**
 * @internal Decodes an image whose header was read (and checked) to interleaved 8-bit RGB pixels
 * (sharp's raw layout; EXIF orientation applied, alpha dropped), optionally resized to the paper's
 * scale (shrink-on-load where the format allows, so a large JPEG is never decoded at full size;
 * other formats are streamed through the resize).
 */
export async function decodeRgb(fn: string, source: string | Uint8Array, header: ImageHeader, shorterSide?: number): Promise<{ data: Buffer; width: number; height: number }> {
  const what = describeSource(source);
  let decoded: { data: Buffer; info: { width: number; height: number; channels: number } };
  try {
    // The header was checked: the limit only guards against a header that lies.
    let img = sharp()(sharpInput(source), { failOn: 'error', limitInputPixels: Math.max(1, header.width * header.height) }).rotate(); // honour EXIF orientation
    if (shorterSide !== undefined) {
      const [H, W] = targetSize(header, shorterSide);
      img = img.resize({ width: W, height: H, fit: 'fill', kernel: 'cubic' });
    }
    decoded = await img.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  } catch (e) {
    throw new SppnetError(`${fn}: cannot decode ${what}: ${(e as Error).message}`, 'SPPNET_INVALID_ARGUMENT');
  }
  const { width, height, channels } = decoded.info;
  if (channels !== 3) throw new SppnetError(`${fn}: ${what} decoded to ${channels} channels, expected RGB`, 'SPPNET_INTERNAL');
  return { data: decoded.data, width, height };
}

/**
 * @internal Decodes an image whose header was read (and checked) into a [3, H, W] tensor: sharp
 * decodes and resizes (decodeRgb), then the 8-bit pixels become normalised planar floats on a
 * libuv thread, off the event loop.
 */
export async function decodeImage(fn: string, source: string | Uint8Array, header: ImageHeader, opts: DecodeOptions): Promise<Tensor> {
  const site = new CallSite();
  const { data, width: W, height: H } = await decodeRgb(fn, source, header, opts.shorterSide);
  const scale = Float32Array.from(opts.std, (s) => 1 / (255 * s));
  const bias = Float32Array.from(opts.mean, (m, c) => -m / opts.std[c]);
  // The HTTP service's images on the CPU: fresh pages from the addon, zeroed by the kernel as the
  // libuv thread writes them, and freed at once by freeReleasable(): neither the zero-fill nor the
  // GC of a 1 MB array per image on the event loop.
  const owned = opts.releasable && (opts.device ?? backend().device) === 'cpu' ? allocateReleasable([3, H, W], 'cpu', fn) : null;
  const out = owned ? (owned.storage(fn, 'the image') as { array: Float32Array }).array : new Float32Array(3 * H * W);
  try {
    await site.run(fn, () => native.pixelsToPlanar({ input: data, height: H, width: W, channels: 3, scale, bias, output: out }));
  } catch (e) {
    if (owned) freeReleasable(owned);
    throw e;
  }
  return owned ?? tensor(out, [3, H, W], { device: opts.device });
}

/** Decodes one image to a [3, H, W] float32 tensor. */
export async function readImage(source: string | Uint8Array, opts: ImageOptions = {}): Promise<Tensor> {
  const fn = 'sp.readImage';
  if (typeof source !== 'string' && !(source instanceof Uint8Array)) fail(`${fn}: source must be a file path or the image's bytes, got ${describe(source)}`);
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  if (opts.maxPixels !== undefined && !isPositiveInt(opts.maxPixels)) fail(`${fn}: options.maxPixels must be a positive integer, got ${describe(opts.maxPixels)}`);
  if (opts.shorterSide !== undefined && !isPositiveInt(opts.shorterSide)) fail(`${fn}: options.shorterSide must be a positive integer, got ${describe(opts.shorterSide)}`);
  const mean = checkTriple(fn, 'mean', opts.mean, IMAGENET_MEAN, false);
  const std = checkTriple(fn, 'std', opts.std, IMAGENET_STD, true);
  const header = await probeImage(fn, source);
  const limit = opts.maxPixels ?? 100_000_000;
  const pixels = header.width * header.height;
  if (pixels > limit) throw overLimit(fn, `${describeSource(source)} (${header.width}x${header.height}) has`, pixels, 'pixels', 'options.maxPixels', limit);
  const [H, W] = targetSize(header, opts.shorterSide);
  if (H * W > limit)
    throw overLimit(fn, `${describeSource(source)} (${header.width}x${header.height}) resized to options.shorterSide ${opts.shorterSide} (${W}x${H}) has`, H * W, 'pixels', 'options.maxPixels', limit);
  return decodeImage(fn, source, header, { shorterSide: opts.shorterSide, mean, std, device: opts.device });
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

/**
 * @internal Writes interleaved 8-bit RGB pixels (row-major, sharp's raw layout) as an image file;
 * the format follows the extension (.jpg/.jpeg: JPEG at `quality`, .png, .webp).
 */
export async function writeRgbImage(file: string, rgb: Uint8Array, width: number, height: number, quality = 90): Promise<void> {
  if (rgb.length !== width * height * 3) throw new SppnetError(`writeRgbImage: ${rgb.length} bytes for a ${width}x${height} RGB image (expected ${width * height * 3})`, 'SPPNET_INTERNAL');
  const s = sharp() as unknown as (input: Buffer, o: object) => { jpeg(o: object): { toFile(f: string): Promise<unknown> }; png(): { toFile(f: string): Promise<unknown> }; webp(o: object): { toFile(f: string): Promise<unknown> } };
  const img = s(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width, height, channels: 3 } });
  if (/\.png$/i.test(file)) await img.png().toFile(file);
  else if (/\.webp$/i.test(file)) await img.webp({ quality }).toFile(file);
  else await img.jpeg({ quality }).toFile(file);
}
