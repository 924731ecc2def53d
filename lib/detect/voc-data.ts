// sp.data.voc: a VOC-format dataset (the VOCdevkit layout) read into memory: the image ids of a
// split, each image's file, size and objects with their class labels. Boxes stay in VOC's
// convention: [xmin, ymin, xmax, ymax], 1-based, inclusive pixel coordinates.
import * as fs from 'fs';
import * as path from 'path';
import { describe, fail, isPositiveInt, SppnetError } from '../core/errors';
import { parseVocAnnotation, VOC_CLASSES, VOC_DEFAULT_MAX_BYTES, VOC_DEFAULT_MAX_OBJECTS } from '../io/voc';

export interface VocBox {
  /** The class name as the file gives it, and its index in the dataset's classes. */
  name: string;
  label: number;
  /**
   * [xmin, ymin, xmax, ymax] as in the annotation: 1-based and inclusive, so the image's top-left
   * pixel is (1, 1), the box is xmax - xmin + 1 pixels wide, and 0-based pixel indices are these
   * minus 1 (what py-faster-rcnn does when it loads them).
   */
  box: [number, number, number, number];
  difficult: boolean;
  truncated: boolean;
  pose: string;
}

export interface VocImage {
  /** The id of the split file's line (the file names' stem). */
  id: string;
  /** root/JPEGImages/<id>.jpg */
  path: string;
  /** As the annotation's <size> states it. */
  width: number;
  height: number;
  objects: VocBox[];
}

export interface VocDataset {
  readonly root: string;
  readonly split: string;
  /** Class names; labels index this list. */
  readonly classes: readonly string[];
  readonly images: readonly VocImage[];
  readonly length: number;
  /** Objects of all the images, difficult ones included (and those skipped as of other classes, not). */
  readonly objectCount: number;
  readonly description: string;
}

export interface VocOptions {
  /** The split: root/ImageSets/Main/<split>.txt (default 'trainval'; VOC also has 'train', 'val', 'test'). */
  split?: string;
  /** Class names, label i = classes[i] (default the 20 VOC classes, sp.VOC_CLASSES). */
  classes?: readonly string[];
  /** An object of a class not in `classes`: 'error' (default) or 'skip' (leave it out). */
  unknown?: 'error' | 'skip';
  /** Limits: an annotation file's bytes (default 1 MiB), its objects (default 1,000), the split's images (default 100,000). */
  maxBytes?: number;
  maxObjects?: number;
  maxImages?: number;
}

export const VOC_DEFAULT_MAX_IMAGES = 100_000;

/** Runs `work` on every item, at most `n` at a time; results in order. */
async function mapLimit<T, R>(items: readonly T[], n: number, work: (x: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  // The error of the first failing item in list order, whichever finished first: errors do not
  // depend on timing. No new item starts once one failed.
  const failed: Array<{ i: number; e: unknown }> = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length && failed.length === 0) {
      const i = next++;
      try {
        out[i] = await work(items[i], i);
      } catch (e) {
        failed.push({ i, e });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (failed.length) throw failed.reduce((a, b) => (b.i < a.i ? b : a)).e;
  return out;
}

/** @internal A class list option: unique non-empty strings. */
export function checkClasses(fn: string, v: unknown, dflt: readonly string[]): readonly string[] {
  if (v === undefined) return dflt;
  if (!Array.isArray(v) || v.length === 0 || !v.every((c) => typeof c === 'string' && c.trim() !== '' && c.trim() === c))
    fail(`${fn}: options.classes must be a non-empty array of class names (non-empty strings without surrounding spaces), got ${describe(v)}`);
  const dup = v.find((c, i) => v.indexOf(c) !== i);
  if (dup !== undefined) fail(`${fn}: options.classes names ${JSON.stringify(dup)} twice`);
  return Object.freeze([...v]);
}

/**
 * Reads a VOC-format dataset: root/ImageSets/Main/<split>.txt lists the image ids (one a line),
 * root/Annotations/<id>.xml holds each image's size and objects, root/JPEGImages/<id>.jpg the image
 * (its path is given, not read). Every annotation is parsed strictly (see parseVocAnnotation); an
 * error names the file.
 */
export async function voc(root: string, opts: VocOptions = {}): Promise<VocDataset> {
  const fn = 'sp.data.voc';
  if (typeof root !== 'string' || root === '') fail(`${fn}: root must be a folder path (a VOCdevkit year folder, e.g. VOCdevkit/VOC2007), got ${describe(root)}`);
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const split = opts.split ?? 'trainval';
  if (typeof split !== 'string' || !/^[\w.-]+$/.test(split)) fail(`${fn}: options.split must be a split name (letters, digits, _ . -), got ${describe(opts.split)}`);
  const classes = checkClasses(fn, opts.classes, VOC_CLASSES);
  const unknown = opts.unknown ?? 'error';
  if (unknown !== 'error' && unknown !== 'skip') fail(`${fn}: options.unknown must be 'error' or 'skip', got ${describe(opts.unknown)}`);
  const limit = (name: 'maxBytes' | 'maxObjects' | 'maxImages', d: number) => {
    const v = opts[name] ?? d;
    if (!isPositiveInt(v)) fail(`${fn}: options.${name} must be a positive integer, got ${describe(opts[name])}`);
    return v;
  };
  const maxBytes = limit('maxBytes', VOC_DEFAULT_MAX_BYTES), maxObjects = limit('maxObjects', VOC_DEFAULT_MAX_OBJECTS), maxImages = limit('maxImages', VOC_DEFAULT_MAX_IMAGES);
  const splitFile = path.join(root, 'ImageSets', 'Main', `${split}.txt`);
  let listing: string;
  try {
    const st = await fs.promises.stat(splitFile);
    // An id line is short: a list over 64 bytes an image is refused before it is read.
    if (st.size > 64 * maxImages) throw new SppnetError(`${fn}: ${splitFile} has ${st.size} bytes, more than ${maxImages} image ids take (options.maxImages ${maxImages})`, 'SPPNET_TOO_LARGE');
    listing = await fs.promises.readFile(splitFile, 'utf8');
  } catch (e) {
    if (e instanceof SppnetError) throw e;
    let have = '';
    try {
      const splits = (await fs.promises.readdir(path.join(root, 'ImageSets', 'Main'))).filter((f) => f.endsWith('.txt') && !f.includes('_')).map((f) => f.slice(0, -4));
      have = splits.length ? ` (splits there: ${splits.sort().join(', ')})` : ' (no split files there)';
    } catch {
      have = ` (${root} has no ImageSets/Main folder: is it a VOCdevkit year folder such as VOCdevkit/VOC2007?)`;
    }
    return fail(`${fn}: cannot read the split file ${splitFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}${have}`);
  }
  const ids: string[] = [];
  const seen = new Set<string>();
  listing.split(/\r?\n/).forEach((raw, i) => {
    const l = raw.trim();
    if (!l) return;
    if (!/^[\w.-]+$/.test(l) || l === '.' || l === '..')
      fail(`${fn}: ${splitFile}: line ${i + 1} must be one image id (letters, digits, _ . -), got ${JSON.stringify(raw.slice(0, 80))}`);
    if (seen.has(l)) fail(`${fn}: ${splitFile}: line ${i + 1}: the image id ${l} appears twice`);
    seen.add(l);
    ids.push(l);
  });
  if (ids.length > maxImages) throw new SppnetError(`${fn}: ${splitFile} lists ${ids.length} images, more than options.maxImages ${maxImages}`, 'SPPNET_TOO_LARGE');
  if (!ids.length) fail(`${fn}: ${splitFile} lists no images`);
  const index = new Map(classes.map((c, i) => [c, i]));
  let objectCount = 0;
  const images = await mapLimit(ids, 16, async (id): Promise<VocImage> => {
    const file = path.join(root, 'Annotations', `${id}.xml`);
    const where = `${fn}: ${file}`;
    let bytes: Buffer;
    try {
      const st = await fs.promises.stat(file);
      if (st.size > maxBytes) throw new SppnetError(`${where}: the file has ${st.size} bytes, more than options.maxBytes ${maxBytes}`, 'SPPNET_TOO_LARGE');
      bytes = await fs.promises.readFile(file);
    } catch (e) {
      if (e instanceof SppnetError) throw e;
      return fail(`${fn}: cannot read the annotation of ${id} (${splitFile} lists it): ${(e as Error).message}`);
    }
    const a = parseVocAnnotation(bytes, where, { maxBytes, maxObjects });
    const objects: VocBox[] = [];
    for (const o of a.objects) {
      const label = index.get(o.name);
      if (label === undefined) {
        if (unknown === 'skip') continue;
        fail(`${where}: an object of class ${JSON.stringify(o.name)}, which options.classes does not name (${classes.length <= 8 ? classes.join(', ') : `${classes.slice(0, 8).join(', ')}, ...`}); pass the dataset's classes, or unknown: 'skip' to leave such objects out`);
      }
      objects.push({ name: o.name, label, box: o.box, difficult: o.difficult, truncated: o.truncated, pose: o.pose });
    }
    objectCount += objects.length;
    return { id, path: path.join(root, 'JPEGImages', `${id}.jpg`), width: a.width, height: a.height, objects };
  });
  return Object.freeze({
    root,
    split,
    classes,
    images,
    length: images.length,
    objectCount,
    description: `VOC ${root} (${split}): ${images.length} images, ${objectCount} objects of ${classes.length} classes`,
  });
}
