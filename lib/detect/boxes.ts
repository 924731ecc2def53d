// Box regression targets and their inverse, as R-CNN's (and the SPP-net code's) bounding-box
// regression: a proposal P and its ground truth G, both [x1, y1, x2, y2] in 0-based inclusive
// pixels, with widths x2 - x1 + 1 and centres x1 + 0.5 * width:
//   dx = (Gx - Px) / Pw, dy = (Gy - Py) / Ph, dw = log(Gw / Pw), dh = log(Gh / Ph).

/** The regression targets (dx, dy, dw, dh) of proposal p towards ground truth g. */
export function boxDeltas(p: ArrayLike<number>, g: ArrayLike<number>): [number, number, number, number] {
  const pw = p[2] - p[0] + 1, ph = p[3] - p[1] + 1, gw = g[2] - g[0] + 1, gh = g[3] - g[1] + 1;
  const px = p[0] + 0.5 * pw, py = p[1] + 0.5 * ph, gx = g[0] + 0.5 * gw, gy = g[1] + 0.5 * gh;
  return [(gx - px) / pw, (gy - py) / ph, Math.log(gw / pw), Math.log(gh / ph)];
}

/** The box that deltas d move proposal p to, clipped to an image of `size` [H, W]; widths grow at most e^4 (as py-faster-rcnn's bbox_transform_inv, plus a clamp). */
export function applyDeltas(p: ArrayLike<number>, d: ArrayLike<number>, size: readonly [number, number]): [number, number, number, number] {
  const pw = p[2] - p[0] + 1, ph = p[3] - p[1] + 1;
  const px = p[0] + 0.5 * pw, py = p[1] + 0.5 * ph;
  const cx = d[0] * pw + px, cy = d[1] * ph + py;
  const w = Math.exp(Math.min(4, d[2])) * pw, h = Math.exp(Math.min(4, d[3])) * ph;
  const clip = (v: number, n: number) => Math.min(n - 1, Math.max(0, v));
  return [clip(cx - 0.5 * w, size[1]), clip(cy - 0.5 * h, size[0]), clip(cx + 0.5 * w - 1, size[1]), clip(cy + 0.5 * h - 1, size[0])];
}
