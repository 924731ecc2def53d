// The paper's ablation (He et al. 2014, Tables 2-3) on data anyone can generate: the same conv
// trunk, data, budget and seeds, trained three ways:
//   1. no SPP: fixed-size input (random crops at one size), one pooling layer to the FC size
//      (a single-level pyramid with the paper's bins at that size is exactly such a pooling layer);
//   2. SPP, single-size training (the same crops at one size);
//   3. SPP, multi-size training (the size switches every epoch, as in the paper).
// The SPP networks are tested on whole images at their natural, varying sizes; the no-SPP baseline
// can only take its fixed size, so it is tested on centre crops resized to it (as a conventional
// network is), and for reference also on whole images warped to it.
import { synthetic, SyntheticOptions } from './data';
import { describe, fail, isPositiveInt } from '../core/errors';
import { buildModel } from '../nn/load';
import { LayerSpec } from '../nn/layers';
import { ModelSpec } from '../nn/spec';
import { evaluate, fit, SizePolicy } from './fit';
import { OptimizerOptions } from '../nn/optim';
import { backend, Device } from '../core/backend';

export interface AblationOptions {
  classes?: number;
  /** Training and test images (defaults 1600 and 400). */
  trainImages?: number;
  testImages?: number;
  epochs?: number;
  batchSize?: number;
  /**
   * The fixed training size (default 64) and the multi-size sizes: a list, one size per epoch
   * (default 0.75, 1 and 1.25 times the size), or { min, max }, a random size per batch.
   */
  size?: number;
  multiSizes?: number[] | { min: number; max: number };
  /** Image sides of the synthetic data (defaults 48..128). */
  minSide?: number;
  maxSide?: number;
  levels?: number[];
  optimizer?: OptimizerOptions;
  seed?: number;
  device?: Device;
  progress?: boolean | NodeJS.WritableStream;
  /** Called as each model finishes. */
  onRow?: (row: AblationRow) => void;
}

export interface AblationRow {
  name: string;
  spp: boolean;
  training: string;
  test: string;
  error: number;
  loss: number;
  trainSeconds: number;
  trainImagesPerSec: number;
}

export interface AblationResult {
  rows: AblationRow[];
  settings: Required<Omit<AblationOptions, 'progress' | 'onRow' | 'optimizer' | 'device'>> & { device: Device; data: string; optimizer: OptimizerOptions };
}

/** The shared conv trunk: 3 conv layers (ReLU), two max pools: a 64 px input gives an 8x8x64 map. Then the pooling, fc6 (128, ReLU), dropout (p = `dropout`, default 0) and fc7. */
export function ablationTrunk(): LayerSpec[] {
  return [
    { type: 'conv', name: 'conv1', out: 32, kernel: 5, stride: 2, padding: 2 },
    { type: 'maxpool', kernel: 2, stride: 2 },
    { type: 'conv', name: 'conv2', out: 64, kernel: 3, padding: 1 },
    { type: 'maxpool', kernel: 2, stride: 2 },
    { type: 'conv', name: 'conv3', out: 64, kernel: 3, padding: 1 },
  ];
}

export function ablationSpec(kind: 'nospp' | 'spp', classes: number, levels: number[], fixedMapSide: number, dropout = 0): ModelSpec {
  // No SPP: pool the fixed-size map to a 4x4 grid (window ceil(a/4), stride floor(a/4), the
  // paper's rule), which is what a conventional network's last pooling layer does.
  const pool: LayerSpec = kind === 'nospp' ? { type: 'spp', levels: [Math.min(4, fixedMapSide)], bins: 'paper' } : { type: 'spp', levels };
  return {
    name: kind === 'nospp' ? 'ablation-nospp' : 'ablation-spp',
    inChannels: 3,
    layers: [...ablationTrunk(), pool, { type: 'fc', name: 'fc6', out: 128, relu: true }, { type: 'dropout', p: dropout }, { type: 'fc', name: 'fc7', out: classes }],
  };
}

export async function ablation(opts: AblationOptions = {}): Promise<AblationResult> {
  const fn = 'sp.ablation';
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const int = (name: keyof AblationOptions, dflt: number, min = 1) => {
    const v = opts[name] ?? dflt;
    if (!isPositiveInt(v) || (v as number) < min) fail(`${fn}: options.${name} must be an integer >= ${min}, got ${describe(opts[name])}`);
    return v as number;
  };
  const classes = int('classes', 4, 2);
  const trainImages = int('trainImages', 1600);
  const testImages = int('testImages', 400);
  const epochs = int('epochs', 6);
  const batchSize = int('batchSize', 32);
  const size = int('size', 64, 16);
  const minSide = int('minSide', 48, 16);
  const maxSide = int('maxSide', 128, minSide);
  const seed = opts.seed ?? 1;
  const multiSizes = opts.multiSizes ?? [Math.round(size * 0.75), size, Math.round(size * 1.25)];
  const range = !Array.isArray(multiSizes) && typeof multiSizes === 'object' && multiSizes !== null && isPositiveInt(multiSizes.min) && isPositiveInt(multiSizes.max) && multiSizes.min >= 16 && multiSizes.max > multiSizes.min;
  if (!range && (!Array.isArray(multiSizes) || multiSizes.length < 2 || !multiSizes.every((v) => isPositiveInt(v) && v >= 16)))
    fail(`${fn}: options.multiSizes must list at least two sizes >= 16, or be { min, max } with 16 <= min < max, got ${describe(opts.multiSizes)}`);
  const levels = opts.levels ?? [4, 2, 1];
  const device = opts.device ?? backend().device;
  const optimizer: OptimizerOptions = opts.optimizer ?? { type: 'adam', lr: 0.002 };
  const dataOpts: SyntheticOptions = { classes, minSize: minSide, maxSize: maxSide };
  const train = synthetic({ ...dataOpts, count: trainImages, seed: seed * 1000 + 1 });
  const test = synthetic({ ...dataOpts, count: testImages, seed: seed * 1000 + 2 });
  const mapSide = Math.floor(size / 8);

  const runs: Array<{ name: string; kind: 'nospp' | 'spp'; sizes: SizePolicy; training: string }> = [
    { name: 'no SPP', kind: 'nospp', sizes: [size], training: `single-size ${size}` },
    { name: 'SPP, single-size', kind: 'spp', sizes: [size], training: `single-size ${size}` },
    { name: 'SPP, multi-size', kind: 'spp', sizes: multiSizes, training: Array.isArray(multiSizes) ? `multi-size {${multiSizes.join(', ')}}` : `multi-size ${multiSizes.min}..${multiSizes.max} per batch` },
  ];
  const rows: AblationRow[] = [];
  for (const r of runs) {
    const model = await buildModel({ spec: ablationSpec(r.kind, classes, levels, mapSide), seed, device }, fn);
    try {
      const t0 = process.hrtime.bigint();
      const res = await fit(model, train, { epochs, batchSize, sizes: r.sizes, input: 'crop', optimizer, schedule: { type: 'cosine' }, seed, progress: opts.progress ?? false });
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      const ips = res.history.reduce((a, h) => a + h.images, 0) / secs;
      const evals: Array<[string, Parameters<typeof evaluate>[2]]> =
        r.kind === 'nospp'
          ? [[`centre crop, ${size}x${size}`, { input: { size, mode: 'crop' } }], [`whole image warped to ${size}x${size}`, { input: { size, mode: 'warp' } }]]
          : [[`whole image, natural size (${minSide}..${maxSide})`, { input: 'natural' }]];
      for (const [test_, o] of evals) {
        const e = await evaluate(model, test, { ...o, batchSize });
        const row: AblationRow = { name: r.name, spp: r.kind === 'spp', training: r.training, test: test_, error: e.error, loss: e.loss, trainSeconds: secs, trainImagesPerSec: ips };
        rows.push(row);
        opts.onRow?.(row);
      }
    } finally {
      model.dispose();
    }
  }
  return {
    rows,
    settings: { classes, trainImages, testImages, epochs, batchSize, size, multiSizes, minSide, maxSide, levels, seed, device, data: train.description, optimizer },
  };
}

/** The result as a markdown table (top-1 error, as the paper reports). */
export function ablationTable(r: AblationResult): string {
  const lines = ['| model | training | test input | top-1 error | test loss | train time |', '|---|---|---|---|---|---|'];
  for (const x of r.rows)
    lines.push(`| ${x.name} | ${x.training} | ${x.test} | ${(100 * x.error).toFixed(2)}% | ${x.loss.toFixed(4)} | ${x.trainSeconds.toFixed(1)} s (${x.trainImagesPerSec.toFixed(0)} img/s) |`);
  return lines.join('\n');
}
