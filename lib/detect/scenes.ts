// Synthetic detection scenes: several objects (the synthetic shapes of train/data.ts, and optionally
// Fashion-MNIST items) at different scales and positions, some overlapping, some small, some cut by
// the border, on cluttered backgrounds (a gradient, lines and blobs of other colours, noise). Each
// scene is a pure function of its seed. Boxes are the visible pixels' extent, VOC-style.
import { insideShape } from '../train/data';
import { prng } from '../core/random';

export interface SceneOptions {
  /** Image widths and heights are drawn from [minSize, maxSize] ([W, H] each), each axis on its own. */
  minSize: [number, number];
  maxSize: [number, number];
  /** Objects per image, drawn from [minObjects, maxObjects]. */
  minObjects: number;
  maxObjects: number;
  /** An object's extent in pixels: log-uniform in [minObjectSize, maxObjectScale x the image's shorter side]. */
  minObjectSize: number;
  maxObjectScale: number;
  /** Shape classes 0..shapes-1 (SYNTHETIC_CLASSES' order); items, when given, are classes shapes.. on. */
  shapes: number;
  /** Pixel noise (standard deviation, in 0..1 units) and the number of clutter strokes and blobs, at most. */
  noise: number;
  clutter: number;
  /** Fashion-MNIST items (28x28 grey, 0..255) and their classes: objects drawn from them half the time. */
  items?: { pixels: Uint8Array; labels: Uint8Array; count: number };
  /** Below this shorter box side (pixels), or with less than minVisible of it unoccluded, an object is 'difficult'. */
  difficultSide: number;
  minVisible: number;
}

export interface SceneObject {
  label: number;
  /** [xmin, ymin, xmax, ymax]: VOC's 1-based inclusive pixel coordinates of the visible pixels. */
  box: [number, number, number, number];
  difficult: boolean;
  truncated: boolean;
}

export interface Scene {
  width: number;
  height: number;
  /** Interleaved RGB bytes, row-major (sharp's raw layout). */
  rgb: Uint8Array;
  objects: SceneObject[];
}

const ITEM = 28;

/** A colour at least `far` away (max over channels) from `from`, in [0.05, 0.95]. */
function contrasting(r: () => number, from: number[], far: number): number[] {
  for (let t = 0; t < 20; t++) {
    const c = [0, 1, 2].map(() => 0.05 + 0.9 * r());
    if (c.some((v, i) => Math.abs(v - from[i]) >= far)) return c;
  }
  return from.map((v) => (v > 0.5 ? 0.05 : 0.95));
}

export function drawScene(seed: number, o: SceneOptions): Scene {
  const r = prng(seed);
  const W = o.minSize[0] + Math.floor(r() * (o.maxSize[0] - o.minSize[0] + 1));
  const H = o.minSize[1] + Math.floor(r() * (o.maxSize[1] - o.minSize[1] + 1));
  const plane = W * H;
  const img = new Float32Array(3 * plane);
  const bg = [0.2 + 0.6 * r(), 0.2 + 0.6 * r(), 0.2 + 0.6 * r()];
  const gy = (r() - 0.5) * 0.5, gx = (r() - 0.5) * 0.5;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < 3; c++) img[c * plane + y * W + x] = bg[c] + gy * (y / H - 0.5) + gx * (x / W - 0.5);
  // Paints colour `col` where coverage(y, x) (in 0..1) says, within [y0, y1) x [x0, x1) clipped.
  const paint = (y0: number, y1: number, x0: number, x1: number, col: number[], coverage: (y: number, x: number) => number, own?: (i: number, a: number) => void) => {
    for (let y = Math.max(0, Math.floor(y0)); y < Math.min(H, Math.ceil(y1)); y++)
      for (let x = Math.max(0, Math.floor(x0)); x < Math.min(W, Math.ceil(x1)); x++) {
        const a = coverage(y, x);
        if (a <= 0) continue;
        const i = y * W + x;
        for (let c = 0; c < 3; c++) img[c * plane + i] = (1 - a) * img[c * plane + i] + a * col[c];
        if (own) own(i, a);
      }
  };
  // Clutter: strokes and blobs of other colours, not annotated.
  const nClutter = Math.floor(r() * (o.clutter + 1));
  for (let k = 0; k < nClutter; k++) {
    const col = contrasting(r, bg, 0.25);
    if (r() < 0.5) {
      const ax = r() * W, ay = r() * H, bx = r() * W, by = r() * H, half = 0.5 + r() * 1.5;
      const dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy || 1;
      paint(Math.min(ay, by) - 3, Math.max(ay, by) + 3, Math.min(ax, bx) - 3, Math.max(ax, bx) + 3, col, (y, x) => {
        const t = Math.max(0, Math.min(1, ((x + 0.5 - ax) * dx + (y + 0.5 - ay) * dy) / len2));
        const d = Math.hypot(x + 0.5 - ax - t * dx, y + 0.5 - ay - t * dy);
        return Math.max(0, Math.min(1, half + 0.5 - d));
      });
    } else {
      // Elongated (2 to 4 times longer than wide) and turned, so that no blob passes for a disc.
      const cx = r() * W, cy = r() * H, rx = 3 + (r() * Math.min(W, H)) / 5, ry = rx / (2 + 2 * r()), t = r() * Math.PI;
      const ct = Math.cos(t), st = Math.sin(t);
      paint(cy - rx - 1, cy + rx + 1, cx - rx - 1, cx + rx + 1, col, (y, x) => {
        const px = x + 0.5 - cx, py = y + 0.5 - cy;
        const d = Math.hypot((ct * px + st * py) / rx, (-st * px + ct * py) / ry);
        return Math.max(0, Math.min(1, (1 - d) * ry + 0.5));
      });
    }
  }
  // Objects, painted in order: later ones occlude earlier ones. owner[i]: the object covering pixel i.
  const owner = new Int32Array(plane).fill(-1);
  const n = o.minObjects + Math.floor(r() * (o.maxObjects - o.minObjects + 1));
  const objs: Array<{ label: number; own: number; outside: boolean }> = [];
  const itemClasses = o.items ? 10 : 0;
  for (let k = 0; k < n; k++) {
    const maxSide = Math.max(o.minObjectSize, o.maxObjectScale * Math.min(W, H));
    const size = o.minObjectSize * Math.pow(maxSide / o.minObjectSize, r());
    const half = size / 2;
    // Mostly inside the image; one in six may cross the border (truncated).
    const free = r() < 1 / 6;
    const cx = free ? r() * W : half + r() * Math.max(0, W - size), cy = free ? r() * H : half + r() * Math.max(0, H - size);
    const col = contrasting(r, bg, 0.35);
    const useItem = itemClasses > 0 && r() < 0.5;
    let label: number, coverage: (y: number, x: number) => number;
    if (useItem) {
      const it = o.items!;
      const idx = Math.floor(r() * it.count);
      label = o.shapes + it.labels[idx];
      const px = it.pixels.subarray(idx * ITEM * ITEM, (idx + 1) * ITEM * ITEM);
      const s = ITEM / size; // item pixels per image pixel
      coverage = (y, x) => {
        // Nearest item pixel of the image pixel's centre; intensity as coverage.
        const u = Math.floor((x + 0.5 - (cx - half)) * s), v = Math.floor((y + 0.5 - (cy - half)) * s);
        if (u < 0 || v < 0 || u >= ITEM || v >= ITEM) return 0;
        return Math.min(1, (px[v * ITEM + u] / 255) * 1.4);
      };
    } else {
      label = Math.floor(r() * o.shapes);
      const angle = (r() - 0.5) * 0.6, ca = Math.cos(angle), sa = Math.sin(angle);
      const period = Math.max(2, size / (3 + Math.floor(r() * 3)));
      const inside = (y: number, x: number) => {
        const dy = (y - cy) / half, dx = (x - cx) / half;
        const u = ca * dx + sa * dy, v = -sa * dx + ca * dy;
        return Math.abs(u) <= 1 && Math.abs(v) <= 1 && insideShape(label, u, v, half, period);
      };
      coverage = (y, x) => {
        let c = 0;
        for (let sy = 0; sy < 2; sy++) for (let sx = 0; sx < 2; sx++) if (inside(y + 0.25 + 0.5 * sy, x + 0.25 + 0.5 * sx)) c++;
        return c / 4;
      };
    }
    const index = objs.length;
    const ob = { label, own: 0, outside: false };
    objs.push(ob);
    paint(cy - half - 1, cy + half + 1, cx - half - 1, cx + half + 1, col, coverage, (i, a) => {
      if (a >= 0.5) {
        owner[i] = index;
        ob.own++;
      }
    });
    // Truncated: some of its extent lies outside the image.
    ob.outside = cx - half < 0 || cy - half < 0 || cx + half > W || cy + half > H;
  }
  // Noise over everything, then bytes.
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const rgb = new Uint8Array(3 * plane);
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) rgb[i * 3 + c] = Math.max(0, Math.min(255, Math.round((img[c * plane + i] + o.noise * gauss()) * 255)));
  // Boxes of the visible pixels.
  const box = objs.map(() => [Infinity, Infinity, -Infinity, -Infinity]);
  const visible = new Int32Array(objs.length);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const k = owner[y * W + x];
    if (k < 0) continue;
    visible[k]++;
    const b = box[k];
    if (x < b[0]) b[0] = x;
    if (y < b[1]) b[1] = y;
    if (x > b[2]) b[2] = x;
    if (y > b[3]) b[3] = y;
  }
  const objects: SceneObject[] = [];
  objs.forEach((ob, k) => {
    if (visible[k] === 0) return; // wholly hidden, or too thin to own a pixel: not annotated
    const [x0, y0, x1, y1] = box[k];
    const side = Math.min(x1 - x0 + 1, y1 - y0 + 1);
    objects.push({
      label: ob.label,
      box: [x0 + 1, y0 + 1, x1 + 1, y1 + 1],
      difficult: side < o.difficultSide || visible[k] < o.minVisible * ob.own,
      truncated: ob.outside,
    });
  });
  return { width: W, height: H, rgb, objects };
}
