// The trainer: epochs over a dataset with seeded shuffling, multi-size training (the paper switches
// the input size every epoch; a random size per batch is also offered), or natural-size ragged
// batches; background loading of the next batch; validation; checkpoints that resume exactly; a
// progress line; and a clear stop at the first NaN or Inf loss.
import * as fs from 'fs';
import { Dataset, flip, InputMode, resize, Sample, view } from './data';
import { mixSeed, prng } from '../core/random';
import { describe, fail, isPositiveInt, SppnetError } from '../core/errors';
import { Model } from '../nn/model';
import { readSafetensors, writeSafetensors } from '../io/safetensors';
import { Tensor, tensor } from '../core/tensor';
import { checkSchedule, learningRate, OptimizerOptions, resolveOptimizer, ScheduleOptions } from '../nn/optim';
import { softmaxCrossEntropy } from '../ops/loss';

/** Training input sizes: 'natural' (each image as it is, ragged), a list (one per epoch, cycled: the paper's multi-size training), or a random size per batch. */
export type SizePolicy = 'natural' | number[] | { min: number; max: number };

export interface FitOptions {
  epochs: number;
  /** Images per step (default 32). */
  batchSize?: number;
  /** Default 'natural'. A list like [180, 224] switches size every epoch; [224] is single-size training. */
  sizes?: SizePolicy;
  /** How an image is brought to a fixed training size: 'crop' (random square crop of 0.6-1.0 of the shorter side, then resize; default) or 'warp'. */
  input?: InputMode;
  /** Random horizontal flips (default true). */
  flip?: boolean;
  /** Replaces the model's optimizer (default: keep the model's, SGD lr 0.01 momentum 0.9 wd 5e-4 unless set). */
  optimizer?: OptimizerOptions;
  schedule?: ScheduleOptions;
  /** Evaluated after every epoch, as evaluate() does with `validationInput`. */
  validation?: Dataset;
  validationInput?: EvalInput;
  /** Seed of the data order, augmentation and dropout (default 0). */
  seed?: number;
  /** Path of a checkpoint written at every epoch's end (a temporary file, then renamed). */
  checkpoint?: string;
  /** A checkpoint to resume from: training continues after its last epoch with the same results as without the stop (same backend). */
  resume?: string;
  /**
   * Progress output: true (stderr), false, or a stream. Default: stderr when it is a terminal. On a
   * terminal one line is rewritten in place; elsewhere (a pipe, a log file, a stream) a line is
   * written at the first batch, then every `progressInterval` seconds, and at each epoch's end.
   * Lines carry an ETA for the whole run.
   */
  progress?: boolean | NodeJS.WritableStream;
  /** Seconds between progress lines when the output is not a terminal (default 10; 0: every batch). */
  progressInterval?: number;
  /** Called after every epoch. */
  onEpoch?: (e: EpochStats) => void | Promise<void>;
}

export interface EpochStats {
  epoch: number; // 1-based
  loss: number;
  accuracy: number;
  images: number;
  imagesPerSec: number;
  seconds: number;
  lr: number;
  /** The sizes trained at in this epoch ('natural' or the sides used). */
  sizes: string;
  skipped: number;
  validation?: EvalResult;
}

export interface FitResult {
  history: EpochStats[];
  /** Images that could not be read and were skipped. */
  skipped: number;
}

/** How evaluation feeds images: 'natural' (the full image at its own size, ragged; images smaller than the model's minimum are upscaled), or a fixed size by centre crop or warp. */
export type EvalInput = 'natural' | { size: number; mode: InputMode };

export interface EvalResult {
  loss: number;
  accuracy: number;
  error: number;
  count: number;
  skipped: number;
}

const CHECKPOINT_FORMAT = 'sppnet-checkpoint-1';

function checkDataset(fn: string, d: unknown, name: string): Dataset {
  const ds = d as Dataset;
  if (typeof ds !== 'object' || ds === null || typeof ds.get !== 'function' || !Number.isInteger(ds.length) || !Array.isArray(ds.classes))
    fail(`${fn}: ${name} must be a dataset (sp.data.synthetic(), sp.data.imageFolder(), or { classes, length, get(i) }), got ${describe(d)}`);
  if (ds.length < 1) fail(`${fn}: ${name} is empty`);
  return ds;
}

function checkSizes(fn: string, s: unknown, minSide: number): SizePolicy {
  if (s === undefined || s === 'natural') return 'natural';
  if (Array.isArray(s)) {
    if (s.length === 0 || !s.every((v) => isPositiveInt(v))) fail(`${fn}: options.sizes must be 'natural', a list of positive integers, or { min, max }, got ${describe(s)}`);
    s.forEach((v, i) => {
      if (v < minSide) fail(`${fn}: options.sizes[${i}] = ${v} is smaller than the model's minimum side ${minSide}`);
    });
    return s as number[];
  }
  const r = s as { min?: unknown; max?: unknown };
  if (typeof r === 'object' && r !== null && isPositiveInt(r.min) && isPositiveInt(r.max) && r.max >= r.min) {
    if (r.min < minSide) fail(`${fn}: options.sizes.min = ${r.min} is smaller than the model's minimum side ${minSide}`);
    return { min: r.min, max: r.max };
  }
  return fail(`${fn}: options.sizes must be 'natural', a list of positive integers, or { min, max } with min <= max, got ${describe(s)}`);
}

/** Brings a sample up to the model's minimum size (keeping the aspect ratio) when it is smaller. */
function atLeast(s: Sample, min: readonly [number, number]): Sample {
  const [, H, W] = s.shape;
  if (H >= min[0] && W >= min[1]) return s;
  const f = Math.max(min[0] / H, min[1] / W);
  return resize(s, Math.max(min[0], Math.ceil(H * f)), Math.max(min[1], Math.ceil(W * f)));
}

interface Batch {
  images: Tensor[];
  labels: Int32Array;
  skipped: number;
  sizes: string;
}

async function loadBatch(ds: Dataset, idx: number[], prep: (s: Sample, i: number) => Sample): Promise<Batch> {
  const got = await Promise.all(idx.map((i) => ds.get(i)));
  const images: Tensor[] = [];
  const labels: number[] = [];
  const sides = new Set<string>();
  let skipped = 0;
  got.forEach((s, k) => {
    if (!s) {
      skipped++;
      return;
    }
    if (!Number.isInteger(s.label) || s.label < 0 || s.label >= ds.classes.length)
      fail(`sp.fit: sample ${idx[k]} has label ${describe(s.label)}, outside the dataset's ${ds.classes.length} classes`);
    const v = prep(s, idx[k]);
    images.push(tensor(v.data, [...v.shape], { device: 'cpu' }));
    labels.push(v.label);
    sides.add(`${v.shape[1]}x${v.shape[2]}`);
  });
  return { images, labels: Int32Array.from(labels), skipped, sizes: sides.size > 3 ? 'natural' : [...sides].join(',') };
}

/** Accuracy and mean loss of a model on a dataset. */
export async function evaluate(model: Model, ds: Dataset, opts: { input?: EvalInput; batchSize?: number } = {}): Promise<EvalResult> {
  const fn = 'sp.evaluate';
  checkDataset(fn, ds, 'dataset');
  if (ds.classes.length !== model.classes) fail(`${fn}: the dataset has ${ds.classes.length} classes, the model ${model.classes}`);
  const bs = opts.batchSize ?? 32;
  if (!isPositiveInt(bs)) fail(`${fn}: options.batchSize must be a positive integer, got ${describe(opts.batchSize)}`);
  const input = opts.input ?? 'natural';
  if (input !== 'natural' && !(typeof input === 'object' && isPositiveInt(input.size) && (input.mode === 'crop' || input.mode === 'warp')))
    fail(`${fn}: options.input must be 'natural' or { size, mode: 'crop' | 'warp' }, got ${describe(input)}`);
  const prep = (s: Sample) => (input === 'natural' ? atLeast(s, model.minSize) : view(s, input.size, input.mode, null));
  let loss = 0, correct = 0, count = 0, skipped = 0;
  for (let b = 0; b < ds.length; b += bs) {
    const idx = Array.from({ length: Math.min(bs, ds.length - b) }, (_, k) => b + k);
    const batch = await loadBatch(ds, idx, prep);
    skipped += batch.skipped;
    if (batch.images.length === 0) continue;
    try {
      const logits = await model.run(batch.images);
      try {
        const ce = await softmaxCrossEntropy(logits, batch.labels);
        ce.gradLogits.dispose();
        loss += ce.loss * batch.images.length;
        correct += ce.correct;
        count += batch.images.length;
      } finally {
        logits.dispose();
      }
    } finally {
      batch.images.forEach((t) => t.dispose());
    }
  }
  if (count === 0) throw new SppnetError(`${fn}: no image of the dataset could be read (${skipped} skipped)`, 'SPPNET_INVALID_ARGUMENT');
  return { loss: loss / count, accuracy: correct / count, error: 1 - correct / count, count, skipped };
}

class Progress {
  private last = 0;
  private printed = -Infinity;
  constructor(private readonly out: NodeJS.WritableStream | null, private readonly tty: boolean, private readonly intervalMs: number) {}
  update(line: string, force = false) {
    if (!this.out) return;
    const now = Date.now();
    if (this.tty) {
      if (!force && now - this.last < 100) return;
      this.out.write(`\r${line.padEnd(100).slice(0, Math.max(100, line.length))}`);
      this.last = now;
    } else if (force || now - this.printed >= this.intervalMs) {
      this.out.write(`${line}\n`);
      this.printed = now;
    }
  }
  done(line: string) {
    if (!this.out) return;
    this.out.write(this.tty ? `\r${line.padEnd(100)}\n` : `${line}\n`);
  }
}

/** 75 -> "1m15s", 4000 -> "1h06m". */
function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

function bar(frac: number, width = 20): string {
  const n = Math.round(frac * width);
  return `[${'='.repeat(Math.max(0, n - 1))}${n > 0 ? (n === width ? '=' : '>') : ''}${' '.repeat(width - n)}]`;
}

/**
 * Trains `model` on `dataset`. Every random choice (order, crops, flips, sizes, dropout) is a
 * function of (seed, epoch, index), so a run resumed from a checkpoint continues exactly.
 */
export async function fit(model: Model, dataset: Dataset, opts: FitOptions): Promise<FitResult> {
  const fn = 'sp.fit';
  if (!(model instanceof Model)) fail(`${fn}: model must be a Model, got ${describe(model)}`);
  const ds = checkDataset(fn, dataset, 'dataset');
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  if (!isPositiveInt(opts.epochs)) fail(`${fn}: options.epochs must be a positive integer, got ${describe(opts.epochs)}`);
  if (ds.classes.length !== model.classes) fail(`${fn}: the dataset has ${ds.classes.length} classes (${ds.classes.slice(0, 5).join(', ')}${ds.classes.length > 5 ? ', ...' : ''}), the model ${model.classes}`);
  const bs = opts.batchSize ?? 32;
  if (!isPositiveInt(bs)) fail(`${fn}: options.batchSize must be a positive integer, got ${describe(opts.batchSize)}`);
  const sizes = checkSizes(fn, opts.sizes, Math.max(...model.minSize));
  const mode = opts.input ?? 'crop';
  if (mode !== 'crop' && mode !== 'warp') fail(`${fn}: options.input must be 'crop' or 'warp', got ${describe(opts.input)}`);
  const flipProb = opts.flip === false ? 0 : 0.5;
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed)) fail(`${fn}: options.seed must be an integer, got ${describe(opts.seed)}`);
  const schedule = checkSchedule(opts.schedule, fn);
  if (opts.optimizer !== undefined) {
    resolveOptimizer(opts.optimizer, fn);
    model.setOptimizer(opts.optimizer);
  }
  if (opts.validation !== undefined) checkDataset(fn, opts.validation, 'options.validation');
  const out = opts.progress === undefined ? (process.stderr.isTTY ? process.stderr : null) : opts.progress === true ? process.stderr : opts.progress === false ? null : opts.progress;
  const interval = opts.progressInterval ?? 10;
  if (typeof interval !== 'number' || !(interval >= 0)) fail(`${fn}: options.progressInterval must be a number of seconds >= 0, got ${describe(opts.progressInterval)}`);
  const progress = new Progress(out, out === process.stderr && process.stderr.isTTY === true, interval * 1000);

  const stepsPerEpoch = Math.ceil(ds.length / bs);
  const totalSteps = stepsPerEpoch * opts.epochs;
  let startEpoch = 0;
  const history: EpochStats[] = [];
  if (opts.resume !== undefined) {
    const r = await readCheckpoint(fn, opts.resume, model);
    startEpoch = r.epoch;
    history.push(...r.history);
    if (startEpoch >= opts.epochs) fail(`${fn}: the checkpoint ${opts.resume} has already done ${startEpoch} epochs, options.epochs is ${opts.epochs}`);
  }
  let skippedTotal = history.reduce((a, h) => a + h.skipped, 0);
  const optimizer = model.optimizer;
  // ETA: this run's seconds per training step times the steps left, plus the last validation's
  // seconds for each epoch left.
  const runStart = process.hrtime.bigint();
  let stepsRun = 0, trainSeconds = 0, valSeconds = 0, valTotal = 0;
  const eta = (stepsLeft: number, epochsLeft: number) => (stepsRun ? ` eta ${duration((trainSeconds / stepsRun) * stepsLeft + valSeconds * epochsLeft)}` : '');

  for (let epoch = startEpoch; epoch < opts.epochs; epoch++) {
    const t0 = process.hrtime.bigint();
    const order = Array.from({ length: ds.length }, (_, i) => i);
    const r = prng(mixSeed(seed, epoch, 0x5eed));
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const sizeOf = (b: number): number | null => {
      if (sizes === 'natural') return null;
      if (Array.isArray(sizes)) return sizes[epoch % sizes.length];
      return sizes.min + Math.floor(prng(mixSeed(seed, epoch, b, 0x512e))() * (sizes.max - sizes.min + 1));
    };
    const prepFor = (b: number) => {
      const size = sizeOf(b);
      return (s: Sample, i: number) => {
        const rr = prng(mixSeed(seed, epoch, i, 0xa06));
        if (size === null) {
          const v = atLeast(s, model.minSize);
          return flipProb > 0 && rr() < flipProb ? flip(v) : v;
        }
        return view(s, size, mode, rr, flipProb);
      };
    };
    const fetch = (b: number) => loadBatch(ds, order.slice(b * bs, (b + 1) * bs), prepFor(b));
    let lossSum = 0, correct = 0, seen = 0, skipped = 0;
    let lr = optimizer.options.lr;
    const sizesSeen = new Set<string>();
    // The next batch is read and prepared while this one trains (decoding runs on the libuv pool).
    let next: Promise<Batch> = fetch(0);
    for (let b = 0; b < stepsPerEpoch; b++) {
      const batch = await next;
      if (b + 1 < stepsPerEpoch) next = fetch(b + 1);
      skipped += batch.skipped;
      if (batch.images.length === 0) continue;
      const step = epoch * stepsPerEpoch + b;
      lr = learningRate(optimizer.options.lr, schedule, step, totalSteps, epoch);
      sizesSeen.add(batch.sizes);
      let res;
      try {
        res = await model.trainStep(batch.images, batch.labels, { lr, seed: mixSeed(seed, step, 0xd0) });
      } catch (e) {
        if (b + 1 < stepsPerEpoch) await next.then((nb) => nb.images.forEach((t) => t.dispose()), () => undefined);
        if (e instanceof SppnetError && e.code === 'SPPNET_NONFINITE') {
          progress.done('');
          throw new SppnetError(
            `${fn}: training stopped at epoch ${epoch + 1}, batch ${b + 1} of ${stepsPerEpoch} (images ${batch.sizes}): ${e.message.replace(/^Model\.trainStep: /, '')}` +
              (opts.checkpoint ? `; the last checkpoint is ${opts.checkpoint}` : ''),
            'SPPNET_NONFINITE',
          );
        }
        throw e;
      } finally {
        batch.images.forEach((t) => t.dispose());
      }
      lossSum += res.loss * res.count;
      correct += res.correct;
      seen += res.count;
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      stepsRun++;
      trainSeconds = Number(process.hrtime.bigint() - runStart) / 1e9 - valTotal;
      progress.update(
        `epoch ${epoch + 1}/${opts.epochs} ${bar((b + 1) / stepsPerEpoch)} ${b + 1}/${stepsPerEpoch} loss ${(lossSum / seen).toFixed(4)} acc ${((100 * correct) / seen).toFixed(1)}% ${(seen / secs).toFixed(1)} img/s lr ${lr.toPrecision(3)} size ${batch.sizes}` +
          eta(totalSteps - (step + 1), opts.validation ? opts.epochs - epoch : 0),
        b + 1 === stepsPerEpoch,
      );
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    skippedTotal += skipped;
    if (seen === 0) throw new SppnetError(`${fn}: no image of epoch ${epoch + 1} could be read (${skipped} skipped)`, 'SPPNET_INVALID_ARGUMENT');
    const stats: EpochStats = {
      epoch: epoch + 1,
      loss: lossSum / seen,
      accuracy: correct / seen,
      images: seen,
      imagesPerSec: seen / seconds,
      seconds,
      lr,
      sizes: sizes === 'natural' ? 'natural' : [...new Set([...sizesSeen].flatMap((s) => s.split(',')))].join(','),
      skipped,
    };
    if (opts.validation) {
      const v0 = process.hrtime.bigint();
      stats.validation = await evaluate(model, opts.validation, { input: opts.validationInput ?? 'natural', batchSize: bs });
      valSeconds = Number(process.hrtime.bigint() - v0) / 1e9;
      valTotal += valSeconds;
    }
    history.push(stats);
    const left = opts.epochs - (epoch + 1);
    progress.done(
      `epoch ${epoch + 1}/${opts.epochs} loss ${stats.loss.toFixed(4)} acc ${(100 * stats.accuracy).toFixed(1)}%` +
        (stats.validation ? ` | val loss ${stats.validation.loss.toFixed(4)} acc ${(100 * stats.validation.accuracy).toFixed(1)}%` : '') +
        ` | ${stats.imagesPerSec.toFixed(1)} img/s, ${seconds.toFixed(1)} s${skipped ? `, ${skipped} skipped` : ''}` +
        (left > 0 ? ` |${eta(left * stepsPerEpoch, opts.validation ? left : 0)}` : ''),
    );
    if (opts.checkpoint) await writeCheckpoint(opts.checkpoint, model, epoch + 1, history, seed);
    if (opts.onEpoch) await opts.onEpoch(stats);
  }
  return { history, skipped: skippedTotal };
}

/** Writes weights, optimizer state and progress to one safetensors file (temporary file, then rename). */
export async function writeCheckpoint(file: string, model: Model, epoch: number, history: EpochStats[], seed: number): Promise<void> {
  const tensors = await model.stateDict();
  for (const [k, v] of await model.optimizer.stateDict()) tensors.set(k, v);
  await writeSafetensors(file, tensors, {
    format: CHECKPOINT_FORMAT,
    arch: model.spec.name,
    classes: String(model.classes),
    spec: JSON.stringify(model.spec),
    epoch: String(epoch),
    optimizer: JSON.stringify(model.optimizer.options),
    optimizerSteps: String(model.optimizer.steps),
    seed: String(seed),
    history: JSON.stringify(history),
  });
}

async function readCheckpoint(fn: string, file: string, model: Model): Promise<{ epoch: number; history: EpochStats[] }> {
  if (typeof file !== 'string') fail(`${fn}: options.resume must be a checkpoint path, got ${describe(file)}`);
  if (!fs.existsSync(file)) fail(`${fn}: options.resume: no checkpoint at ${file}`);
  const ck = await readSafetensors(file);
  const m = ck.metadata;
  if (m.format !== CHECKPOINT_FORMAT) fail(`${fn}: ${file} is not an sppnet checkpoint (metadata format ${describe(m.format)}, expected ${CHECKPOINT_FORMAT})`);
  if (m.spec !== JSON.stringify(model.spec))
    fail(`${fn}: the checkpoint ${file} is of another network (${m.arch ?? 'unknown'}, ${m.classes ?? '?'} classes) than the model (${model.spec.name}, ${model.classes} classes)`);
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  const state = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, v] of ck.tensors) (k.startsWith('optimizer.') ? state : weights).set(k, { shape: v.shape, data: v.data });
  await model.loadStateDict(weights, file);
  const saved = JSON.parse(m.optimizer ?? '{}') as OptimizerOptions;
  const opt = model.setOptimizer(saved);
  opt.load(state, model.parameters(), Number(m.optimizerSteps ?? 0));
  return { epoch: Number(m.epoch), history: JSON.parse(m.history ?? '[]') as EpochStats[] };
}
