// Training data: datasets of variable-size CHW images with labels, on the host. A built-in synthetic
// dataset (shapes of several classes at random positions, scales and colours, on images of random
// sizes) so that training runs with nothing downloaded, and an image-folder dataset (one sub-folder
// per class, as torchvision's ImageFolder) decoded by sharp, and IDX files (MNIST's format; Fashion-
// MNIST from Debian's package by default). Plus the transforms the trainer uses:
// random crop, warp (resize to a square), horizontal flip, bilinear resize.
import * as fs from 'fs';
import * as path from 'path';
import { describe, fail, isPositiveInt, SppnetError } from '../core/errors';
import { IMAGENET_MEAN, IMAGENET_STD, readImage } from '../io/images';
import { checkMaxBytes, IdxReadOptions, parseIdx, readIdxBytes } from '../io/idx';
import { mixSeed, prng } from '../core/random';

/** One image on the host: [C, H, W] floats, row-major, and its class. */
export interface Sample {
  data: Float32Array;
  shape: [number, number, number];
  label: number;
}

export interface Dataset {
  /** Class names; labels index this list. */
  readonly classes: readonly string[];
  readonly length: number;
  /** Sample i, or null when it cannot be read (the loader skips it and counts it). */
  get(i: number): Promise<Sample | null>;
  /** A short description for logs. */
  readonly description: string;
}

export const SYNTHETIC_CLASSES = Object.freeze(['disc', 'square', 'triangle', 'cross', 'ring', 'stripes', 'diamond', 'checker']);

export interface SyntheticOptions {
  /** Number of classes, 2 to 8 (default 4): disc, square, triangle, cross, ring, stripes, diamond, checker. */
  classes?: number;
  /** Number of images (default 1000). */
  count?: number;
  /** Image sides are drawn from [minSize, maxSize] per axis (defaults 48 and 128). */
  minSize?: number;
  maxSize?: number;
  /** The shape's size as a fraction of the shorter side: [min, max] (default [0.4, 0.8]). */
  scale?: [number, number];
  /** Pixel noise standard deviation (default 0.15). */
  noise?: number;
  seed?: number;
}

/**
 * Variable-size images with one shape each; the class is the shape. Sample i is a pure function
 * of (seed, i), so the dataset costs no memory and two datasets with other seeds are disjoint
 * draws. Values are roughly zero-mean, unit-range floats (no further normalisation needed).
 */
export function synthetic(opts: SyntheticOptions = {}): Dataset {
  const fn = 'sp.data.synthetic';
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const K = opts.classes ?? 4;
  if (!isPositiveInt(K) || K < 2 || K > SYNTHETIC_CLASSES.length) fail(`${fn}: options.classes must be an integer in [2, ${SYNTHETIC_CLASSES.length}], got ${describe(opts.classes)}`);
  const count = opts.count ?? 1000;
  if (!isPositiveInt(count)) fail(`${fn}: options.count must be a positive integer, got ${describe(opts.count)}`);
  const lo = opts.minSize ?? 48, hi = opts.maxSize ?? 128;
  if (!isPositiveInt(lo) || lo < 8) fail(`${fn}: options.minSize must be an integer >= 8, got ${describe(opts.minSize)}`);
  if (!isPositiveInt(hi) || hi < lo) fail(`${fn}: options.maxSize must be an integer >= minSize (${lo}), got ${describe(opts.maxSize)}`);
  const [s0, s1] = opts.scale ?? [0.4, 0.8];
  if (!(s0 > 0 && s1 >= s0 && s1 <= 1)) fail(`${fn}: options.scale must be [min, max] with 0 < min <= max <= 1, got ${describe(opts.scale)}`);
  const noise = opts.noise ?? 0.15;
  if (!(typeof noise === 'number' && noise >= 0 && Number.isFinite(noise))) fail(`${fn}: options.noise must be a finite number >= 0, got ${describe(opts.noise)}`);
  const seed = opts.seed ?? 0;
  const classes = SYNTHETIC_CLASSES.slice(0, K);
  return {
    classes,
    length: count,
    description: `synthetic: ${count} images of ${K} shapes (${classes.join(', ')}), sides ${lo}..${hi}, seed ${seed}`,
    async get(i: number) {
      if (!Number.isInteger(i) || i < 0 || i >= count) fail(`${fn}: index ${typeof i === 'number' ? i : describe(i)} is outside [0, ${count})`);
      return drawSynthetic(mixSeed(seed, i), K, lo, hi, s0, s1, noise);
    },
  };
}

function drawSynthetic(seed: number, K: number, lo: number, hi: number, s0: number, s1: number, noise: number): Sample {
  const r = prng(seed);
  const label = Math.floor(r() * K);
  const H = lo + Math.floor(r() * (hi - lo + 1));
  const W = lo + Math.floor(r() * (hi - lo + 1));
  const side = Math.min(H, W);
  const size = side * (s0 + (s1 - s0) * r()); // the shape's extent in pixels
  const half = size / 2;
  const cy = half + r() * (H - size), cx = half + r() * (W - size);
  const angle = (r() - 0.5) * 0.6; // a small rotation
  const ca = Math.cos(angle), sa = Math.sin(angle);
  // Foreground and background colours far enough apart to see; a smooth background gradient.
  const bg = [r() - 0.5, r() - 0.5, r() - 0.5];
  const fg = bg.map((b) => (b > 0 ? b - 0.5 - 0.4 * r() : b + 0.5 + 0.4 * r()));
  const gy = (r() - 0.5) * 0.4, gx = (r() - 0.5) * 0.4;
  const period = Math.max(2, size / (3 + Math.floor(r() * 3)));
  const inside = (y: number, x: number): boolean => {
    // Shape coordinates in [-1, 1] over the shape's box, rotated.
    const dy = (y - cy) / half, dx = (x - cx) / half;
    const u = ca * dx + sa * dy, v = -sa * dx + ca * dy;
    if (Math.abs(u) > 1 || Math.abs(v) > 1) return false;
    return insideShape(label, u, v, half, period);
  };
  const plane = H * W;
  const data = new Float32Array(3 * plane);
  // Box-Muller noise from the same stream.
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      // 2x2 supersampling for smooth edges.
      let cover = 0;
      for (let sy = 0; sy < 2; sy++) for (let sx = 0; sx < 2; sx++) if (inside(y + 0.25 + 0.5 * sy, x + 0.25 + 0.5 * sx)) cover++;
      const a = cover / 4;
      const shade = gy * (y / H - 0.5) + gx * (x / W - 0.5);
      for (let c = 0; c < 3; c++) data[c * plane + y * W + x] = (1 - a) * (bg[c] + shade) + a * fg[c] + noise * gauss();
    }
  }
  return { data, shape: [3, H, W], label };
}

/**
 * @internal Whether the point (u, v) of a shape's box, in [-1, 1] each (rotated already), lies in
 * shape `label` (SYNTHETIC_CLASSES' order); `half` is half the shape's extent in pixels and
 * `period` the stripes' and checker's period in pixels.
 */
export function insideShape(label: number, u: number, v: number, half: number, period: number): boolean {
  switch (label) {
    case 0: return u * u + v * v <= 1; // disc
    case 1: return Math.abs(u) <= 0.8 && Math.abs(v) <= 0.8; // square
    case 2: return v <= 0.8 && Math.abs(u) <= ((v + 0.9) / 1.7) * 0.95; // triangle, apex up
    case 3: return Math.abs(u) <= 0.28 || Math.abs(v) <= 0.28; // cross
    case 4: { const d = u * u + v * v; return d <= 1 && d >= 0.4; } // ring
    case 5: return Math.abs(u) <= 0.85 && Math.abs(v) <= 0.85 && Math.floor(((v + 1) * half) / (period / 2)) % 2 === 0; // stripes
    case 6: return Math.abs(u) + Math.abs(v) <= 1; // diamond
    default: return Math.abs(u) <= 0.85 && Math.abs(v) <= 0.85 && (Math.floor(((u + 1) * half) / (period / 2)) + Math.floor(((v + 1) * half) / (period / 2))) % 2 === 0; // checker
  }
}

const IMAGE_EXT = /\.(jpe?g|png|webp|gif|tiff?|avif|bmp)$/i;

export interface ImageFolderOptions {
  /** Resize so that the shorter side is this many pixels when decoding (default: keep the size). */
  shorterSide?: number;
  mean?: number[];
  std?: number[];
  /** Called once for each file that cannot be decoded (it is skipped and counted). Default: a warning on stderr. */
  onSkip?: (file: string, reason: string) => void;
}

export interface ImageFolderDataset extends Dataset {
  readonly root: string;
  readonly files: readonly string[];
  /** Files that failed to decode so far. */
  readonly skipped: ReadonlyArray<{ file: string; reason: string }>;
}

/**
 * One sub-folder per class (sorted by name), images inside it (any depth). Files that sharp cannot
 * decode are skipped with a warning and counted in `skipped`: one bad file does not stop training.
 */
export async function imageFolder(root: string, opts: ImageFolderOptions = {}): Promise<ImageFolderDataset> {
  const fn = 'sp.data.imageFolder';
  if (typeof root !== 'string' || root === '') fail(`${fn}: root must be a folder path, got ${describe(root)}`);
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(root);
  } catch (e) {
    return fail(`${fn}: cannot read ${root}: ${(e as Error).message}`);
  }
  if (!st.isDirectory()) fail(`${fn}: ${root} is not a folder`);
  const entries = (await fs.promises.readdir(root, { withFileTypes: true })).filter((d) => d.isDirectory() && !d.name.startsWith('.'));
  const classes = entries.map((d) => d.name).sort();
  if (classes.length === 0) fail(`${fn}: ${root} has no class sub-folders (expected ${root}/<class>/<image files>)`);
  const files: string[] = [];
  const labels: number[] = [];
  const walk = async (dir: string, label: number) => {
    for (const d of (await fs.promises.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(dir, d.name);
      if (d.isDirectory()) await walk(p, label);
      else if (IMAGE_EXT.test(d.name)) {
        files.push(p);
        labels.push(label);
      }
    }
  };
  for (let c = 0; c < classes.length; c++) await walk(path.join(root, classes[c]), c);
  if (files.length === 0) fail(`${fn}: ${root} has class folders (${classes.join(', ')}) but no image files in them`);
  const skipped: Array<{ file: string; reason: string }> = [];
  const onSkip = opts.onSkip ?? ((file: string, reason: string) => process.emitWarning(`skipping ${file}: ${reason}`, 'SppnetDataWarning'));
  const imageOpts = { shorterSide: opts.shorterSide, mean: opts.mean ?? [...IMAGENET_MEAN], std: opts.std ?? [...IMAGENET_STD], device: 'cpu' as const };
  return {
    root,
    files,
    classes,
    length: files.length,
    skipped,
    description: `image folder ${root}: ${files.length} images in ${classes.length} classes`,
    async get(i: number) {
      if (!Number.isInteger(i) || i < 0 || i >= files.length) fail(`${fn}: index ${typeof i === 'number' ? i : describe(i)} is outside [0, ${files.length})`);
      try {
        const t = await readImage(files[i], imageOpts);
        const data = await t.data();
        const shape = t.shape as [number, number, number];
        t.dispose();
        return { data, shape: [shape[0], shape[1], shape[2]], label: labels[i] };
      } catch (e) {
        const reason = e instanceof SppnetError ? e.message.replace(/^sp\.readImage: /, '') : String(e);
        if (!skipped.some((s) => s.file === files[i])) {
          skipped.push({ file: files[i], reason });
          onSkip(files[i], reason);
        }
        return null;
      }
    },
  };
}

export interface IdxOptions extends IdxReadOptions {
  /** Class names (labels index them), or their number. Default: '0', '1', ... up to the largest label. */
  classes?: readonly string[] | number;
  /** Use the first `count` items only (default: all). */
  count?: number;
  /** Pixels are (byte / 255 - mean) / std: defaults 0 and 1, values in 0..1. */
  mean?: number;
  std?: number;
}

export interface IdxDataset extends Dataset {
  readonly height: number;
  readonly width: number;
  /** The labels of the items used (the first `count`). */
  readonly labels: Uint8Array;
}

/**
 * A dataset of grey [1, H, W] images from a pair of IDX files (MNIST's format; gzipped or not):
 * `images` (magic 0x00000803, N x H x W bytes) and `labels` (magic 0x00000801, N bytes), as paths
 * or bytes. The files stay in memory as bytes (Fashion-MNIST's training set: 47 MB); sample i is
 * converted to floats when asked for.
 */
export async function idx(images: string | Uint8Array, labels: string | Uint8Array, opts: IdxOptions = {}, fn = 'sp.data.idx'): Promise<IdxDataset> {
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const maxBytes = checkMaxBytes(fn, opts);
  const mean = opts.mean ?? 0, std = opts.std ?? 1;
  if (typeof mean !== 'number' || !Number.isFinite(mean)) fail(`${fn}: options.mean must be a finite number, got ${describe(opts.mean)}`);
  if (typeof std !== 'number' || !Number.isFinite(std) || !(std > 0)) fail(`${fn}: options.std must be a finite number > 0, got ${describe(opts.std)}`);
  if (opts.count !== undefined && !isPositiveInt(opts.count)) fail(`${fn}: options.count must be a positive integer, got ${describe(opts.count)}`);
  const c = opts.classes;
  if (c !== undefined && !(isPositiveInt(c) && c >= 2) && !(Array.isArray(c) && c.length >= 2 && c.every((n) => typeof n === 'string' && n !== '')))
    fail(`${fn}: options.classes must be at least two non-empty class names or a number >= 2, got ${describe(c)}`);
  const img = await parseIdx(fn, 'images', await readIdxBytes(fn, 'images', images, maxBytes), 3, maxBytes);
  const lab = await parseIdx(fn, 'labels', await readIdxBytes(fn, 'labels', labels, maxBytes), 1, maxBytes);
  const [N, H, W] = img.dims;
  if (lab.dims[0] !== N) fail(`${fn}: images has ${N} items, labels has ${lab.dims[0]}: they must be the same number`);
  if (opts.count !== undefined && opts.count > N) fail(`${fn}: options.count is ${opts.count}, the files hold ${N} items`);
  const count = opts.count ?? N;
  const labs = lab.data.subarray(0, count);
  let top = 0;
  for (let i = 0; i < count; i++) if (labs[i] > top) top = labs[i];
  const names = Array.isArray(c) ? [...c] : Array.from({ length: (c as number | undefined) ?? Math.max(2, top + 1) }, (_, k) => String(k));
  if (top >= names.length) fail(`${fn}: labels has label ${top} (item ${labs.indexOf(top)}), outside the ${names.length} classes of options.classes`);
  const px = img.data, plane = H * W, scale = 1 / (255 * std), shift = mean / std;
  return {
    classes: names,
    length: count,
    height: H,
    width: W,
    labels: labs,
    description: `IDX: ${count} images of ${H}x${W} in ${names.length} classes${typeof images === 'string' ? ` (${images})` : ''}`,
    async get(i: number) {
      if (!Number.isInteger(i) || i < 0 || i >= count) fail(`${fn}: index ${typeof i === 'number' ? i : describe(i)} is outside [0, ${count})`);
      const data = new Float32Array(plane);
      for (let k = 0, o = i * plane; k < plane; k++) data[k] = px[o + k] * scale - shift;
      return { data, shape: [1, H, W], label: labs[i] };
    },
  };
}

/** Fashion-MNIST's classes, in label order. */
export const FASHION_MNIST_CLASSES = Object.freeze(['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']);
/** Where Debian's dataset-fashion-mnist package puts the files. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

export interface FashionMnistOptions extends Omit<IdxOptions, 'classes'> {
  /** 'train' (60,000 images, the default) or 'test' (10,000). */
  split?: 'train' | 'test';
}

/**
 * Fashion-MNIST from a folder holding its four IDX files as Zalando distributes them
 * ({train,t10k}-{images-idx3,labels-idx1}-ubyte, gzipped or not); by default Debian's
 * (apt-get install dataset-fashion-mnist). Class names set; values in 0..1 unless mean/std given.
 */
export async function fashionMnist(dir: string | FashionMnistOptions = FASHION_MNIST_DIR, opts: FashionMnistOptions = {}): Promise<IdxDataset> {
  const fn = 'sp.data.fashionMnist';
  if (typeof dir === 'object' && dir !== null && !Array.isArray(dir)) [dir, opts] = [FASHION_MNIST_DIR, dir];
  if (typeof dir !== 'string' || dir === '') fail(`${fn}: dir must be a folder path, got ${describe(dir)}`);
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const split = opts.split ?? 'train';
  if (split !== 'train' && split !== 'test') fail(`${fn}: options.split must be 'train' or 'test', got ${describe(opts.split)}`);
  const stem = split === 'train' ? 'train' : 't10k';
  const find = (kind: string) => {
    const names = [`${stem}-${kind}-ubyte.gz`, `${stem}-${kind}-ubyte`];
    const hit = names.map((n) => path.join(dir as string, n)).find((p) => fs.existsSync(p));
    if (!hit)
      fail(`${fn}: no ${names.join(' or ')} in ${dir}` + (dir === FASHION_MNIST_DIR ? ' (install the data with: sudo apt-get install dataset-fashion-mnist)' : ' (the folder must hold Fashion-MNIST\'s IDX files as Zalando distributes them)'));
    return hit;
  };
  const { split: _, ...rest } = opts;
  const ds = await idx(find('images-idx3'), find('labels-idx1'), { ...rest, classes: FASHION_MNIST_CLASSES }, fn);
  return Object.assign(ds, { description: `Fashion-MNIST ${split}: ${ds.length} images of ${ds.height}x${ds.width}, 10 classes (${dir})` });
}

// ---- transforms (host-side, CHW) -------------------------------------------------------------

/** Bilinear resize of a [C, H, W] image to [C, h, w] (PyTorch's align_corners=False rule). */
export function resize(s: Sample, h: number, w: number): Sample {
  const [C, H, W] = s.shape;
  if (h === H && w === W) return s;
  const out = new Float32Array(C * h * w);
  const sy = H / h, sx = W / w;
  const x0s = new Int32Array(w), x1s = new Int32Array(w), fxs = new Float32Array(w);
  for (let x = 0; x < w; x++) {
    const fx = Math.max(0, (x + 0.5) * sx - 0.5);
    const x0 = Math.min(W - 1, Math.floor(fx));
    x0s[x] = x0;
    x1s[x] = Math.min(W - 1, x0 + 1);
    fxs[x] = fx - x0;
  }
  for (let y = 0; y < h; y++) {
    const fy = Math.max(0, (y + 0.5) * sy - 0.5);
    const y0 = Math.min(H - 1, Math.floor(fy)), y1 = Math.min(H - 1, y0 + 1), ty = fy - y0;
    for (let c = 0; c < C; c++) {
      const r0 = c * H * W + y0 * W, r1 = c * H * W + y1 * W, o = c * h * w + y * w;
      for (let x = 0; x < w; x++) {
        const a = s.data[r0 + x0s[x]] + (s.data[r0 + x1s[x]] - s.data[r0 + x0s[x]]) * fxs[x];
        const b = s.data[r1 + x0s[x]] + (s.data[r1 + x1s[x]] - s.data[r1 + x0s[x]]) * fxs[x];
        out[o + x] = a + (b - a) * ty;
      }
    }
  }
  return { data: out, shape: [C, h, w], label: s.label };
}

/** The [C, h, w] region at (y0, x0). */
export function crop(s: Sample, y0: number, x0: number, h: number, w: number): Sample {
  const [C, H, W] = s.shape;
  if (y0 < 0 || x0 < 0 || y0 + h > H || x0 + w > W) throw new SppnetError(`crop ${h}x${w} at (${y0}, ${x0}) is outside the ${H}x${W} image`, 'SPPNET_INTERNAL');
  const out = new Float32Array(C * h * w);
  for (let c = 0; c < C; c++) for (let y = 0; y < h; y++) out.set(s.data.subarray(c * H * W + (y0 + y) * W + x0, c * H * W + (y0 + y) * W + x0 + w), c * h * w + y * w);
  return { data: out, shape: [C, h, w], label: s.label };
}

export function flip(s: Sample): Sample {
  const [C, H, W] = s.shape;
  const out = new Float32Array(s.data.length);
  for (let r = 0; r < C * H; r++) for (let x = 0; x < W; x++) out[r * W + x] = s.data[r * W + W - 1 - x];
  return { data: out, shape: s.shape, label: s.label };
}

/** How a sample is brought to a square training size s. */
export type InputMode = 'crop' | 'warp';

/**
 * The training view of a sample at size s: 'crop' takes a random square of side between 0.6 and 1.0
 * of the shorter side (the paper's crop, with scale augmentation) and resizes it to s; 'warp'
 * resizes the whole image to s x s. `random` false gives the centre crop (for evaluation).
 */
export function view(s: Sample, size: number, mode: InputMode, r: (() => number) | null, flipProb = 0.5): Sample {
  let v: Sample;
  if (mode === 'warp') v = resize(s, size, size);
  else {
    const [, H, W] = s.shape;
    const side = Math.min(H, W);
    const c = r ? Math.max(1, Math.round(side * (0.6 + 0.4 * r()))) : side;
    const y0 = r ? Math.floor(r() * (H - c + 1)) : Math.floor((H - c) / 2);
    const x0 = r ? Math.floor(r() * (W - c + 1)) : Math.floor((W - c) / 2);
    v = resize(crop(s, y0, x0, c, c), size, size);
  }
  if (r && flipProb > 0 && r() < flipProb) v = flip(v);
  return v;
}

export const data = { synthetic, imageFolder, idx, fashionMnist, resize, crop, flip, view };
