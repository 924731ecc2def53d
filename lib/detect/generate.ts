// sp.makeDetectionData: a synthetic detection dataset written in the VOC format (the VOCdevkit
// layout), so that everything that reads VOC (sp.data.voc, voc_eval.py, other tools) reads it:
// root/JPEGImages/<id>.jpg, root/Annotations/<id>.xml, root/ImageSets/Main/{trainval,test}.txt, and
// root/classes.txt (the class names, one a line, in label order). Deterministic for a seed.
import * as fs from 'fs';
import * as path from 'path';
import { describe, fail, SppnetError } from '../core/errors';
import { mixSeed, prng } from '../core/random';
import { writeRgbImage } from '../io/images';
import { formatVocAnnotation } from '../io/voc';
import { SYNTHETIC_CLASSES } from '../train/data';
import { FASHION_CLASSES, FASHION_DIR, readFashionItems } from './fashion-items';
import { drawScene, SceneOptions } from './scenes';

export interface DetectionDataOptions {
  /** Images in all (default 300; at most 100,000). */
  images?: number;
  seed?: number;
  /** Image sides drawn from [minSize, maxSize] per axis (defaults 96 and 160; 16 to 4096); [W, H] pairs for other ranges per axis. */
  minSize?: number | [number, number];
  maxSize?: number | [number, number];
  /** Objects per image drawn from [minObjects, maxObjects] (defaults 1 and 5; at most 50). */
  minObjects?: number;
  maxObjects?: number;
  /** Smallest object extent in pixels (default 8) and the largest as a fraction of the shorter side (default 0.6). */
  minObjectSize?: number;
  maxObjectScale?: number;
  /** Shape classes (2 to 8, default 8: SYNTHETIC_CLASSES). */
  shapes?: number;
  /** Fashion-MNIST items as objects too (half of them), from this folder, or Debian's when true (default false). */
  fashion?: boolean | string;
  /** The share of the images in the test split (default 0.5, as VOC2007); the rest are trainval. */
  testFraction?: number;
  /** Pixel noise, standard deviation in 0..1 units (default 0.05); clutter strokes and blobs per image, at most (default 6). */
  noise?: number;
  clutter?: number;
  /** JPEG quality (default 90). */
  quality?: number;
}

export interface DetectionDataResult {
  root: string;
  classes: string[];
  trainval: number;
  test: number;
  objects: number;
  difficult: number;
  truncated: number;
}

/**
 * Writes the dataset to `root`, which must not exist or be an empty folder. Image i (id
 * String(i).padStart(6, '0')) is a pure function of (seed, i); which split it lands in, of the
 * seed. Objects whose shorter box side is under 8 px or which are more than 60% hidden by later
 * objects are marked difficult; objects cut by the border, truncated.
 */
export async function makeDetectionData(root: string, opts: DetectionDataOptions = {}): Promise<DetectionDataResult> {
  const fn = 'sp.makeDetectionData';
  if (typeof root !== 'string' || root === '') fail(`${fn}: root must be a folder path, got ${describe(root)}`);
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const int = (name: keyof DetectionDataOptions, d: number, lo: number, hi: number) => {
    const v = opts[name] ?? d;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) fail(`${fn}: options.${name} must be an integer in [${lo}, ${hi}], got ${describe(opts[name])}`);
    return v;
  };
  const num = (name: keyof DetectionDataOptions, d: number, lo: number, hi: number, open = false) => {
    const v = opts[name] ?? d;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (open && v === lo)) fail(`${fn}: options.${name} must be a number in ${open ? '(' : '['}${lo}, ${hi}], got ${describe(opts[name])}`);
    return v;
  };
  const count = int('images', 300, 1, 100_000);
  const seed = int('seed', 0, 0, 2 ** 32 - 1);
  const side = (name: 'minSize' | 'maxSize', d: [number, number], lo: [number, number]): [number, number] => {
    const v = opts[name] ?? d;
    const p = typeof v === 'number' ? [v, v] : v;
    if (!Array.isArray(p) || p.length !== 2 || !p.every((x, i) => Number.isInteger(x) && x >= lo[i] && x <= 4096))
      fail(`${fn}: options.${name} must be an integer in [${lo[0] === lo[1] ? lo[0] : `${lo.join('x')} (WxH)`}, 4096] or a pair [W, H] of them, got ${describe(opts[name])}`);
    return [p[0], p[1]];
  };
  const minSize = side('minSize', [96, 96], [16, 16]);
  const maxSize = side('maxSize', [Math.max(160, minSize[0]), Math.max(160, minSize[1])], minSize);
  const minObjects = int('minObjects', 1, 0, 50), maxObjects = int('maxObjects', Math.max(5, minObjects), Math.max(1, minObjects), 50);
  const minObjectSize = int('minObjectSize', 8, 4, Math.min(...minSize));
  const maxObjectScale = num('maxObjectScale', 0.6, 0, 1, true);
  const shapes = int('shapes', SYNTHETIC_CLASSES.length, 2, SYNTHETIC_CLASSES.length);
  const testFraction = num('testFraction', 0.5, 0, 1);
  const noise = num('noise', 0.05, 0, 1), clutter = int('clutter', 6, 0, 100), quality = int('quality', 90, 1, 100);
  const fashion = opts.fashion ?? false;
  if (typeof fashion !== 'boolean' && (typeof fashion !== 'string' || fashion === '')) fail(`${fn}: options.fashion must be a boolean or a folder path, got ${describe(opts.fashion)}`);
  const fashionDir = fashion === true ? FASHION_DIR : fashion || null;
  if (fs.existsSync(root) && (!fs.statSync(root).isDirectory() || fs.readdirSync(root).length > 0))
    fail(`${fn}: ${root} exists and is not an empty folder (give a new folder: nothing is overwritten)`);
  if (!fs.existsSync(path.dirname(path.resolve(root)))) fail(`${fn}: the folder of ${root} does not exist`);
  const nTest = Math.round(count * testFraction);
  // The split: a seeded shuffle of the ids; its first nTest are the test images.
  const order = Array.from({ length: count }, (_, i) => i);
  const r = prng(mixSeed(seed, 0x5e1177));
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const isTest = new Uint8Array(count);
  for (let k = 0; k < nTest; k++) isTest[order[k]] = 1;
  const classes = [...SYNTHETIC_CLASSES.slice(0, shapes), ...(fashionDir ? FASHION_CLASSES : [])];
  const items = fashionDir ? { trainval: await readFashionItems(fn, fashionDir, 'train'), test: await readFashionItems(fn, fashionDir, 't10k') } : null;
  const base: SceneOptions = { minSize, maxSize, minObjects, maxObjects, minObjectSize, maxObjectScale, shapes, noise, clutter, difficultSide: 8, minVisible: 0.4 };
  // Written into a folder beside root, renamed to root when complete: an interrupted run leaves no half dataset at root.
  const work = path.join(path.dirname(path.resolve(root)), `.${path.basename(path.resolve(root))}.partial-${process.pid}`);
  const ids = Array.from({ length: count }, (_, i) => String(i).padStart(6, '0'));
  let objects = 0, difficult = 0, truncated = 0;
  try {
    fs.mkdirSync(work); // not recursive: the parent exists (checked), and this fails at once where it cannot be written
    for (const d of ['Annotations', 'JPEGImages', 'ImageSets', path.join('ImageSets', 'Main')]) fs.mkdirSync(path.join(work, d));
    for (let i = 0; i < count; i++) {
      const split = isTest[i] ? 'test' : 'trainval';
      const scene = drawScene(mixSeed(seed, i), items ? { ...base, items: items[split] } : base);
      await writeRgbImage(path.join(work, 'JPEGImages', `${ids[i]}.jpg`), scene.rgb, scene.width, scene.height, quality);
      const xml = formatVocAnnotation({
        filename: `${ids[i]}.jpg`, width: scene.width, height: scene.height, depth: 3,
        objects: scene.objects.map((o) => ({ name: classes[o.label], box: o.box, difficult: o.difficult, truncated: o.truncated, pose: 'Unspecified' })),
      }, 'sppnet-shapes', `sppnet make-detection-data, seed ${seed}`);
      fs.writeFileSync(path.join(work, 'Annotations', `${ids[i]}.xml`), xml);
      objects += scene.objects.length;
      difficult += scene.objects.filter((o) => o.difficult).length;
      truncated += scene.objects.filter((o) => o.truncated).length;
    }
    const list = (test: boolean) => ids.filter((_, i) => !!isTest[i] === test).map((id) => `${id}\n`).join('');
    fs.writeFileSync(path.join(work, 'ImageSets', 'Main', 'trainval.txt'), list(false));
    fs.writeFileSync(path.join(work, 'ImageSets', 'Main', 'test.txt'), list(true));
    fs.writeFileSync(path.join(work, 'classes.txt'), classes.map((c) => `${c}\n`).join(''));
    if (fs.existsSync(root)) fs.rmdirSync(root); // empty (checked above)
    fs.renameSync(work, root);
  } catch (e) {
    fs.rmSync(work, { recursive: true, force: true });
    if (e instanceof SppnetError) throw e;
    throw new SppnetError(`${fn}: cannot write the dataset to ${root}: ${(e as Error).message}`, 'SPPNET_INVALID_ARGUMENT');
  }
  return { root, classes, trainval: count - nTest, test: nTest, objects, difficult, truncated };
}

/** The class names a dataset written by makeDetectionData lists in root/classes.txt. */
export function detectionClasses(root: string): string[] {
  const fn = 'sp.detectionClasses';
  if (typeof root !== 'string' || root === '') fail(`${fn}: root must be a folder path, got ${describe(root)}`);
  const file = path.join(root, 'classes.txt');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    return fail(`${fn}: cannot read ${file}: ${(e as Error).message}`);
  }
  const names = text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  if (!names.length) fail(`${fn}: ${file} names no classes`);
  return names;
}
