// sp.trainDetector: SPP-net's detection training on a VOC-format dataset, in the paper's stages.
// (1) The network is trained as a classifier of windows cropped and warped to windowSide (our
// stand-in for the paper's ImageNet pre-training, which we cannot download): ground-truth boxes,
// jittered, as their class, windows overlapping no object as background. (2) Its conv trunk then
// stays fixed: features are computed once per image and scale, and every sampled window is pooled
// from the maps of its scale (sp.spp with windows) and cached. (3) fc6, fc7 and the classifier are
// fine-tuned on the cached windows, 25% foreground (IoU >= 0.5) and background IoU in [0.1, 0.5).
// (4) Box regressors: ridge regression on the pooled features of windows with IoU >= 0.6.
import { Device } from '../core/backend';
import { describe, fail, isPositiveInt } from '../core/errors';
import { prng } from '../core/random';
import { ragged, RaggedBatch } from '../core/ragged';
import { tensor, Tensor } from '../core/tensor';
import { IMAGENET_MEAN, IMAGENET_STD, readImage } from '../io/images';
import { buildModel } from '../nn/load';
import { ModelSpec } from '../nn/spec';
import { cropResize } from '../ops/crop';
import { ablationTrunk } from '../train/ablation';
import { boxDeltas } from './boxes';
import { Detector, DetectorConfig } from './detector';
import { vocIou } from './eval';
import { ProposalOptions, proposals } from './proposals';
import { ridge } from './ridge';
import { MiningImage, SvmOptions, trainSvms } from './svm';
import { VocDataset } from './voc-data';
import { WindowMapping } from './windows';

export interface TrainDetectorOptions {
  /** The network; its last fc layer must have classes + 1 outputs. Default detectionSpec(classes + 1). */
  spec?: ModelSpec;
  /** Multi-scale shorter sides (default the paper's [480, 576, 688, 864, 1200]), the single scale (default 688), the training size (default 224). */
  scales?: number[];
  singleScale?: number;
  windowSide?: number;
  mapping?: WindowMapping;
  /**
   * The scales fine-tuning pools windows from: 'multi' (default: each window at the scale closest
   * to windowSide, as at test time), 'random' (each window at one of the multi-scale scales drawn
   * at random, as the released code's training), or 'single'.
   */
  trainScales?: 'single' | 'multi' | 'random';
  /**
   * Weights to start from (a state_dict as sp.loadModel takes it, e.g. readSafetensors(file).tensors
   * of a network pre-trained elsewhere, as the paper starts from ImageNet's); with
   * pretrainEpochs: 0, stage 1 is skipped and the conv layers are used as they are.
   */
  weights?: Map<string, { shape: number[]; data: Float32Array }>;
  /** Stage 1: epochs over the windows (0: none), learning rate (Adam), batch (defaults 8, 1e-3, 64); jittered copies per ground-truth box (default 4). */
  /**
   * Stage 1's multi-size training: the sides windows are warped to, one per batch in turn (default
   * [windowSide, 0.8 windowSide], the paper's 224 and 180). A wider range makes the network see
   * objects at the sizes the single-scale mode pools them at.
   */
  pretrainSides?: number[];
  pretrainEpochs?: number;
  pretrainLr?: number;
  batch?: number;
  jitter?: number;
  /** Stage 3: iterations, learning rate (Adam), batch (defaults 1500, 3e-4, 128); windows cached per image (default 32 foreground, 96 background). */
  finetuneIterations?: number;
  finetuneLr?: number;
  finetuneBatch?: number;
  cacheForeground?: number;
  cacheBackground?: number;
  /** Stage 4: ridge lambda (default 1000, R-CNN's); false: no box regression. */
  bboxLambda?: number | false;
  /**
   * Per-class linear SVMs on the features of the layer before the classifier (fc7), as the paper's
   * option (R-CNN's settings: hinge loss, C 0.001, positives weighted 2, features at mean norm 20):
   * positives are cached windows with IoU >= 0.7 to an object of the class, negatives the cached
   * ones under 0.3 and then, by hard-negative mining (svm.hardNegativePasses, default 1 pass as
   * R-CNN), every proposal under 0.3 that the SVM so far scores inside its margin. Default false.
   */
  svm?: boolean | SvmOptions;
  /** R-CNN's context padding at windowSide (default 0). */
  context?: number;
  proposals?: ProposalOptions;
  seed?: number;
  device?: Device;
  /** Called with a line of progress now and then. */
  log?: (line: string) => void;
}

/** The default detection network: the ablation trunk (stride 8, 64 channels), SPP {6, 3, 2, 1}, fc6 and fc7 (256, ReLU, dropout 0.5) and the classifier. */
export function detectionSpec(outputs: number): ModelSpec {
  return {
    name: 'spp-detector',
    inChannels: 3,
    layers: [
      ...ablationTrunk(),
      { type: 'spp', levels: [6, 3, 2, 1] },
      { type: 'fc', name: 'fc6', out: 256, relu: true },
      { type: 'dropout', p: 0.5 },
      { type: 'fc', name: 'fc7', out: 256, relu: true },
      { type: 'dropout', p: 0.5 },
      { type: 'fc', name: 'fc8', out: outputs },
    ],
  };
}

interface TrainImage {
  path: string;
  size: [number, number];
  /** Ground truth (non-difficult), 0-based inclusive, and class index. */
  gt: number[][];
  labels: number[];
  proposals: Float32Array;
}

const posInt = (fn: string, o: Record<string, unknown>, k: string, d: number) => {
  const v = o[k] ?? d;
  if (!isPositiveInt(v)) fail(`${fn}: options.${k} must be a positive integer, got ${describe(o[k])}`);
  return v as number;
};
const posNum = (fn: string, o: Record<string, unknown>, k: string, d: number) => {
  const v = o[k] ?? d;
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) fail(`${fn}: options.${k} must be a positive number, got ${describe(o[k])}`);
  return v;
};

/** The largest IoU of box b with the ground truth, and which box. */
function bestOverlap(b: ArrayLike<number>, gt: number[][]): { iou: number; k: number } {
  let iou = 0, k = -1;
  gt.forEach((g, i) => {
    const v = vocIou(b, g);
    if (v > iou) (iou = v), (k = i);
  });
  return { iou, k };
}

/** A copy of box g moved and resized at random until its IoU with g is at least minIou. */
function jitterBox(r: () => number, g: number[], size: [number, number], minIou: number): number[] {
  const w = g[2] - g[0] + 1, h = g[3] - g[1] + 1;
  for (let t = 0; t < 20; t++) {
    const dx = (r() - 0.5) * 0.3 * w, dy = (r() - 0.5) * 0.3 * h, sw = Math.exp((r() - 0.5) * 0.3), sh = Math.exp((r() - 0.5) * 0.3);
    const cx = g[0] + w / 2 + dx, cy = g[1] + h / 2 + dy, nw = w * sw, nh = h * sh;
    const b = [Math.max(0, Math.round(cx - nw / 2)), Math.max(0, Math.round(cy - nh / 2)), Math.min(size[1] - 1, Math.round(cx + nw / 2 - 1)), Math.min(size[0] - 1, Math.round(cy + nh / 2 - 1))];
    if (b[2] >= b[0] && b[3] >= b[1] && vocIou(b, g) >= minIou) return b;
  }
  return g;
}

/** Trains a detector on `data` (its images and ground truth); see the file's comment for the stages. */
export async function trainDetector(data: VocDataset, opts: TrainDetectorOptions = {}): Promise<Detector> {
  const fn = 'sp.trainDetector';
  if (typeof data !== 'object' || data === null || !Array.isArray(data.images)) fail(`${fn}: data must be a dataset from sp.data.voc, got ${describe(data)}`);
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const o = opts as Record<string, unknown>;
  const log = opts.log ?? (() => undefined);
  const classes = [...data.classes];
  const config: DetectorConfig = {
    classes,
    scales: opts.scales ?? [480, 576, 688, 864, 1200],
    singleScale: posInt(fn, o, 'singleScale', 688),
    windowSide: posInt(fn, o, 'windowSide', 224),
    mapping: opts.mapping ?? 'paper',
    offset0: 21,
    offset: 6.5,
    context: opts.context ?? 0,
    mean: [...IMAGENET_MEAN],
    std: [...IMAGENET_STD],
  };
  if (!Array.isArray(config.scales) || config.scales.length === 0 || !config.scales.every((s) => isPositiveInt(s) && s <= 4096))
    fail(`${fn}: options.scales must be shorter sides in [1, 4096], got ${describe(opts.scales)}`);
  if (config.mapping !== 'paper' && config.mapping !== 'released') fail(`${fn}: options.mapping must be 'paper' or 'released', got ${describe(opts.mapping)}`);
  if (opts.trainScales !== undefined && !['single', 'multi', 'random'].includes(opts.trainScales)) fail(`${fn}: options.trainScales must be 'single', 'multi' or 'random', got ${describe(opts.trainScales)}`);
  if (!Number.isInteger(config.context) || config.context < 0 || 2 * config.context >= config.windowSide) fail(`${fn}: options.context must be an integer in [0, windowSide / 2), got ${describe(opts.context)}`);
  const epochs = o.pretrainEpochs === 0 ? 0 : posInt(fn, o, 'pretrainEpochs', 8), batch = posInt(fn, o, 'batch', 64), jitter = o.jitter ?? 4;
  if (!Number.isInteger(jitter) || (jitter as number) < 0 || (jitter as number) > 64) fail(`${fn}: options.jitter must be an integer in [0, 64], got ${describe(o.jitter)}`);
  if (opts.pretrainSides !== undefined && (!Array.isArray(opts.pretrainSides) || opts.pretrainSides.length === 0 || !opts.pretrainSides.every((v) => isPositiveInt(v) && v <= 1024)))
    fail(`${fn}: options.pretrainSides must be a non-empty array of sides in [1, 1024], got ${describe(opts.pretrainSides)}`);
  if (opts.svm !== undefined && typeof opts.svm !== 'boolean' && (typeof opts.svm !== 'object' || opts.svm === null)) fail(`${fn}: options.svm must be a boolean or SVM options, got ${describe(opts.svm)}`);
  const passes = typeof opts.svm === 'object' ? opts.svm.hardNegativePasses : undefined;
  if (passes !== undefined && (!Number.isInteger(passes) || passes < 0 || passes > 16)) fail(`${fn}: options.svm.hardNegativePasses must be an integer in [0, 16], got ${describe(passes)}`);
  const iterations = posInt(fn, o, 'finetuneIterations', 1500), ftBatch = posInt(fn, o, 'finetuneBatch', 128);
  const cacheFg = posInt(fn, o, 'cacheForeground', 32), cacheBg = posInt(fn, o, 'cacheBackground', 96);
  const lr1 = posNum(fn, o, 'pretrainLr', 1e-3), lr2 = posNum(fn, o, 'finetuneLr', 3e-4);
  const lambda = opts.bboxLambda === false ? false : posNum(fn, o, 'bboxLambda', 1000);
  const seed = opts.seed ?? 0;
  const r = prng(seed);
  const device = opts.device;
  // A detector file's tensors may be given as they are: its box regressor is not the network's.
  const weights = opts.weights instanceof Map ? new Map([...opts.weights].filter(([k]) => !k.startsWith('bbox_pred.') && !k.startsWith('svm.'))) : opts.weights;
  const model = await buildModel({ spec: opts.spec ?? detectionSpec(classes.length + 1), weights, seed, device }, fn);
  const detector = new Detector(model, config, null);
  const norm = { mean: config.mean, std: config.std, device: model.device };
  try {
    // The images, their ground truth and proposals.
    const t0 = Date.now();
    const imgs: TrainImage[] = [];
    for (const im of data.images as VocDataset["images"]) {
      const keep = im.objects.filter((b) => !b.difficult);
      const p = await proposals(im.path, opts.proposals ?? {});
      imgs.push({ path: im.path, size: [p.height, p.width], gt: keep.map((b) => b.box.map((v) => v - 1)), labels: keep.map((b) => b.label), proposals: p.boxes });
    }
    log(`${fn}: ${imgs.length} images, ${imgs.reduce((s, i) => s + i.proposals.length / 4, 0)} proposals in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // (1) Whole-network training on warped windows.
    const wins: number[][] = []; // [image, x1, y1, x2, y2, label]
    imgs.forEach((im, i) => {
      const bg: number[][] = [];
      for (let k = 0; k < im.proposals.length / 4; k++) {
        const b = Array.from(im.proposals.subarray(4 * k, 4 * k + 4));
        if (bestOverlap(b, im.gt).iou < 0.3) bg.push(b);
      }
      im.gt.forEach((g, k) => {
        wins.push([i, ...g, im.labels[k] + 1]);
        for (let j = 0; j < (jitter as number); j++) wins.push([i, ...jitterBox(r, g, im.size, 0.7), im.labels[k] + 1]);
      });
      const nbg = Math.max(4, im.gt.length * ((jitter as number) + 1));
      for (let j = 0; j < nbg && bg.length; j++) wins.push([i, ...bg[Math.floor(r() * bg.length)], 0]);
    });
    if (epochs > 0) {
      const full = await Promise.all(imgs.map((im) => readImage(im.path, norm)));
      const all = ragged(full);
      full.forEach((t) => t.dispose());
      try {
        model.setOptimizer({ type: 'adam', lr: lr1 });
        const least = Math.max(model.minSize[0], model.minSize[1]);
        const sides = opts.pretrainSides ?? [config.windowSide, Math.max(least, Math.round(config.windowSide * 0.8))];
        if (sides.some((v) => v < least)) fail(`${fn}: options.pretrainSides must be at least the network's smallest input (${least} px), got ${describe(opts.pretrainSides)}`);
        for (let e = 0; e < epochs; e++) {
          const order = wins.map((_, i) => i).sort(() => r() - 0.5);
          let loss = 0, correct = 0, n = 0;
          for (let at = 0; at < order.length; at += batch) {
            const ids = order.slice(at, at + batch);
            const side = sides[(at / batch) % sides.length];
            const wt = tensor(ids.flatMap((i) => wins[i].slice(0, 5)), [ids.length, 5], { device: model.device });
            const crops = await cropResize(all, wt, side, { context: config.context }).finally(() => wt.dispose());
            const s = await model.trainStep(crops, ids.map((i) => wins[i][5])).finally(() => crops.dispose());
            loss += s.loss * s.count;
            correct += s.correct;
            n += s.count;
          }
          log(`${fn}: stage 1 epoch ${e + 1}/${epochs}: loss ${(loss / n).toFixed(4)}, window accuracy ${((100 * correct) / n).toFixed(1)}% (${wins.length} windows)`);
        }
      } finally {
        all.dispose();
      }
    }

    // (2) Fixed conv features; sampled windows pooled and cached.
    const scales = opts.trainScales === 'single' ? [config.singleScale] : config.scales;
    const rows: Float32Array[] = [], labels: number[] = [], reg: Array<{ row: number; cls: number; t: number[] }> = [];
    const classIou: Float32Array[] = []; // per cached row, its largest IoU with an object of each class (the SVMs')
    const overlaps = (b: number[], im: TrainImage) => {
      const o = new Float32Array(classes.length);
      im.gt.forEach((g, k) => (o[im.labels[k]] = Math.max(o[im.labels[k]], vocIou(b, g))));
      return o;
    };
    const D = model.pooledFeatures;
    // Pooled rows of windows of one image: conv features at the scales, each window from its scale (or at's).
    const poolAll = async (im: TrainImage, boxes: Float32Array, at?: Int32Array): Promise<Tensor> => {
      const resized = await Promise.all(scales.map((s) => readImage(im.path, { ...norm, shorterSide: s })));
      const b = ragged(resized);
      resized.forEach((t) => t.dispose());
      const maps: RaggedBatch | Tensor = await model.features(b).finally(() => b.dispose());
      return detector.poolWindows(maps, im.size, boxes, boxes.length / 4, scales, at).finally(() => maps.dispose());
    };
    for (const im of imgs) {
      const cand: number[][] = [...im.gt];
      for (let k = 0; k < im.proposals.length / 4; k++) cand.push(Array.from(im.proposals.subarray(4 * k, 4 * k + 4)));
      const fg: Array<{ b: number[]; k: number; iou: number }> = [], bg: number[][] = [];
      for (const b of cand) {
        const ov = bestOverlap(b, im.gt);
        if (ov.iou >= 0.5) fg.push({ b, k: ov.k, iou: ov.iou });
        else if (ov.iou >= 0.1) bg.push(b);
      }
      const pick = <T>(a: T[], n: number) => a.map((x) => [r(), x] as [number, T]).sort((p, q) => p[0] - q[0]).slice(0, n).map((p) => p[1]);
      const f = pick(fg, cacheFg), g = pick(bg, cacheBg);
      const boxes = Float32Array.from([...f.flatMap((x) => x.b), ...g.flat()]);
      if (boxes.length === 0) continue;
      const at = opts.trainScales === 'random' ? Int32Array.from({ length: boxes.length / 4 }, () => Math.floor(r() * scales.length)) : undefined;
      const pooled = await poolAll(im, boxes, at);
      const host = await pooled.data().finally(() => pooled.dispose());
      f.forEach((x, i) => {
        rows.push(host.subarray(i * D, (i + 1) * D));
        classIou.push(overlaps(x.b, im));
        labels.push(im.labels[x.k] + 1);
        if (x.iou >= 0.6) reg.push({ row: rows.length - 1, cls: im.labels[x.k], t: boxDeltas(x.b, im.gt[x.k]) });
      });
      g.forEach((x, i) => {
        rows.push(host.subarray((f.length + i) * D, (f.length + i + 1) * D));
        classIou.push(overlaps(x, im));
        labels.push(0);
      });
    }
    const fgIdx = labels.flatMap((l, i) => (l > 0 ? [i] : [])), bgIdx = labels.flatMap((l, i) => (l === 0 ? [i] : []));
    log(`${fn}: stage 2: ${fgIdx.length} foreground and ${bgIdx.length} background windows cached (${D} features each, scales ${scales.join(', ')})`);
    if (fgIdx.length === 0) fail(`${fn}: no window overlaps a ground-truth box by 0.5 or more: nothing to fine-tune on`);

    // (3) Fine-tuning the head on cached windows, 25% foreground.
    model.setOptimizer({ type: 'adam', lr: lr2 });
    let loss = 0, correct = 0, n = 0;
    for (let it = 0; it < iterations; it++) {
      const nf = Math.min(fgIdx.length, Math.round(ftBatch * 0.25)), nb = bgIdx.length ? ftBatch - nf : 0;
      const ids = [...Array.from({ length: nf }, () => fgIdx[Math.floor(r() * fgIdx.length)]), ...Array.from({ length: nb }, () => bgIdx[Math.floor(r() * bgIdx.length)])];
      const x = new Float32Array(ids.length * D);
      ids.forEach((id, i) => x.set(rows[id], i * D));
      const xt = tensor(x, [ids.length, D], { device: model.device });
      const s = await model.trainHeadStep(xt, ids.map((id) => labels[id])).finally(() => xt.dispose());
      loss += s.loss * s.count;
      correct += s.correct;
      n += s.count;
      if ((it + 1) % 250 === 0 || it + 1 === iterations) {
        log(`${fn}: stage 3 iteration ${it + 1}/${iterations}: loss ${(loss / n).toFixed(4)}, accuracy ${((100 * correct) / n).toFixed(1)}%`);
        loss = correct = n = 0;
      }
    }

    // (4) Box regression per class, features rescaled to a mean norm of 20.
    if (lambda !== false) {
      const C = classes.length;
      const norms = reg.map((e) => Math.hypot(...rows[e.row]));
      const scale = reg.length ? 20 / (norms.reduce((a, b) => a + b, 0) / reg.length || 1) : 1;
      const W = new Float32Array(4 * C * D), B = new Float32Array(4 * C);
      for (let c = 0; c < C; c++) {
        const mine = reg.filter((e) => e.cls === c);
        const X = new Float32Array(mine.length * D), Y = new Float32Array(mine.length * 4);
        mine.forEach((e, i) => {
          const row = rows[e.row];
          for (let j = 0; j < D; j++) X[i * D + j] = row[j] * scale;
          Y.set(e.t, 4 * i);
        });
        const w = await ridge(X, mine.length, D, Y, 4, lambda);
        for (let j = 0; j < 4 * D; j++) W[4 * c * D + j] = w.weight[j] * scale;
        B.set(w.bias, 4 * c);
      }
      detector.setRegressor({ weight: tensor(W, [4 * C, D], { device: model.device }), bias: tensor(B, [4 * C], { device: model.device }) });
      log(`${fn}: stage 4: box regressors from ${reg.length} windows (lambda ${lambda})`);
    }
    // (5) The paper's option: per-class linear SVMs on the fine-tuned head's features.
    if (opts.svm) {
      // Hard-negative mining goes over every proposal of every image (and its ground truth), at the scales of stage 2.
      const windows = async (i: number): Promise<MiningImage | null> => {
        const im = imgs[i];
        const boxes = Float32Array.from([...im.gt.flat(), ...im.proposals]);
        if (boxes.length === 0) return null;
        const all = Array.from({ length: boxes.length / 4 }, (_, k) => Array.from(boxes.subarray(4 * k, 4 * k + 4)));
        return { rows: await poolAll(im, boxes), classIou: all.map((b) => overlaps(b, im)) };
      };
      const svm = await trainSvms(detector, rows, classIou, opts.svm === true ? {} : opts.svm, seed, { count: imgs.length, windows });
      log(`${fn}: stage 5: ${classes.length} linear SVMs on ${svm.layer} (${svm.features} features): ${svm.summary}`);
    }
    return detector;
  } catch (e) {
    detector.dispose();
    throw e;
  }
}
