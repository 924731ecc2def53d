// Candidate windows onto conv feature maps, as the SPP-net paper (and, as an option, its released
// code) does it: which scale each window is pooled at, and which map cells it covers. Boxes are
// [x1, y1, x2, y2] in 0-based inclusive pixel indices of the original image (sp.proposals' and
// sp.data.voc's minus 1); map cells are 0-based inclusive indices, as sp.spp's windows take them.
import { targetSize } from '../io/images';
import { LayerSpec, sideThrough } from '../nn/layers';

/** How a window's corners become map cells. */
export type WindowMapping = 'paper' | 'released';

export interface MappingOptions {
  /** The trunk's total stride S (16 for ZF-5): trunkStride(spec.layers). */
  stride: number;
  /**
   * 'paper' (default): in 1-based pixel coordinates, left/top x' = floor(x / S) + 1 and
   * right/bottom x' = ceil(x / S) - 1 (1-based cells). 'released': the released code's rule,
   * x' = floor((x - offset0 + offset) / S + 0.5) + 1 and ceil((x - offset0 - offset) / S - 0.5) + 1.
   * Either way an empty range collapses to its midpoint, and cells are clamped to the map.
   */
  mapping?: WindowMapping;
  /** The released rule's offsets (ZF-5's receptive field: 21 and 6.5). */
  offset0?: number;
  offset?: number;
}

/** The trunk's total stride: how many input pixels one map cell steps over (the layers before the spp layer). */
export function trunkStride(layers: readonly LayerSpec[]): number {
  const big = 1 << 14;
  const h = sideThrough(layers as LayerSpec[], big, 0), w = sideThrough(layers as LayerSpec[], big, 1);
  return Math.max(1, Math.round(big / Math.max(1, Math.min(h, w))));
}

/**
 * A box of the original image at a resized copy of it (H x W -> h x w): pixel x spans [x, x + 1),
 * which lands on [x * w / W, (x + 1) * w / W); the box's first and last pixels there, fractional.
 */
export function scaleBox(b: ArrayLike<number>, from: readonly [number, number], to: readonly [number, number]): [number, number, number, number] {
  const fx = to[1] / from[1], fy = to[0] / from[0];
  return [b[0] * fx, b[1] * fy, (b[2] + 1) * fx - 1, (b[3] + 1) * fy - 1];
}

/**
 * For each box, the index of the scale (shorter sides `scales`) at which its area is closest to
 * side x side pixels (the paper's rule: 224 x 224, the size the network was trained on); ties go
 * to the smaller scale. Boxes in the original image's pixels; `size` is its [H, W].
 */
export function chooseScales(boxes: ArrayLike<number>, count: number, size: readonly [number, number], scales: readonly number[], side: number): Int32Array {
  const out = new Int32Array(count);
  const target = side * side;
  const factors = scales.map((s) => {
    const [h, w] = targetSize({ height: size[0], width: size[1] }, s);
    return (h / size[0]) * (w / size[1]);
  });
  for (let i = 0; i < count; i++) {
    const area = (boxes[4 * i + 2] - boxes[4 * i] + 1) * (boxes[4 * i + 3] - boxes[4 * i + 1] + 1);
    let best = 0, bestGap = Infinity;
    factors.forEach((f, k) => {
      const gap = Math.abs(area * f - target);
      if (gap < bestGap) (best = k), (bestGap = gap);
    });
    out[i] = best;
  }
  return out;
}

/** One axis: the first and last cell of [a, b] (0-based pixel indices at the map's scale) on a map of n cells. */
function cells(a: number, b: number, n: number, o: Required<MappingOptions>): [number, number] {
  const S = o.stride;
  let lo: number, hi: number;
  if (o.mapping === 'released') {
    // The released code works in 1-based pixels and gives 1-based cells: -1 for 0-based.
    lo = Math.floor((a + 1 - o.offset0 + o.offset) / S + 0.5);
    hi = Math.ceil((b + 1 - o.offset0 - o.offset) / S - 0.5);
  } else {
    lo = Math.floor((a + 1) / S);
    hi = Math.ceil((b + 1) / S) - 2;
  }
  if (lo > hi) lo = hi = Math.floor((lo + hi) / 2);
  const clamp = (v: number) => Math.min(n - 1, Math.max(0, v));
  return [clamp(lo), clamp(hi)];
}

/**
 * Map cells [x1, y1, x2, y2] (0-based, inclusive, inside an mapH x mapW map) of a box given in
 * 0-based pixel indices at the scale the map was computed at (scaleBox's result).
 */
export function mapWindow(box: ArrayLike<number>, mapH: number, mapW: number, opts: MappingOptions): [number, number, number, number] {
  const o: Required<MappingOptions> = { mapping: 'paper', offset0: 21, offset: 6.5, ...opts };
  const [x1, x2] = cells(box[0], box[2], mapW, o);
  const [y1, y2] = cells(box[1], box[3], mapH, o);
  return [x1, y1, x2, y2];
}
