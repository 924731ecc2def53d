// SPP-net's detector: conv features once per image and scale, each candidate window pooled from
// the maps of the scale where it is closest to the training size (sp.spp with windows), the fc
// head's softmax over the classes and background, box regression, per-class NMS. The R-CNN
// baseline runs the same network on each window cropped and warped to that size instead.
import { describe, fail, isPositiveInt, overLimit, signalOption, SppnetError, throwIfAborted } from '../core/errors';
import { RaggedBatch, ragged } from '../core/ragged';
import { Tensor, tensor } from '../core/tensor';
import { describeSource, probeImage, readImage, targetSize } from '../io/images';
import { LayerSpecs } from '../nn/layer-types';
import { Model } from '../nn/model';
import { cropResize } from '../ops/crop';
import { softmax } from '../ops/elementwise';
import { linear } from '../ops/linear';
import { batchedNms } from '../ops/nms';
import { spp } from '../ops/spp';
import { applyDeltas } from './boxes';
import { ProposalOptions, proposals } from './proposals';
import { chooseScales, mapWindow, MappingOptions, scaleBox, trunkStride, WindowMapping } from './windows';

/** How a detector was trained and runs; stored with its weights. */
export interface DetectorConfig {
  /** Object classes; the network's class 0 is background and class i + 1 is classes[i]. */
  classes: string[];
  /** Shorter sides of the multi-scale mode (the paper: 480, 576, 688, 864, 1200) and of the single-scale mode (688). */
  scales: number[];
  singleScale: number;
  /** The side the network was trained on (224 in the paper): windows are pooled at the scale whose area is closest to side², and warped to it by the R-CNN baseline. */
  windowSide: number;
  mapping: WindowMapping;
  offset0: number;
  offset: number;
  /** R-CNN's context padding at windowSide (pixels). */
  context: number;
  /** With SVMs (trainDetector's svm option): the head layer whose output they score. */
  svmLayer?: string;
  /** Image normalisation (sp.readImage's). */
  mean: number[];
  std: number[];
}

export interface DetectOptions {
  /** 'spp' (default): SPP-net; 'rcnn': the R-CNN baseline with the same network and windows. */
  mode?: 'spp' | 'rcnn';
  /** 'single' (default: config.singleScale), 'multi' (config.scales), or shorter sides. */
  scales?: 'single' | 'multi' | number[];
  /** Candidate windows [x1, y1, x2, y2] (0-based inclusive pixels, 4 numbers each) instead of sp.proposals. */
  boxes?: ArrayLike<number>;
  proposals?: ProposalOptions;
  /** Detections below this score are dropped (default 0.05); NMS IoU within a class (default 0.3); at most this many per image (default 100). */
  minScore?: number;
  nms?: number;
  maxDetections?: number;
  /** Box regression (default true when the detector has it). */
  regress?: boolean;
  /** 'softmax' (default: the head's class probabilities) or 'svm' (the per-class SVMs' margins; minScore then defaults to -1). */
  classifier?: 'softmax' | 'svm';
  /** R-CNN mode: windows per network call (default 256). */
  chunk?: number;
  /** Refuse images with more pixels than this, from the header, before decoding (default 4,000,000, as sp.proposals; SPPNET_TOO_LARGE). */
  maxPixels?: number;
  /** Stops the detection between its stages once aborted (SPPNET_ABORTED): a server's client that went away. */
  signal?: AbortSignal;
}

export interface DetectedBox {
  /** [x1, y1, x2, y2], 0-based pixel indices of the first and last pixel (fractional after regression). */
  box: [number, number, number, number];
  label: string;
  class: number;
  score: number;
}

/** Seconds per stage. */
export interface DetectTiming {
  proposals: number; decode: number; conv: number; pooling: number; fc: number; nms: number; total: number;
}

export interface DetectResult {
  width: number;
  height: number;
  windows: number;
  detections: DetectedBox[];
  timing: DetectTiming;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

export class Detector {
  readonly model: Model;
  readonly config: DetectorConfig;
  /** Box regression: deltas [K, 4 * classes] = rows W^T + b (the object classes', in order); null without. */
  private regressor: { weight: Tensor; bias: Tensor } | null;
  /** Per-class SVMs on config.svmLayer's output: margins [K, classes] = features W^T + b; null without. */
  private svm: { weight: Tensor; bias: Tensor } | null = null;

  /** @internal Use sp.trainDetector or sp.loadDetector. */
  constructor(model: Model, config: DetectorConfig, regressor: { weight: Tensor; bias: Tensor } | null) {
    checkConfig('Detector', config);
    if (model.classes !== config.classes.length + 1)
      throw new SppnetError(`Detector: the network has ${model.classes} classes, expected ${config.classes.length + 1} (background and ${config.classes.length})`, 'SPPNET_INVALID_ARGUMENT');
    this.model = model;
    this.config = config;
    this.regressor = regressor;
  }

  get hasRegressor(): boolean {
    return this.regressor !== null;
  }

  /** @internal Replaces the box regressor (training). */
  setRegressor(r: { weight: Tensor; bias: Tensor } | null): void {
    this.regressor?.weight.dispose();
    this.regressor?.bias.dispose();
    this.regressor = r;
  }

  /** @internal Replaces the SVMs (training; loading), which score the output of head layer `layer`. */
  setSvm(svm: { weight: Tensor; bias: Tensor } | null, layer?: string): void {
    this.svm?.weight.dispose();
    this.svm?.bias.dispose();
    this.svm = svm;
    if (svm) this.config.svmLayer = layer;
    else delete this.config.svmLayer;
  }

  get hasSvm(): boolean {
    return this.svm !== null;
  }

  /** @internal The SVMs' tensors (for saving). */
  svmTensors(): { weight: Tensor; bias: Tensor } | null {
    return this.svm;
  }

  /** @internal The regressor's tensors (for saving). */
  regressorTensors(): { weight: Tensor; bias: Tensor } | null {
    return this.regressor;
  }

  get sppLayer(): LayerSpecs['spp'] {
    return this.model.spec.layers.find((l) => l.type === 'spp') as LayerSpecs['spp'];
  }

  get mappingOptions(): MappingOptions {
    const c = this.config;
    return { stride: trunkStride(this.model.spec.layers.slice(0, this.model.spec.layers.indexOf(this.sppLayer))), mapping: c.mapping, offset0: c.offset0, offset: c.offset };
  }

  /** @internal The scales a call runs at. */
  scalesOf(fn: string, s: DetectOptions['scales']): number[] {
    if (s === undefined || s === 'single') return [this.config.singleScale];
    if (s === 'multi') return [...this.config.scales];
    if (!Array.isArray(s) || s.length === 0 || s.length > 16 || !s.every((v) => isPositiveInt(v) && v <= 4096))
      fail(`${fn}: options.scales must be 'single', 'multi' or 1 to 16 shorter sides in [1, 4096], got ${describe(s)}`);
    return s;
  }

  /**
   * @internal Pooled features [K, features] of windows (original-image boxes, 0-based inclusive)
   * over the conv maps of one image at `scales` (images: the image resized to each, in order):
   * each window at the scale chosen by chooseScales (or pickScale's, an index into scales per window).
   */
  async poolWindows(maps: RaggedBatch | Tensor, size: readonly [number, number], boxes: Float32Array, count: number, scales: readonly number[], pickScale?: Int32Array): Promise<Tensor> {
    const pick = pickScale ?? chooseScales(boxes, count, size, scales, this.config.windowSide);
    const mo = this.mappingOptions;
    const sizes = maps instanceof RaggedBatch ? maps.sizes : [[maps.shape[2], maps.shape[3]] as const];
    const imageSizes = scales.map((s) => targetSize({ height: size[0], width: size[1] }, s));
    const win = new Float32Array(5 * count);
    for (let i = 0; i < count; i++) {
      const k = pick[i];
      const b = scaleBox(boxes.subarray(4 * i, 4 * i + 4), size, imageSizes[k]);
      const [mh, mw] = sizes[k];
      const c = mapWindow(b, mh, mw, mo);
      win.set([k, c[0], c[1], c[2], c[3]], 5 * i);
    }
    const l = this.sppLayer;
    const w = tensor(win, [count, 5], { device: this.model.device });
    try {
      return await spp(maps, { levels: l.levels, pool: l.pool, bins: l.bins, windows: w });
    } finally {
      w.dispose();
    }
  }

  /** Detects objects in an image (a file path or its bytes). */
  async detect(image: string | Uint8Array, opts: DetectOptions = {}): Promise<DetectResult> {
    const fn = 'Detector.detect';
    if (typeof image !== 'string' && !(image instanceof Uint8Array)) fail(`${fn}: image must be a file path or the image's bytes, got ${describe(image)}`);
    if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
    const mode = opts.mode ?? 'spp';
    if (mode !== 'spp' && mode !== 'rcnn') fail(`${fn}: options.mode must be 'spp' or 'rcnn', got ${describe(opts.mode)}`);
    const classifier = opts.classifier ?? 'softmax';
    if (classifier !== 'softmax' && classifier !== 'svm') fail(`${fn}: options.classifier must be 'softmax' or 'svm', got ${describe(opts.classifier)}`);
    if (classifier === 'svm' && !this.svm) fail(`${fn}: options.classifier is 'svm' but this detector has no SVMs (sp.trainDetector's svm option)`);
    const minScore = opts.minScore ?? (classifier === 'svm' ? -1 : 0.05), iou = opts.nms ?? 0.3, maxDet = opts.maxDetections ?? 100, chunk = opts.chunk ?? 256;
    if (classifier === 'softmax' ? !(minScore >= 0 && minScore <= 1) : !Number.isFinite(minScore)) fail(`${fn}: options.minScore must be ${classifier === 'softmax' ? 'in [0, 1]' : 'a finite number (an SVM margin)'}, got ${describe(opts.minScore)}`);
    if (!(iou >= 0 && iou <= 1)) fail(`${fn}: options.nms must be in [0, 1], got ${describe(opts.nms)}`);
    if (!isPositiveInt(maxDet)) fail(`${fn}: options.maxDetections must be a positive integer, got ${describe(opts.maxDetections)}`);
    if (!isPositiveInt(chunk)) fail(`${fn}: options.chunk must be a positive integer, got ${describe(opts.chunk)}`);
    const scales = this.scalesOf(fn, opts.scales);
    const signal = signalOption(fn, opts.signal);
    const stop = (before: string, ...drop: { dispose(): void }[]) => throwIfAborted(fn, signal, before, drop);
    const t: DetectTiming = { proposals: 0, decode: 0, conv: 0, pooling: 0, fc: 0, nms: 0, total: 0 };
    const t0 = now();
    // The size from the header, checked before anything is decoded; then the windows.
    const maxPixels = opts.maxPixels ?? 4_000_000;
    if (!isPositiveInt(maxPixels)) fail(`${fn}: options.maxPixels must be a positive integer, got ${describe(opts.maxPixels)}`);
    const header = await probeImage(fn, image);
    const [H, W] = [header.height, header.width];
    if (W * H > maxPixels) throw overLimit(fn, `${describeSource(image)} (${W}x${H}) has`, W * H, 'pixels', 'options.maxPixels', maxPixels);
    let boxes: Float32Array;
    if (opts.boxes !== undefined) {
      boxes = checkBoxes(fn, opts.boxes);
    } else {
      stop('the proposals');
      boxes = (await proposals(image, { maxPixels, ...(opts.proposals ?? {}) })).boxes;
      t.proposals = now() - t0;
    }
    stop('decoding the image');
    t.decode -= now();
    const norm = { mean: this.config.mean, std: this.config.std, device: this.model.device };
    const count = boxes.length / 4;
    if (count === 0) {
      t.decode += now();
      t.total = now() - t0;
      return { width: W, height: H, windows: 0, detections: [], timing: t };
    }
    // The R-CNN baseline crops from the image at its own size; SPP-net needs it only at its scales.
    const full = mode === 'rcnn' ? await readImage(image, norm) : undefined;
    let rows: Tensor | undefined, logits: Tensor | undefined;
    try {
      if (mode === 'spp') {
        const read = await Promise.allSettled(scales.map((s) => readImage(image, { ...norm, shorterSide: s })));
        const resized = read.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        const bad = read.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (bad) resized.forEach((r) => r.dispose()); // one scale failed: the others are not kept
        if (bad) throw bad.reason;
        t.decode += now();
        const batch = ragged(resized);
        resized.forEach((r) => r.dispose());
        stop('the convolutions', batch);
        t.conv -= now();
        const maps = await this.model.features(batch).finally(() => batch.dispose());
        t.conv += now();
        t.pooling -= now();
        stop('pooling the windows', maps);
        rows = await this.poolWindows(maps, [H, W], boxes, count, scales).finally(() => maps.dispose());
        t.pooling += now();
        stop('the fully connected layers');
        t.fc -= now();
        logits = await this.model.head(rows);
      } else {
        t.decode += now();
        const parts: Tensor[] = [], logitParts: Tensor[] = [];
        try {
          for (let at = 0; at < count; at += chunk) {
            stop(`windows ${at}-${count - 1}`);
            const n = Math.min(chunk, count - at);
            const win = new Float32Array(5 * n);
            for (let i = 0; i < n; i++) win.set([0, ...boxes.subarray(4 * (at + i), 4 * (at + i) + 4)], 5 * i);
            const wt = tensor(win, [n, 5], { device: this.model.device });
            t.conv -= now();
            const crops = await cropResize(full!, wt, this.config.windowSide, { context: this.config.context }).finally(() => wt.dispose());
            const maps = await this.model.features(crops).finally(() => crops.dispose());
            t.conv += now();
            t.pooling -= now();
            const l = this.sppLayer;
            const r = await spp(maps, { levels: l.levels, pool: l.pool, bins: l.bins }).finally(() => maps.dispose());
            t.pooling += now();
            t.fc -= now();
            parts.push(r);
            logitParts.push(await this.model.head(r));
            t.fc += now();
          }
          rows = await concatRows(parts);
          logits = await concatRows(logitParts);
        } finally {
          parts.forEach((p) => p.dispose());
          logitParts.forEach((p) => p.dispose());
        }
        t.fc -= now();
      }
      const p = classifier === 'svm' ? await this.svmScores(rows) : await softmax(logits).then((probs) => probs.data().finally(() => probs.dispose()));
      const regress = (opts.regress ?? true) && this.regressor !== null;
      const deltas = regress ? await this.deltas(rows) : null;
      t.fc += now();
      t.nms -= now();
      const detections = await this.postprocess(boxes, count, p, deltas, [H, W], minScore, iou, maxDet);
      t.nms += now();
      t.total = now() - t0;
      return { width: W, height: H, windows: count, detections, timing: t };
    } finally {
      full?.dispose();
      rows?.dispose();
      logits?.dispose();
    }
  }

  /** @internal SVM margins [K, 1 + classes] on the host (column 0, background, unused: the layout of softmax's). */
  async svmScores(rows: Tensor): Promise<Float32Array> {
    const f = await this.model.head(rows, { until: this.config.svmLayer });
    const m = await linear(f, this.svm!.weight, this.svm!.bias).finally(() => f.dispose());
    const d = await m.data().finally(() => m.dispose());
    const C = this.config.classes.length, out = new Float32Array((d.length / C) * (C + 1));
    for (let i = 0; i < d.length / C; i++) out.set(d.subarray(i * C, (i + 1) * C), i * (C + 1) + 1);
    return out;
  }

  /** @internal Regression deltas [K, 4 * classes] on the host. */
  async deltas(rows: Tensor): Promise<Float32Array> {
    const r = this.regressor!;
    const d = await linear(rows, r.weight, r.bias);
    return d.data().finally(() => d.dispose());
  }

  /** @internal Scores to detections: per class, boxes regressed, those above minScore, NMS, the best maxDet of all classes. */
  async postprocess(boxes: Float32Array, count: number, probs: Float32Array, deltas: Float32Array | null, size: readonly [number, number], minScore: number, iou: number, maxDet: number): Promise<DetectedBox[]> {
    const C = this.config.classes.length;
    const cand: number[] = [], scores: number[] = [], classes: number[] = [];
    for (let i = 0; i < count; i++) {
      const b = boxes.subarray(4 * i, 4 * i + 4);
      for (let c = 0; c < C; c++) {
        const s = probs[i * (C + 1) + c + 1];
        if (!(s >= minScore)) continue;
        const r = deltas ? applyDeltas(b, deltas.subarray(i * 4 * C + 4 * c, i * 4 * C + 4 * c + 4), size) : [b[0], b[1], b[2], b[3]];
        cand.push(r[0], r[1], r[2] + 1, r[3] + 1); // continuous [x1, x2 + 1) for sp.batchedNms
        scores.push(s);
        classes.push(c);
      }
    }
    const n = scores.length;
    if (n === 0) return [];
    const dev = { device: 'cpu' as const };
    const bt = tensor(cand, [n, 4], dev), st = tensor(scores, [n], dev), ct = tensor(classes, [n], dev);
    let keep: Int32Array;
    try {
      keep = await batchedNms(bt, st, ct, { iou });
    } finally {
      bt.dispose();
      st.dispose();
      ct.dispose();
    }
    const kept = Array.from(keep).sort((a, b) => scores[b] - scores[a] || a - b).slice(0, maxDet);
    return kept.map((k) => ({
      box: [cand[4 * k], cand[4 * k + 1], cand[4 * k + 2] - 1, cand[4 * k + 3] - 1] as [number, number, number, number],
      label: this.config.classes[classes[k]],
      class: classes[k],
      score: scores[k],
    }));
  }

  dispose(): void {
    this.model.dispose();
    this.setRegressor(null);
    this.setSvm(null);
  }
}

/** Checks a detector's configuration (what a detector file carries). */
export function checkConfig(fn: string, c: DetectorConfig): void {
  const bad = (what: string, v: unknown) => fail(`${fn}: the detector's configuration: ${what}, got ${describe(v)}`);
  if (typeof c !== 'object' || c === null) bad('it must be an object', c);
  if (!Array.isArray(c.classes) || c.classes.length === 0 || c.classes.length > 10000 || !c.classes.every((x) => typeof x === 'string')) bad('classes must be 1 to 10,000 names', c.classes);
  const side = (v: unknown) => isPositiveInt(v) && (v as number) <= 4096;
  if (!Array.isArray(c.scales) || c.scales.length === 0 || c.scales.length > 16 || !c.scales.every(side)) bad('scales must be 1 to 16 shorter sides in [1, 4096]', c.scales);
  if (!side(c.singleScale)) bad('singleScale must be in [1, 4096]', c.singleScale);
  if (!side(c.windowSide)) bad('windowSide must be in [1, 4096]', c.windowSide);
  if (c.mapping !== 'paper' && c.mapping !== 'released') bad("mapping must be 'paper' or 'released'", c.mapping);
  if (![c.offset0, c.offset].every(Number.isFinite)) bad('offset0 and offset must be finite numbers', [c.offset0, c.offset]);
  if (!(Number.isInteger(c.context) && c.context >= 0 && 2 * c.context < c.windowSide)) bad('context must be an integer in [0, windowSide / 2)', c.context);
  if (c.svmLayer !== undefined && typeof c.svmLayer !== 'string') bad('svmLayer must be a layer name', c.svmLayer);
  for (const k of ['mean', 'std'] as const)
    if (!Array.isArray(c[k]) || c[k].length !== 3 || !c[k].every((v) => Number.isFinite(v) && (k === 'mean' || v > 0))) bad(`${k} must be 3 finite numbers${k === 'std' ? ' above 0' : ''}`, c[k]);
}

/** Checks user boxes: 4 finite numbers per window with x1 <= x2 and y1 <= y2. */
export function checkBoxes(fn: string, v: unknown): Float32Array {
  if (!(v instanceof Float32Array) && !Array.isArray(v) && !ArrayBuffer.isView(v)) fail(`${fn}: options.boxes must be an array of numbers (x1, y1, x2, y2 per window), got ${describe(v)}`);
  const a = Float32Array.from(v as ArrayLike<number>);
  if (a.length % 4 !== 0) fail(`${fn}: options.boxes has ${a.length} numbers, not a multiple of 4 (x1, y1, x2, y2 per window)`);
  if (a.length / 4 > 100_000) fail(`${fn}: options.boxes has ${a.length / 4} windows, more than 100,000`);
  for (let i = 0; i < a.length; i += 4)
    if (!a.subarray(i, i + 4).every(Number.isFinite) || a[i] > a[i + 2] || a[i + 1] > a[i + 3])
      fail(`${fn}: options.boxes window ${i / 4} is [${Array.from(a.subarray(i, i + 4)).join(', ')}]: need finite x1 <= x2, y1 <= y2`);
  return a;
}

/** Rows of several [n_i, F] tensors as one [sum n_i, F] tensor. */
async function concatRows(parts: Tensor[]): Promise<Tensor> {
  const F = parts[0].shape[1];
  const total = parts.reduce((s, p) => s + p.shape[0], 0);
  const out = new Float32Array(total * F);
  let at = 0;
  for (const p of parts) {
    out.set(await p.data(), at);
    at += p.shape[0] * F;
  }
  return tensor(out, [total, F], { device: parts[0].device });
}
