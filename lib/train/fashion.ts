// The paper's ablation (He et al. 2014, Tables 2-3) on real data: Fashion-MNIST (28 x 28 grey
// images of 10 kinds of clothing), tested at scales other than the training size. Every arm has
// the same conv trunk, data, number of optimizer steps (images seen), optimizer and seeds:
//   - no SPP: trained at 28 px; one 4 x 4 pooling level on the 7 x 7 map, as a conventional net's
//     last pooling layer; a fixed-size net, so each test image is resized back to 28 x 28;
//   - SPP, single-size: trained at 28 px, pyramid {4, 2, 1}; tested on each image at its test size;
//   - SPP, multi-size, one size per epoch (the paper's schedule, as `sp.ablation` has it);
//   - SPP, multi-size, one random size per batch (each batch one size).
// Test scales: each test image resized to its own random size in [20, 56] (a ragged batch), and
// fixed sizes 20, 28, 36, 48 and 56. Top-1 error per arm and scale: mean and standard deviation
// over the seeds.
import { Dataset, fashionMnist, FASHION_MNIST_DIR, resize, Sample } from './data';
import { describe, fail, isPositiveInt } from '../core/errors';
import { mixSeed, prng } from '../core/random';
import { buildModel } from '../nn/load';
import { LayerSpec } from '../nn/layers';
import { ModelSpec } from '../nn/spec';
import { OptimizerOptions } from '../nn/optim';
import { evaluate, fit, SizePolicy } from './fit';
import { backend, Device } from '../core/backend';
import { barChart, combine, lineChart } from '../io/svg';

export type FashionArm = 'nospp' | 'single' | 'multi-epoch' | 'multi-batch';
export const FASHION_ARMS: readonly FashionArm[] = Object.freeze(['nospp', 'single', 'multi-epoch', 'multi-batch']);

/**
 * A small net for 28 px grey images: conv 16, pool, conv 32, pool, conv 64 (3 x 3, padding 1,
 * ReLU; 2 x 2 pools), so a 28 px input gives a 7 x 7 x 64 map; then 'spp' pools it with the
 * pyramid `levels` (default {4, 2, 1}), 'nospp' with one 4 x 4 level (the same bins as the
 * pyramid's finest level); fc 128 (ReLU), dropout p, fc `classes`.
 */
export function fashionSpec(kind: 'spp' | 'nospp', classes = 10, levels: number[] = [4, 2, 1], dropout = 0, inChannels = 1): ModelSpec {
  const trunk: LayerSpec[] = [
    { type: 'conv', name: 'conv1', out: 16, kernel: 3, padding: 1 },
    { type: 'maxpool', kernel: 2, stride: 2 },
    { type: 'conv', name: 'conv2', out: 32, kernel: 3, padding: 1 },
    { type: 'maxpool', kernel: 2, stride: 2 },
    { type: 'conv', name: 'conv3', out: 64, kernel: 3, padding: 1 },
  ];
  const pool: LayerSpec = { type: 'spp', levels: kind === 'spp' ? levels : [4] };
  return {
    name: kind === 'spp' ? 'fashion-spp' : 'fashion-nospp',
    inChannels,
    layers: [...trunk, pool, { type: 'fc', name: 'fc6', out: 128, relu: true }, { type: 'dropout', p: dropout }, { type: 'fc', name: 'fc7', out: classes }],
  };
}

/** A dataset whose image i is `ds`'s resized to side(i) x side(i). */
export function rescaled(ds: Dataset, side: (i: number) => number, description: string): Dataset {
  return {
    classes: ds.classes,
    length: ds.length,
    description,
    async get(i: number) {
      const s = await ds.get(i);
      if (!s) return null;
      const n = side(i);
      return resize(s, n, n);
    },
  };
}

/** The first n items of a dataset. */
function head(ds: Dataset, n: number): Dataset {
  if (n >= ds.length) return ds;
  return { classes: ds.classes, length: n, description: `${ds.description}, first ${n}`, get: (i: number) => ds.get(i) };
}

export interface FashionAblationOptions {
  /** Fashion-MNIST's folder (default Debian's, /usr/share/datasets/fashion-mnist). */
  dir?: string;
  /** Other data instead (any Dataset of square images; the tests use small IDX fixtures). */
  train?: Dataset;
  test?: Dataset;
  /** Training images used (default 12,000, the first ones) and test images (default 10,000, all). */
  trainImages?: number;
  testImages?: number;
  /** Passes over the training images (default 6) at batch 64: the same steps for every arm. */
  epochs?: number;
  batchSize?: number;
  /** The single training size (default 28). */
  size?: number;
  /** Multi-size training: the sizes cycled one per epoch (default [20, 28, 36, 48, 56]). */
  epochSizes?: number[];
  /** Multi-size training: a random size per batch in [min, max] (default 20..56). */
  batchSizes?: { min: number; max: number };
  /** Fixed test sizes (default [20, 28, 36, 48, 56]) and the range of the random per-image sizes (default 20..56). */
  testSizes?: number[];
  randomTest?: { min: number; max: number };
  /** Seeds: one training run per arm and seed (default [1, 2, 3]). */
  seeds?: number[];
  arms?: FashionArm[];
  optimizer?: OptimizerOptions;
  device?: Device;
  progress?: boolean | NodeJS.WritableStream;
  /** Called as each run finishes. */
  onRun?: (run: FashionRun) => void;
}

export interface FashionRun {
  arm: FashionArm;
  seed: number;
  /** Top-1 error per test: 'random' and the fixed sizes as strings ('20', '28', ...). */
  errors: Record<string, number>;
  trainSeconds: number;
  evalSeconds: number;
  steps: number;
  trainLoss: number;
  trainAccuracy: number;
}

export interface FashionAblationResult {
  runs: FashionRun[];
  arms: Array<{ arm: FashionArm; name: string; training: string; test: string }>;
  tests: string[];
  settings: {
    data: string; testData: string; trainImages: number; testImages: number; epochs: number; batchSize: number; size: number;
    epochSizes: number[]; batchSizes: { min: number; max: number }; testSizes: number[]; randomTest: { min: number; max: number };
    seeds: number[]; optimizer: OptimizerOptions; device: Device; steps: number;
  };
}

const ARM_NAMES: Record<FashionArm, string> = { nospp: 'no SPP', single: 'SPP, single-size', 'multi-epoch': 'SPP, multi-size (per epoch)', 'multi-batch': 'SPP, multi-size (per batch)' };

function checkRange(fn: string, name: string, v: unknown, dflt: { min: number; max: number }, lo: number): { min: number; max: number } {
  const r = (v ?? dflt) as { min?: unknown; max?: unknown };
  if (typeof r !== 'object' || r === null || !isPositiveInt(r.min) || !isPositiveInt(r.max) || r.min < lo || r.max < r.min)
    fail(`${fn}: options.${name} must be { min, max } with ${lo} <= min <= max, integers, got ${describe(v)}`);
  return { min: r.min as number, max: r.max as number };
}

function checkSizeList(fn: string, name: string, v: unknown, dflt: number[], lo: number, minLength: number): number[] {
  const s = (v ?? dflt) as unknown[];
  if (!Array.isArray(s) || s.length < minLength || !s.every((x) => isPositiveInt(x) && x >= lo))
    fail(`${fn}: options.${name} must list at least ${minLength} integer sizes >= ${lo}, got ${describe(v)}`);
  return s as number[];
}

export async function fashionAblation(opts: FashionAblationOptions = {}): Promise<FashionAblationResult> {
  const fn = 'sp.fashionAblation';
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const int = (name: 'trainImages' | 'testImages' | 'epochs' | 'batchSize' | 'size', dflt: number, min = 1) => {
    const v = opts[name] ?? dflt;
    if (!isPositiveInt(v) || v < min) fail(`${fn}: options.${name} must be an integer >= ${min}, got ${describe(opts[name])}`);
    return v;
  };
  const epochs = int('epochs', 6), batchSize = int('batchSize', 64), size = int('size', 28, 8);
  const MIN_SIDE = 8; // the trunk's two 2 x 2 pools leave a 2 x 2 map
  const epochSizes = checkSizeList(fn, 'epochSizes', opts.epochSizes, [20, 28, 36, 48, 56], MIN_SIDE, 2);
  const batchSizes = checkRange(fn, 'batchSizes', opts.batchSizes, { min: 20, max: 56 }, MIN_SIDE);
  const testSizes = checkSizeList(fn, 'testSizes', opts.testSizes, [20, 28, 36, 48, 56], MIN_SIDE, 1);
  const randomTest = checkRange(fn, 'randomTest', opts.randomTest, { min: 20, max: 56 }, MIN_SIDE);
  const seeds = opts.seeds ?? [1, 2, 3];
  if (!Array.isArray(seeds) || seeds.length < 1 || !seeds.every((s) => Number.isInteger(s))) fail(`${fn}: options.seeds must list integer seeds, got ${describe(opts.seeds)}`);
  const arms = opts.arms ?? [...FASHION_ARMS];
  if (!Array.isArray(arms) || arms.length < 1 || !arms.every((a) => FASHION_ARMS.includes(a))) fail(`${fn}: options.arms must list some of ${FASHION_ARMS.join(', ')}, got ${describe(opts.arms)}`);
  const optimizer: OptimizerOptions = opts.optimizer ?? { type: 'adam', lr: 0.002 };
  const device = opts.device ?? backend().device;
  const dir = opts.dir ?? FASHION_MNIST_DIR;
  const trainAll = opts.train ?? (await fashionMnist(dir, { split: 'train' }));
  const testAll = opts.test ?? (await fashionMnist(dir, { split: 'test' }));
  const train = head(trainAll, int('trainImages', 12000));
  const test = head(testAll, int('testImages', 10000));
  if (train.classes.length !== test.classes.length) fail(`${fn}: the training data has ${train.classes.length} classes, the test data ${test.classes.length}`);
  const first = await test.get(0);
  if (!first) return fail(`${fn}: the test data's first image cannot be read`);
  const channels = first.shape[0];
  const steps = Math.ceil(train.length / batchSize) * epochs;

  // The test sets: fixed sizes, and each image at its own random size (a function of its index only, the same for every arm and seed).
  const rr = (i: number) => randomTest.min + Math.floor(prng(mixSeed(0x7e57, i))() * (randomTest.max - randomTest.min + 1));
  const tests: Array<[string, Dataset]> = [
    ['random', rescaled(test, rr, `each image at a random size in ${randomTest.min}..${randomTest.max}`)],
    ...testSizes.map((n): [string, Dataset] => [String(n), rescaled(test, () => n, `${n}x${n}`)]),
  ];
  const plan: Record<FashionArm, { sizes: SizePolicy; training: string }> = {
    nospp: { sizes: [size], training: `${size} px` },
    single: { sizes: [size], training: `${size} px` },
    'multi-epoch': { sizes: epochSizes, training: `one size per epoch, cycling {${epochSizes.join(', ')}}` },
    'multi-batch': { sizes: batchSizes, training: `a random size in ${batchSizes.min}..${batchSizes.max} per batch` },
  };
  const runs: FashionRun[] = [];
  for (const seed of seeds) {
    for (const arm of arms) {
      const spec = fashionSpec(arm === 'nospp' ? 'nospp' : 'spp', train.classes.length, [4, 2, 1], 0, channels);
      const model = await buildModel({ spec, seed, device }, fn);
      try {
        const t0 = process.hrtime.bigint();
        const res = await fit(model, train, { epochs, batchSize, sizes: plan[arm].sizes, input: 'warp', optimizer, schedule: { type: 'cosine' }, seed, progress: opts.progress ?? false });
        const trainSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
        const errors: Record<string, number> = {};
        for (const [name, ds] of tests) {
          // The fixed-size net sees every test image resized back to its training size.
          const e = await evaluate(model, ds, { input: arm === 'nospp' ? { size, mode: 'warp' } : 'natural', batchSize: 100 });
          errors[name] = e.error;
        }
        const last = res.history[res.history.length - 1];
        const run: FashionRun = { arm, seed, errors, trainSeconds, evalSeconds: Number(process.hrtime.bigint() - t0) / 1e9 - trainSeconds, steps, trainLoss: last.loss, trainAccuracy: last.accuracy };
        runs.push(run);
        opts.onRun?.(run);
      } finally {
        model.dispose();
      }
    }
  }
  return {
    runs,
    arms: arms.map((arm) => ({ arm, name: ARM_NAMES[arm], training: plan[arm].training, test: arm === 'nospp' ? `resized to ${size}x${size}` : 'at the test size' })),
    tests: tests.map(([n]) => n),
    settings: { data: train.description, testData: test.description, trainImages: train.length, testImages: test.length, epochs, batchSize, size, epochSizes, batchSizes, testSizes, randomTest, seeds, optimizer, device, steps },
  };
}

/** Mean and sample standard deviation. */
export function meanStd(v: number[]): { mean: number; std: number } {
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : 0;
  return { mean, std };
}

/** Per arm and test: the mean and standard deviation of the top-1 error over the seeds (fractions). */
export function fashionSummary(r: FashionAblationResult): Array<{ arm: FashionArm; name: string; training: string; test: string; cells: Record<string, { mean: number; std: number; n: number }>; trainSeconds: number }> {
  return r.arms.map((a) => {
    const mine = r.runs.filter((x) => x.arm === a.arm);
    const cells: Record<string, { mean: number; std: number; n: number }> = {};
    for (const t of r.tests) cells[t] = { ...meanStd(mine.map((x) => x.errors[t])), n: mine.length };
    return { ...a, cells, trainSeconds: meanStd(mine.map((x) => x.trainSeconds)).mean };
  });
}

/** The paper's table: rows the arms, columns the test scales, top-1 error in % as mean ± standard deviation over the seeds. */
export function fashionTable(r: FashionAblationResult): string {
  const s = r.settings;
  const head = ['model', 'training', 'test input', `random ${s.randomTest.min}..${s.randomTest.max}`, ...s.testSizes.map((n) => `${n}x${n}`), 'train time'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const row of fashionSummary(r)) {
    const cells = r.tests.map((t) => `${(100 * row.cells[t].mean).toFixed(2)} ± ${(100 * row.cells[t].std).toFixed(2)}`);
    lines.push(`| ${row.name} | ${row.training} | ${row.test} | ${cells.join(' | ')} | ${row.trainSeconds.toFixed(0)} s |`);
  }
  return lines.join('\n');
}

/** The result as one SVG document: error by fixed test size (a line per arm), and at random sizes (bars). */
export function fashionPlot(r: FashionAblationResult): string {
  const s = r.settings;
  const rows = fashionSummary(r);
  const short: Record<FashionArm, string> = { nospp: 'no SPP', single: 'SPP single-size', 'multi-epoch': 'SPP multi, per epoch', 'multi-batch': 'SPP multi, per batch' };
  const line = lineChart({
    title: 'SPP-net ablation on Fashion-MNIST: top-1 error by test size (lower is better)',
    subtitle: `trained at ${s.size} px (multi-size: ${s.epochSizes.join('/')} per epoch, or ${s.batchSizes.min}..${s.batchSizes.max} per batch); ${s.steps} steps of ${s.batchSize}; mean of ${s.seeds.length} seed(s)`,
    xTitle: 'test image size, px (square)', yTitle: 'top-1 error, %', yMin: 0, width: 760, height: 440, xTicks: s.testSizes,
    series: rows.map((x) => ({ name: x.name, points: s.testSizes.map((t): [number, number] => [t, 100 * x.cells[String(t)].mean]) })),
    notes: [`no SPP: a fixed-size net, each test image resized back to ${s.size}x${s.size}; SPP nets see each test image at its size`, 'standard deviations over the seeds: in the table (ablation-fashion.md)'],
  });
  const bar = barChart({
    title: `Each test image at its own random size, ${s.randomTest.min}..${s.randomTest.max} px (ragged batches)`,
    yTitle: 'top-1 error, %', yMin: 0, width: 760, height: 380,
    categories: rows.map((x) => short[x.arm]),
    series: [{ name: 'top-1 error %, mean over the seeds', values: rows.map((x) => 100 * x.cells.random.mean) }],
    notes: rows.map((x) => `${x.name}: ${(100 * x.cells.random.mean).toFixed(2)} ± ${(100 * x.cells.random.std).toFixed(2)}% (${x.training})`),
  });
  return combine([line, bar], { cols: 1 });
}
