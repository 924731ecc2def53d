// Crop and resize: every window of a set of images cropped and warped (bilinear, aspect not kept)
// to one size in one native call, as R-CNN feeds its network (include/sppnet/crop.h says exactly
// how: the sampling grid, the context padding, the border rule).
import { checkOpts, sharesMemory, sameDevice, settle, tensorOut } from '../core/checks';
import { CallSite, describe, fail, MAX_ELEMENTS } from '../core/errors';
import { native } from '../core/native';
import { RaggedBatch } from '../core/ragged';
import { nativeLayout, spatialLayout } from '../core/spatial';
import { nativeBuf, Tensor } from '../core/tensor';

export type CropAlign = 'pixels' | 'corners';

export interface CropResizeOptions {
  /**
   * R-CNN's context padding p (default 0): each window is first enlarged about its centre by
   * out / (out - 2p) per axis, so that the warped output has p pixels of context on each side
   * (R-CNN: p = 16 at 227). Samples outside the image read 0. An integer, 2p < min(outH, outW).
   */
  context?: number;
  /**
   * 'pixels' (default): output pixel centres map to the window's (align_corners=False; torchvision's
   * roi_align with aligned=True, sampling_ratio=1). 'corners': the first and last output pixels
   * sample the centres of the window's first and last pixels (align_corners=True).
   */
  align?: CropAlign;
  /** Write the result here: a Tensor [K, C, outH, outW] on the images' device. */
  out?: Tensor;
}

/** Most output pixels along one axis. */
export const MAX_CROP_SIZE = 4096;

const ALIGN: Readonly<Record<CropAlign, number>> = native.enums.cropAlign;

function checkSize(fn: string, size: unknown): [number, number] {
  const p = typeof size === 'number' ? [size, size] : size;
  if (!Array.isArray(p) || p.length !== 2 || !p.every((v) => typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= MAX_CROP_SIZE))
    fail(`${fn}: size must be an integer in [1, ${MAX_CROP_SIZE}] or a pair [outH, outW] of them, got ${describe(size)}`);
  return [p[0], p[1]];
}

/**
 * Crops every window of `boxes` [K, 5] (image index, x1, y1, x2, y2: 0-based inclusive pixel
 * indices, float32, on the images' device) out of `images` (a RaggedBatch, a Tensor [N, C, H, W],
 * or one image [C, H, W]) and warps it to size x size (or [outH, outW]) with bilinear sampling:
 * a Tensor [K, C, outH, outW]. Boxes may reach outside their image (those samples read 0); an image
 * index that is not an integer in [0, N), a coordinate that is NaN, infinite or beyond 2^24, and
 * x2 < x1 or y2 < y1 are errors (SPPNET_INVALID_ARGUMENT, naming the box).
 */
export async function cropResize(images: RaggedBatch | Tensor, boxes: Tensor, size: number | [number, number], options?: CropResizeOptions): Promise<Tensor> {
  const fn = 'sp.cropResize';
  const site = new CallSite();
  const src = spatialLayout(fn, images, 'images');
  if (!(boxes instanceof Tensor)) fail(`${fn}: boxes must be a Tensor [K, 5] (image index, x1, y1, x2, y2), got ${describe(boxes)}`);
  const b = boxes.storage(fn, 'boxes');
  if (boxes.rank !== 2 || boxes.shape[1] !== 5)
    fail(`${fn}: boxes must have shape [K, 5] (image index, x1, y1, x2, y2), got [${boxes.shape.join(', ')}]`);
  sameDevice(fn, 'boxes', b.device, 'images', src.device);
  const [outH, outW] = checkSize(fn, size);
  const o = checkOpts(fn, options);
  const context = o.context ?? 0;
  if (typeof context !== 'number' || !Number.isInteger(context) || context < 0 || 2 * context >= Math.min(outH, outW))
    fail(`${fn}: options.context must be an integer >= 0 with 2 * context < min(outH, outW) = ${Math.min(outH, outW)}, got ${describe(context)}`);
  const alignName = o.align ?? 'pixels';
  if (typeof alignName !== 'string' || !Object.prototype.hasOwnProperty.call(ALIGN, alignName))
    fail(`${fn}: options.align must be 'pixels' or 'corners', got ${describe(alignName)}`);
  const align = ALIGN[alignName as CropAlign];
  const k = boxes.shape[0];
  const n = k * src.channels * outH * outW;
  if (n > MAX_ELEMENTS)
    fail(`${fn}: the output would be [${k}, ${src.channels}, ${outH}, ${outW}] = ${n} elements, more than the 2^31-1 a tensor may hold`);
  const out = tensorOut(fn, o.out, [k, src.channels, outH, outW], src.device);
  const os = out.out.storage(fn, 'options.out');
  if (!out.owned && (sharesMemory(os, n, src.store, src.total) || sharesMemory(os, n, b, boxes.size)))
    fail(`${fn}: options.out must not share memory with images or boxes`);
  if (k === 0) return out.out;
  await settle(site, fn, [out], () =>
    native.cropResize({
      ...nativeLayout('in', src.channels, src.sizes, src.offsets),
      ...nativeBuf('input', src.store),
      ...nativeBuf('boxes', b),
      ...nativeBuf('output', os),
      k, outH, outW, context, align,
    }),
  );
  return out.out;
}
