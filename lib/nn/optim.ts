// Optimizers (SGD with momentum and weight decay, as in the paper; Adam and AdamW) holding their
// state per parameter, and learning-rate schedules.
import { CallSite, describe, fail, isPositiveInt, SppnetError } from '../core/errors';
import { newSequence } from '../core/sequence';
import { Tensor, tensor, zeros } from '../core/tensor';
import { adamStep, sgdStep } from '../ops/update';

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

  /**
   * One update of every parameter from its gradient, at learning rate lr: the steps checked and
   * recorded, then run as one native call (one hand-over to the executor for them all).
   */
  async apply(params: ReadonlyMap<string, Tensor>, grads: ReadonlyMap<string, Tensor>, lr: number, fn = 'Model.trainStep'): Promise<void> {
    const o = this.options;
    const site = new CallSite();
    const sequence = newSequence(); // none under SPPNET_SEQUENCE=0: each update called as it comes
    // The step counts once every update is checked and recorded: a check that fails leaves no
    // parameter changed and the count as it was.
    const step = this.steps + 1;
    for (const [name, g] of grads) {
      const p = params.get(name);
      if (!p) throw new SppnetError(`Optimizer: no parameter ${name}`, 'SPPNET_INTERNAL');
      const b = this.buffers(name, p);
      if (o.type === 'sgd') {
        await sgdStep(p, g, b[0] ?? null, { lr, momentum: o.momentum, weightDecay: o.weightDecay, nesterov: o.nesterov, step, sequence });
      } else {
        await adamStep(p, g, b[0], b[1], { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.weightDecay, decoupled: o.type === 'adamw', step, sequence });
      }
    }
    this.steps = step;
    if (sequence) await site.run(fn, () => sequence.run());
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
