// Training: optimizers (SGD with momentum and weight decay, as in the paper; Adam and AdamW),
// learning-rate schedules, and one training step of a model on a ragged batch: the forward pass
// keeps what each layer's backward needs, softmax cross-entropy gives the loss, the backward pass
// runs every layer in reverse, and the optimizer updates the weights in place.
import { describe, fail, isPositiveInt, SppnetError } from './errors';
import {
  adamStep, conv2dBackward, dropout, dropoutBackward, linearBackward, localResponseNormBackward, maxPool2dBackward,
  reluBackward, sgdStep, softmaxCrossEntropy,
} from './grad';
import { conv2d, linear, localResponseNorm, maxPool2d, relu } from './layers';
import type { LayerSpec, Model } from './model';
import { Spatial } from './spatial';
import { spp, sppBackward } from './spp';
import { Tensor, tensor, zeros } from './tensor';

export type OptimizerType = 'sgd' | 'adam' | 'adamw';

export interface OptimizerOptions {
  /** 'sgd' (default; the paper's), 'adam', or 'adamw' (decoupled weight decay). */
  type?: OptimizerType;
  /** Base learning rate (default 0.01 for SGD, 0.001 for Adam/AdamW). */
  lr?: number;
  /** SGD momentum (default 0.9). */
  momentum?: number;
  nesterov?: boolean;
  /** L2 weight decay (default 5e-4 for SGD as in the paper, 0 for Adam, 0.01 for AdamW). */
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

export type ResolvedOptimizerOptions = Required<OptimizerOptions>;

export function resolveOptimizer(o: OptimizerOptions | undefined, fn: string): ResolvedOptimizerOptions {
  if (o !== undefined && (typeof o !== 'object' || o === null)) fail(`${fn}: optimizer must be an object, got ${describe(o)}`);
  const type = o?.type ?? 'sgd';
  if (type !== 'sgd' && type !== 'adam' && type !== 'adamw') fail(`${fn}: optimizer.type must be 'sgd', 'adam' or 'adamw', got ${describe(type)}`);
  const num = (name: keyof OptimizerOptions, v: unknown, dflt: number, lo: number, hi: number, openLo = false) => {
    const x = v === undefined ? dflt : v;
    if (typeof x !== 'number' || !Number.isFinite(x) || x < lo || x > hi || (openLo && x === lo))
      fail(`${fn}: optimizer.${name} must be a number in ${openLo ? '(' : '['}${lo}, ${hi}], got ${describe(v)}`);
    return x;
  };
  const r: ResolvedOptimizerOptions = {
    type,
    lr: num('lr', o?.lr, type === 'sgd' ? 0.01 : 0.001, 0, 10, true),
    momentum: num('momentum', o?.momentum, type === 'sgd' ? 0.9 : 0, 0, 1),
    nesterov: o?.nesterov === true,
    weightDecay: num('weightDecay', o?.weightDecay, type === 'sgd' ? 5e-4 : type === 'adamw' ? 0.01 : 0, 0, 1),
    beta1: num('beta1', o?.beta1, 0.9, 0, 1),
    beta2: num('beta2', o?.beta2, 0.999, 0, 1),
    eps: num('eps', o?.eps, 1e-8, 0, 1, true),
  };
  if (r.nesterov && (type !== 'sgd' || r.momentum === 0)) fail(`${fn}: optimizer.nesterov needs type 'sgd' and momentum > 0`);
  if (o?.nesterov !== undefined && typeof o.nesterov !== 'boolean') fail(`${fn}: optimizer.nesterov must be a boolean, got ${describe(o.nesterov)}`);
  return r;
}

export interface ScheduleOptions {
  /** 'constant' (default), 'step' (multiply by gamma every stepEpochs epochs) or 'cosine' (to minLr at the last step). */
  type?: 'constant' | 'step' | 'cosine';
  stepEpochs?: number;
  gamma?: number;
  minLr?: number;
  /** Linear warm-up over this many steps (default 0). */
  warmupSteps?: number;
}

export function checkSchedule(s: ScheduleOptions | undefined, fn: string): Required<ScheduleOptions> {
  if (s !== undefined && (typeof s !== 'object' || s === null)) fail(`${fn}: schedule must be an object, got ${describe(s)}`);
  const type = s?.type ?? 'constant';
  if (type !== 'constant' && type !== 'step' && type !== 'cosine') fail(`${fn}: schedule.type must be 'constant', 'step' or 'cosine', got ${describe(type)}`);
  const stepEpochs = s?.stepEpochs ?? 10;
  if (!isPositiveInt(stepEpochs)) fail(`${fn}: schedule.stepEpochs must be a positive integer, got ${describe(s?.stepEpochs)}`);
  const gamma = s?.gamma ?? 0.1;
  if (!(typeof gamma === 'number' && gamma > 0 && gamma <= 1)) fail(`${fn}: schedule.gamma must be in (0, 1], got ${describe(s?.gamma)}`);
  const minLr = s?.minLr ?? 0;
  if (!(typeof minLr === 'number' && minLr >= 0 && Number.isFinite(minLr))) fail(`${fn}: schedule.minLr must be a finite number >= 0, got ${describe(s?.minLr)}`);
  const warmupSteps = s?.warmupSteps ?? 0;
  if (!(Number.isInteger(warmupSteps) && warmupSteps >= 0)) fail(`${fn}: schedule.warmupSteps must be an integer >= 0, got ${describe(s?.warmupSteps)}`);
  return { type, stepEpochs, gamma, minLr, warmupSteps };
}

/** The learning rate at global step `step` (0-based) of `totalSteps`, in epoch `epoch` (0-based). */
export function learningRate(base: number, s: Required<ScheduleOptions>, step: number, totalSteps: number, epoch: number): number {
  let lr = base;
  if (s.type === 'step') lr = base * Math.pow(s.gamma, Math.floor(epoch / s.stepEpochs));
  else if (s.type === 'cosine') {
    const t = Math.min(1, step / Math.max(1, totalSteps));
    lr = s.minLr + (base - s.minLr) * 0.5 * (1 + Math.cos(Math.PI * t));
  }
  if (s.warmupSteps > 0 && step < s.warmupSteps) lr *= (step + 1) / s.warmupSteps;
  return lr;
}

/** Optimizer state: one or two buffers per parameter, on the model's device. */
export class Optimizer {
  readonly options: ResolvedOptimizerOptions;
  /** Updates taken so far (Adam's bias correction uses it; saved in checkpoints). */
  steps = 0;
  private state = new Map<string, Tensor[]>();

  constructor(options: OptimizerOptions | undefined, fn = 'Model.setOptimizer') {
    this.options = resolveOptimizer(options, fn);
  }

  /** The state's buffer names per parameter, as PyTorch calls them. */
  get bufferNames(): string[] {
    if (this.options.type === 'sgd') return this.options.momentum > 0 ? ['momentum_buffer'] : [];
    return ['exp_avg', 'exp_avg_sq'];
  }

  private buffers(name: string, p: Tensor): Tensor[] {
    let b = this.state.get(name);
    if (!b) {
      b = this.bufferNames.map(() => zeros([...p.shape], { device: p.device }));
      this.state.set(name, b);
    }
    return b;
  }

  /** One update of every parameter from its gradient, at learning rate lr. */
  async apply(params: ReadonlyMap<string, Tensor>, grads: ReadonlyMap<string, Tensor>, lr: number): Promise<void> {
    const o = this.options;
    this.steps += 1;
    const jobs: Array<Promise<void>> = [];
    for (const [name, g] of grads) {
      const p = params.get(name);
      if (!p) throw new SppnetError(`Optimizer: no parameter ${name}`, 'SPPNET_INTERNAL');
      const b = this.buffers(name, p);
      if (o.type === 'sgd') {
        jobs.push(sgdStep(p, g, b[0] ?? null, { lr, momentum: o.momentum, weightDecay: o.weightDecay, nesterov: o.nesterov, step: this.steps }));
      } else {
        jobs.push(adamStep(p, g, b[0], b[1], { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay, decoupled: o.type === 'adamw', step: this.steps }));
      }
    }
    await Promise.all(jobs);
  }

  /** The state as host arrays, named `optimizer.<param>.<buffer>`. */
  async stateDict(): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    const names = this.bufferNames;
    for (const [p, bufs] of this.state) for (let i = 0; i < bufs.length; i++) out.set(`optimizer.${p}.${names[i]}`, { shape: [...bufs[i].shape], data: await bufs[i].data() });
    return out;
  }

  /** Restores buffers saved by stateDict() (for the parameters of `params`); missing ones start at zero. */
  load(saved: ReadonlyMap<string, { shape: number[]; data: Float32Array }>, params: ReadonlyMap<string, Tensor>, steps: number): void {
    this.disposeState();
    this.steps = steps;
    const names = this.bufferNames;
    for (const [p, t] of params) {
      const have = names.map((n) => saved.get(`optimizer.${p}.${n}`));
      if (have.every((h) => h === undefined)) continue;
      this.state.set(p, have.map((h) => {
        if (!h || h.data.length !== t.size) throw new SppnetError(`Optimizer: the saved state of ${p} is missing a buffer or has the wrong size`, 'SPPNET_INVALID_ARGUMENT');
        return tensor(Float32Array.from(h.data), [...t.shape], { device: t.device }); // a copy: the optimizer owns it
      }));
    }
  }

  private disposeState() {
    for (const bufs of this.state.values()) bufs.forEach((b) => b.dispose());
    this.state.clear();
  }

  dispose(): void {
    this.disposeState();
  }
}

export interface StepResult {
  /** Mean cross-entropy over the batch. */
  loss: number;
  /** Images whose top class was the label. */
  correct: number;
  count: number;
}

interface TapeEntry {
  layer: LayerSpec;
  index: number;
  input: Spatial;
  output: Spatial;
  mask?: Tensor;
}

/**
 * @internal One forward + backward pass: the loss, and the gradient of every parameter (summed
 * over the batch, of the mean loss). Layers run in training mode (dropout on, seeded by `seed`).
 */
export async function lossAndGradients(
  model: Model,
  weight: (name: string) => Tensor,
  x: Spatial,
  labels: Int32Array,
  seed: number,
): Promise<{ loss: number; correct: number; grads: Map<string, Tensor> }> {
  const tape: TapeEntry[] = [];
  const owned = new Set<Spatial>(); // everything allocated here, disposed at the end
  const grads = new Map<string, Tensor>();
  const keep = (t: Spatial) => (owned.add(t), t);
  try {
    let cur: Spatial = x;
    const layers = model.spec.layers;
    for (let li = 0; li < layers.length; li++) {
      const l = layers[li];
      let out: Spatial;
      let mask: Tensor | undefined;
      switch (l.type) {
        case 'conv':
          out = await conv2d(cur, weight(`${l.name}.weight`), weight(`${l.name}.bias`), { stride: l.stride, padding: l.padding, dilation: l.dilation, groups: l.groups, relu: l.relu !== false });
          break;
        case 'lrn':
          out = await localResponseNorm(cur, { size: l.size, alpha: l.alpha, beta: l.beta, k: l.k });
          break;
        case 'maxpool':
          out = await maxPool2d(cur, { kernel: l.kernel, stride: l.stride, padding: l.padding, ceilMode: l.ceilMode });
          break;
        case 'relu':
          out = await relu(cur);
          break;
        case 'spp':
          out = await spp(cur, { levels: l.levels, pool: l.pool, bins: l.bins });
          break;
        case 'fc':
          out = await linear(cur as Tensor, weight(`${l.name}.weight`), weight(`${l.name}.bias`), { relu: l.relu === true });
          break;
        case 'dropout': {
          const r = await dropout(cur as Tensor, { p: l.p, seed: (seed + li * 0x9e3779b1) >>> 0, training: true });
          out = r.output;
          mask = r.mask;
          if (mask) keep(mask);
          break;
        }
        default:
          throw new SppnetError('Model.trainStep: unexpected layer type', 'SPPNET_INTERNAL');
      }
      keep(out);
      tape.push({ layer: l, index: li, input: cur, output: out, mask });
      cur = out;
    }
    const ce = await softmaxCrossEntropy(cur as Tensor, labels);
    let g: Spatial = keep(ce.gradLogits);
    const firstParamLayer = layers.findIndex((l) => l.type === 'conv');
    // Frees a tensor made here as soon as nothing later needs it (peak memory ~ the forward's).
    const drop = (t: Spatial | undefined) => {
      if (t && t !== x && owned.delete(t)) t.dispose();
    };
    for (let ti = tape.length - 1; ti >= 0; ti--) {
      const { layer: l, input, output, mask } = tape[ti];
      const gOut = g;
      switch (l.type) {
        case 'conv': {
          if (l.relu !== false) g = keep(await reluBackward(output, g));
          const r = await conv2dBackward(input, weight(`${l.name}.weight`), g, {
            stride: l.stride, padding: l.padding, dilation: l.dilation, groups: l.groups, needInputGrad: tape[ti].index > firstParamLayer,
          });
          grads.set(`${l.name}.weight`, r.gradWeight);
          if (r.gradBias) grads.set(`${l.name}.bias`, r.gradBias);
          if (r.gradInput) g = keep(r.gradInput);
          break;
        }
        case 'lrn':
          g = keep(await localResponseNormBackward(input, g, { size: l.size, alpha: l.alpha, beta: l.beta, k: l.k }));
          break;
        case 'maxpool':
          g = keep(await maxPool2dBackward(input, g, { kernel: l.kernel, stride: l.stride, padding: l.padding, ceilMode: l.ceilMode }));
          break;
        case 'relu':
          g = keep(await reluBackward(output, g));
          break;
        case 'spp':
          g = keep(await sppBackward(input, g as Tensor, { levels: l.levels, pool: l.pool, bins: l.bins }));
          break;
        case 'fc': {
          if (l.relu === true) g = keep(await reluBackward(output as Tensor, g as Tensor));
          const r = await linearBackward(input as Tensor, weight(`${l.name}.weight`), g as Tensor, { needInputGrad: true });
          grads.set(`${l.name}.weight`, r.gradWeight);
          if (r.gradBias) grads.set(`${l.name}.bias`, r.gradBias);
          if (r.gradInput) g = keep(r.gradInput);
          break;
        }
        case 'dropout':
          if (mask) g = keep(await dropoutBackward(g as Tensor, mask));
          break;
      }
      // This layer's output, mask and the gradients up to its input are done with.
      if (gOut !== g) drop(gOut);
      drop(output);
      drop(mask);
    }
    return { loss: ce.loss, correct: ce.correct, grads };
  } catch (e) {
    for (const t of grads.values()) t.dispose();
    grads.clear();
    throw e;
  } finally {
    for (const t of owned) if (t !== x) t.dispose();
  }
}

export function checkLabels(fn: string, labels: unknown, n: number, classes: number): Int32Array {
  if (!(labels instanceof Int32Array) && !Array.isArray(labels) && !ArrayBuffer.isView(labels)) fail(`${fn}: labels must be an array of class indices, got ${describe(labels)}`);
  const arr = labels as ArrayLike<number>;
  if (arr.length !== n) fail(`${fn}: labels has ${arr.length} entries for ${n} images`);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = arr[i];
    if (!Number.isInteger(v) || v < 0 || v >= classes) fail(`${fn}: labels[${i}] is ${typeof v === 'number' ? v : describe(v)}, outside the classes [0, ${classes})`);
    out[i] = v;
  }
  return out;
}
