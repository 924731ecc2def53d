// Elementwise ops on tensors and ragged batches: ReLU and its backward, dropout and its backward,
// softmax over rows, flatten (a view).
import { booleanOption, checkElementwiseLike, checkOpts, elementwiseInput, allocateAs, matrix, outputLike, settle } from '../core/checks';
import { CallSite, describe, fail } from '../core/errors';
import { argsOf, native } from '../core/native';
import { callOp, OpSequence, sequenceOf } from '../core/sequence';
import { RaggedBatch } from '../core/ragged';
import { allocate, nativeBuf, nativeRef, Storage, Tensor } from '../core/tensor';

/** max(x, 0) elementwise (NaN stays NaN); the input's kind and shape. */
export async function relu<T extends Tensor | RaggedBatch>(x: T, opts?: { out?: T; /** @internal */ sequence?: OpSequence }): Promise<T> {
  const fn = 'sp.relu';
  const site = new CallSite(opts);
  const o = checkOpts(fn, opts);
  const X = elementwiseInput(fn, 'x', x);
  const o2 = outputLike(fn, o.out, X.x as T);
  await settle(site, fn, [o2], () =>
    callOp(sequenceOf(o), 'elementwise', argsOf({ op: 'relu' as const, rows: 1, cols: X.n }, nativeBuf('input', X.store), nativeBuf('output', o2.out.storage(fn, 'the output')))));
  return o2.out;
}

/**
 * Gradient of relu from its forward OUTPUT: output <= 0 ? 0 : gradOutput (PyTorch's
 * threshold_backward: a NaN output passes its gradient on). Tensors or ragged batches.
 */
export async function reluBackward<T extends Tensor | RaggedBatch>(output: T, gradOutput: T): Promise<T> {
  const fn = 'sp.reluBackward';
  const site = new CallSite();
  const A = elementwiseInput(fn, 'output', output);
  const gs = checkElementwiseLike(fn, 'gradOutput', gradOutput, A.x, 'output');
  const out = allocateAs(A.x, fn) as T;
  await settle(site, fn, [out], () =>
    native.pointwise({ op: 'reluBackward', n: A.n, ...nativeBuf('a', A.store), ...nativeBuf('b', gs), ...nativeBuf('output', out.storage(fn, 'the result')) }),
  );
  return out;
}

/** Softmax over axis 1 of x [N, K] (numerically stable; NaN propagates). */
export async function softmax(x: Tensor): Promise<Tensor> {
  const fn = 'sp.softmax';
  const site = new CallSite();
  const X = matrix(fn, x, 'x');
  const [rows, cols] = X.t.shape;
  const out = allocate([rows, cols], X.s.device, fn);
  if (cols === 0) return out;
  await settle(site, fn, [out], () =>
    native.elementwise({ op: 'softmax', rows, cols, ...nativeBuf('input', X.s), ...nativeBuf('output', out.storage(fn, 'the output')) }));
  return out;
}

/** [N, ...] -> [N, rest] as a view sharing memory. */
export function flatten(x: Tensor): Tensor {
  if (!(x instanceof Tensor)) fail(`sp.flatten: x must be a Tensor, got ${describe(x)}`);
  x.storage('sp.flatten', 'x');
  if (x.rank < 1) fail('sp.flatten: x must have rank >= 1');
  return x.reshape([x.shape[0], x.shape.slice(1).reduce((a, b) => a * b, 1)]);
}

export interface DropoutOptions {
  /** Probability of zeroing an element, in [0, 1). */
  p: number;
  /** Integer in [0, 2^53): the mask is a pure function of (seed, element index), the same on every device. */
  seed?: number;
  /** Default true; false gives the identity. */
  training?: boolean;
}

/** @internal The dropout probability o.p, a number in [0, 1); `prefix` names where o sits, for messages. */
export function dropoutRate(fn: string, o: Record<string, unknown>, prefix = 'options'): number {
  const v = o.p;
  if (v === undefined) fail(`${fn}: ${prefix}.p is required (a number in [0, 1))`);
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) fail(`${fn}: ${prefix}.p must be a number in [0, 1), got ${describe(v)}`);
  return v;
}

/** A copy of x on its device, in call order (after the ops called before it: an op writing x included). */
async function copyOf<T extends Tensor | RaggedBatch>(fn: string, site: CallSite, x: T, s: Storage, n: number): Promise<T> {
  const out = allocateAs(x, fn);
  const d = out.storage(fn, 'the copy');
  const to = nativeRef(d), from = nativeRef(s);
  try {
    await site.run(fn, () => native.copy(to.buf, to.offset, from.buf, from.offset, n));
  } catch (e) {
    out.dispose();
    throw e;
  }
  return out;
}

const checkSeed = (fn: string, seed: unknown) => {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) fail(`${fn}: options.seed must be an integer in [0, 2^53), got ${describe(seed)}`);
};

/**
 * Inverted dropout: output = x * mask, mask elements 0 or 1 / (1 - p), element i dropped when the
 * top 24 bits of a SplitMix64 hash of (seed, i) fall below p * 2^24. With training false or p = 0
 * the output is a copy of x and mask is absent.
 */
export async function dropout<T extends Tensor | RaggedBatch>(x: T, opts: DropoutOptions): Promise<{ output: T; mask?: T }> {
  const fn = 'sp.dropout';
  const site = new CallSite();
  const o = checkOpts(fn, opts);
  const X = elementwiseInput(fn, 'x', x);
  const p = dropoutRate(fn, o);
  const training = booleanOption(fn, o, 'training', true);
  if (!training || p === 0) {
    if (o.seed !== undefined) checkSeed(fn, o.seed);
    return { output: await copyOf(fn, site, X.x as T, X.store, X.n) };
  }
  if (o.seed === undefined) fail(`${fn}: options.seed is required when training with p > 0 (an integer in [0, 2^53))`);
  checkSeed(fn, o.seed);
  const output = allocateAs(X.x as T, fn), mask = allocateAs(X.x as T, fn);
  // Dropped when bits < threshold: P(drop) = threshold / 2^24, the nearest 24-bit fraction to p.
  const threshold = Math.min(16777216, Math.round(p * 16777216));
  const scale = 1 / (1 - p);
  await settle(site, fn, [output, mask], () =>
    native.dropout({
      n: X.n, ...nativeBuf('input', X.store), ...nativeBuf('output', output.storage(fn, 'the output')), ...nativeBuf('mask', mask.storage(fn, 'the mask')),
      seed: o.seed as number, threshold, scale,
    }),
  );
  return { output, mask };
}

/** Gradient of dropout: gradOutput * mask (a copy of gradOutput when mask is null or undefined: dropout was the identity). */
export async function dropoutBackward<T extends Tensor | RaggedBatch>(gradOutput: T, mask: T | null | undefined): Promise<T> {
  const fn = 'sp.dropoutBackward';
  const site = new CallSite();
  const G = elementwiseInput(fn, 'gradOutput', gradOutput);
  if (mask === null || mask === undefined) return copyOf(fn, site, G.x as T, G.store, G.n);
  const ms = checkElementwiseLike(fn, 'mask', mask, G.x, 'gradOutput');
  const out = allocateAs(G.x as T, fn);
  await settle(site, fn, [out], () =>
    native.pointwise({ op: 'multiply', n: G.n, ...nativeBuf('a', G.store), ...nativeBuf('b', ms), ...nativeBuf('output', out.storage(fn, 'the result')) }),
  );
  return out;
}
