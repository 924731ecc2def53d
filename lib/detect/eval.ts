// sp.vocEval: PASCAL VOC detection evaluation, AP per class and mAP, as py-faster-rcnn's
// lib/datasets/voc_eval.py computes it (the VOC2007 devkit's rules): per class, detections in
// descending score; each is matched to the ground-truth box of its image and class that it
// overlaps most; a match above the threshold to a box not yet taken is a true positive, to a
// difficult box neither, anything else a false positive; AP from the precision/recall curve.
import { describe, fail } from '../core/errors';
import { checkOpts, numberOption, booleanOption } from '../core/checks';

/** One detection: the image's id, its class (name or index), its score and box. */
export interface Detection {
  image: string;
  label: string | number;
  score: number;
  /** [x1, y1, x2, y2] in VOC's inclusive pixel coordinates (as the ground truth's boxes). */
  box: readonly number[];
}

/** The ground truth: what sp.data.voc returns, or the same shape built by hand. */
export interface GroundTruth {
  readonly classes: readonly string[];
  readonly images: ReadonlyArray<{
    readonly id: string;
    readonly objects: ReadonlyArray<{ readonly label?: number; readonly name?: string; readonly box: readonly number[]; readonly difficult?: boolean }>;
  }>;
}

export interface VocEvalOptions {
  /** The overlap (IoU) a detection needs with a ground-truth box (default 0.5). */
  iou?: number;
  /** The VOC2007 11-point interpolated AP (default true); false: the area under the monotone precision envelope (VOC2010 on). */
  use07?: boolean;
  /**
   * Whether an overlap of exactly `iou` counts (default false: it must exceed it, as voc_eval.py's
   * `ovmax > ovthresh`; true: at least it, as the MATLAB devkit's `ovmax >= minoverlap`).
   */
  inclusive?: boolean;
}

export interface ClassEval {
  name: string;
  /** Average precision; NaN for a class with no (non-difficult) ground truth. */
  ap: number;
  /** Non-difficult ground-truth objects (voc_eval.py's npos). */
  positives: number;
  difficult: number;
  detections: number;
  truePositives: number;
  falsePositives: number;
  /** After each detection, in descending score: cumulative recall and precision. */
  recall: number[];
  precision: number[];
}

export interface VocEvalResult {
  /** Per class, in the ground truth's class order. */
  classes: ClassEval[];
  /** AP per class (NaN where a class has no ground truth). */
  ap: number[];
  /** The mean AP over the classes that have ground truth (NaN if none has). */
  mAP: number;
  iou: number;
  use07: boolean;
  inclusive: boolean;
}

/** Intersection over union in VOC's pixel-inclusive convention: width x2 - x1 + 1, as voc_eval.py. */
export function vocIou(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const iw = Math.max(Math.min(a[2], b[2]) - Math.max(a[0], b[0]) + 1, 0);
  const ih = Math.max(Math.min(a[3], b[3]) - Math.max(a[1], b[1]) + 1, 0);
  const inter = iw * ih;
  return inter / ((a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter);
}

/**
 * AP from recall and precision (cumulative, in descending score). use07: the mean over
 * t = 0, 0.1, ..., 1 (as numpy's arange gives them: k * 0.1) of the highest precision at a recall
 * >= t (0 if none); else the area under the precision envelope (each precision raised to the
 * highest at any larger recall), summed where recall changes.
 */
export function vocAp(recall: readonly number[], precision: readonly number[], use07: boolean): number {
  if (use07) {
    let ap = 0;
    for (let k = 0; k <= 10; k++) {
      const t = k * 0.1;
      let p = -Infinity;
      for (let i = 0; i < recall.length; i++) if (recall[i] >= t && precision[i] > p) p = precision[i];
      ap += (p === -Infinity ? 0 : p) / 11;
    }
    return ap;
  }
  const mrec = [0, ...recall, 1], mpre = [0, ...precision, 0];
  for (let i = mpre.length - 1; i > 0; i--) mpre[i - 1] = Math.max(mpre[i - 1], mpre[i]);
  let ap = 0;
  for (let i = 0; i + 1 < mrec.length; i++) if (mrec[i + 1] !== mrec[i]) ap += (mrec[i + 1] - mrec[i]) * mpre[i + 1];
  return ap;
}

const isBox = (b: unknown): b is number[] =>
  Array.isArray(b) && b.length === 4 && b.every((x) => typeof x === 'number' && Number.isFinite(x)) && b[2] >= b[0] && b[3] >= b[1];

/**
 * VOC detection evaluation: AP per class and mAP. Detections of an image the ground truth does not
 * list, or of a class it does not name, are errors; so are malformed boxes and non-finite scores.
 * Equal scores keep the detections' given order (voc_eval.py's numpy sort leaves it unspecified).
 */
export function vocEval(detections: readonly Detection[], groundTruth: GroundTruth, options?: VocEvalOptions): VocEvalResult {
  const fn = 'sp.vocEval';
  const o = checkOpts(fn, options);
  const iou = numberOption(fn, o, 'iou', 0.5, (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  const use07 = booleanOption(fn, o, 'use07', true);
  const inclusive = booleanOption(fn, o, 'inclusive', false);
  if (!Array.isArray(detections)) fail(`${fn}: detections must be an array of { image, label, score, box }, got ${describe(detections)}`);
  if (typeof groundTruth !== 'object' || groundTruth === null || !Array.isArray(groundTruth.classes) || !Array.isArray(groundTruth.images))
    fail(`${fn}: groundTruth must be a dataset from sp.data.voc or { classes, images: [{ id, objects }] }, got ${describe(groundTruth)}`);
  const classes = groundTruth.classes;
  const K = classes.length;
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const labelOf = (v: unknown, what: string): number => {
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < K) return v;
    if (typeof v === 'string' && classIndex.has(v)) return classIndex.get(v)!;
    return fail(`${fn}: ${what} must be a class name of the ground truth or an index in [0, ${K}), got ${describe(v)}`);
  };
  // Per class, per image: the boxes, their difficult flags and whether a detection took them.
  type Gt = { boxes: number[][]; difficult: boolean[]; taken: boolean[] };
  const gt: Array<Map<string, Gt>> = classes.map(() => new Map());
  const positives = new Array<number>(K).fill(0), difficultCount = new Array<number>(K).fill(0);
  const images = new Set<string>();
  groundTruth.images.forEach((img, i) => {
    if (typeof img?.id !== 'string' || !Array.isArray(img.objects)) fail(`${fn}: groundTruth.images[${i}] must be { id: string, objects: [...] }, got ${describe(img)}`);
    if (images.has(img.id)) fail(`${fn}: groundTruth.images[${i}]: the image id ${img.id} appears twice`);
    images.add(img.id);
    (img.objects as GroundTruth['images'][number]['objects']).forEach((ob, j) => {
      const what = `groundTruth.images[${i}].objects[${j}]`;
      const c = labelOf(ob?.label ?? ob?.name, `${what}.label (or .name)`);
      if (!isBox(ob.box)) fail(`${fn}: ${what}.box must be [x1, y1, x2, y2], finite, x2 >= x1, y2 >= y1, got ${describe(ob.box)}`);
      let g = gt[c].get(img.id);
      if (!g) gt[c].set(img.id, (g = { boxes: [], difficult: [], taken: [] }));
      g.boxes.push([...ob.box]);
      g.difficult.push(ob.difficult === true);
      g.taken.push(false);
      if (ob.difficult === true) difficultCount[c]++;
      else positives[c]++;
    });
  });
  const perClass: number[][] = classes.map(() => []);
  detections.forEach((d, i) => {
    const what = `detections[${i}]`;
    if (typeof d !== 'object' || d === null) fail(`${fn}: ${what} must be { image, label, score, box }, got ${describe(d)}`);
    if (typeof d.image !== 'string' || !images.has(d.image)) fail(`${fn}: ${what}.image must be the id of a ground-truth image, got ${describe(d.image)}`);
    if (typeof d.score !== 'number' || !Number.isFinite(d.score)) fail(`${fn}: ${what}.score must be a finite number, got ${describe(d.score)}`);
    if (!isBox(d.box)) fail(`${fn}: ${what}.box must be [x1, y1, x2, y2], finite, x2 >= x1, y2 >= y1, got ${describe(d.box)}`);
    perClass[labelOf(d.label, `${what}.label`)].push(i);
  });
  const out: ClassEval[] = classes.map((name, c) => {
    const order = perClass[c].sort((a, b) => detections[b].score - detections[a].score || a - b);
    let tp = 0, fp = 0;
    const recall: number[] = [], precision: number[] = [];
    for (const i of order) {
      const d = detections[i];
      const g = gt[c].get(d.image);
      let ovmax = -Infinity, jmax = -1;
      if (g) for (let j = 0; j < g.boxes.length; j++) {
        const ov = vocIou(d.box, g.boxes[j]);
        if (ov > ovmax) {
          ovmax = ov;
          jmax = j;
        }
      }
      if (inclusive ? ovmax >= iou : ovmax > iou) {
        if (!g!.difficult[jmax]) {
          if (!g!.taken[jmax]) {
            tp++;
            g!.taken[jmax] = true;
          } else fp++;
        }
      } else fp++;
      recall.push(tp / positives[c]);
      precision.push(tp / Math.max(tp + fp, Number.EPSILON));
    }
    const ap = positives[c] === 0 ? NaN : vocAp(recall, precision, use07);
    return { name, ap, positives: positives[c], difficult: difficultCount[c], detections: order.length, truePositives: tp, falsePositives: fp, recall, precision };
  });
  const valid = out.filter((c) => !Number.isNaN(c.ap));
  const mAP = valid.length ? valid.reduce((s, c) => s + c.ap, 0) / valid.length : NaN;
  return { classes: out, ap: out.map((c) => c.ap), mAP, iou, use07, inclusive };
}
