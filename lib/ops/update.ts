// The optimizers' update steps, in place on one parameter: torch.optim.SGD's and Adam/AdamW's.
import { booleanOption, checkOpts, checkTensorLike, numberOption, settle } from '../core/checks';
import { CallSite, describe, fail, isPositiveInt } from '../core/errors';
import { callOp, OpSequence, sequenceOf } from '../core/sequence';
import { nativeBuf, Storage, Tensor } from '../core/tensor';

export interface SgdOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
  /** 1-based step number; required when momentum != 0 (step 1 sets buf = d, as PyTorch's first step). */
  step?: number;
  /** @internal Recorded into this sequence instead of run (the optimizer's steps as one native call). */
  sequence?: OpSequence;
}

function checkParamGroup(fn: string, param: unknown, others: Array<[string, unknown]>): { p: Storage; rest: Storage[] } {
  if (!(param instanceof Tensor)) fail(`${fn}: param must be a Tensor, got ${describe(param)}`);
  const p = param.storage(fn, 'param');
  const rest = others.map(([name, t]) => checkTensorLike(fn, name, t, param, 'param'));
  const named: Array<[string, unknown]> = [['param', param], ...others];
  for (let j = 1; j < named.length; j++)
    for (let i = 0; i < j; i++)
      if (named[i][1] === named[j][1]) fail(`${fn}: ${named[j][0]} is the same tensor as ${named[i][0]}; each must be its own tensor`);
  return { p, rest };
}

/**
 * One step of torch.optim.SGD on one parameter, in place:
 *   d = grad + weightDecay * param
 *   buf = step == 1 ? d : momentum * buf + (1 - dampening) * d;  d = nesterov ? d + momentum * buf : buf   (when momentum != 0)
 *   param -= lr * d
 * momentumBuf may be null when momentum is 0.
 */
export async function sgdStep(param: Tensor, grad: Tensor, momentumBuf: Tensor | null | undefined, opts: SgdOptions): Promise<void> {
  const fn = 'sp.sgdStep';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  if (opts === undefined) fail(`${fn}: options with lr are required`);
  const lr = numberOption(fn, o, 'lr', undefined, (v) => v >= 0, 'a finite number >= 0');
  const momentum = numberOption(fn, o, 'momentum', 0, (v) => v >= 0, 'a finite number >= 0');
  const dampening = numberOption(fn, o, 'dampening', 0, () => true, 'a finite number');
  const weightDecay = numberOption(fn, o, 'weightDecay', 0, (v) => v >= 0, 'a finite number >= 0');
  const nesterov = booleanOption(fn, o, 'nesterov', false);
  if (nesterov && (momentum <= 0 || dampening !== 0)) fail(`${fn}: options.nesterov needs momentum > 0 and dampening 0 (as PyTorch), got momentum ${momentum}, dampening ${dampening}`);
  let step = 0;
  if (momentum !== 0) {
    if (!isPositiveInt(o.step)) fail(`${fn}: options.step must be the 1-based step number (a positive integer) when momentum != 0, got ${describe(o.step)}`);
    step = o.step;
  }
  const useBuf = momentum !== 0;
  if (useBuf && (momentumBuf === null || momentumBuf === undefined)) fail(`${fn}: momentumBuf must be a Tensor like param when momentum != 0, got ${describe(momentumBuf)}`);
  const { p, rest } = checkParamGroup(fn, param, [['grad', grad], ...(useBuf ? [['momentumBuf', momentumBuf] as [string, unknown]] : [])]);
  await settle(site, fn, [], () =>
    callOp(sequenceOf(o), 'sgdStep', {
      n: param.size, ...nativeBuf('param', p), ...nativeBuf('grad', rest[0]), ...(useBuf ? nativeBuf('buf', rest[1]) : {}),
      lr, momentum, dampening, weightDecay, nesterov, firstStep: step === 1,
    }),
  );
}

export interface AdamOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** AdamW: decay the parameter by lr * weightDecay instead of adding weightDecay * param to the gradient. */
  decoupled?: boolean;
  /** 1-based step number (for the bias corrections). */
  step: number;
  /** @internal Recorded into this sequence instead of run (the optimizer's steps as one native call). */
  sequence?: OpSequence;
}

/**
 * One step of torch.optim.Adam (or AdamW with decoupled: true) on one parameter, in place:
 *   AdamW: param *= 1 - lr * weightDecay;   Adam: g = grad + weightDecay * param
 *   m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
 *   param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
 * m and v start as zeros.
 */
export async function adamStep(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, opts: AdamOptions): Promise<void> {
  const fn = 'sp.adamStep';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  if (opts === undefined) fail(`${fn}: options with lr and step are required`);
  const lr = numberOption(fn, o, 'lr', undefined, (x) => x >= 0, 'a finite number >= 0');
  const beta1 = numberOption(fn, o, 'beta1', 0.9, (x) => x >= 0 && x < 1, 'a number in [0, 1)');
  const beta2 = numberOption(fn, o, 'beta2', 0.999, (x) => x >= 0 && x < 1, 'a number in [0, 1)');
  const eps = numberOption(fn, o, 'eps', 1e-8, (x) => x >= 0, 'a finite number >= 0');
  const weightDecay = numberOption(fn, o, 'weightDecay', 0, (x) => x >= 0, 'a finite number >= 0');
  const decoupled = booleanOption(fn, o, 'decoupled', false);
  if (!isPositiveInt(o.step)) fail(`${fn}: options.step must be the 1-based step number (a positive integer), got ${describe(o.step)}`);
  const step = o.step;
  const { p, rest } = checkParamGroup(fn, param, [['grad', grad], ['m', m], ['v', v]]);
  const stepSize = lr / (1 - beta1 ** step);
  const biasCorrection2Sqrt = Math.sqrt(1 - beta2 ** step);
  await settle(site, fn, [], () =>
    callOp(sequenceOf(o), 'adamStep', {
      n: param.size, ...nativeBuf('param', p), ...nativeBuf('grad', rest[0]), ...nativeBuf('m', rest[1]), ...nativeBuf('v', rest[2]), lr, beta1, beta2, eps, weightDecay, decoupled, stepSize, biasCorrection2Sqrt,
    }),
  );
}
