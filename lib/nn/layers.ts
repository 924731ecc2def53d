// The layer table: for each kind of layer a network spec may hold, in ONE entry, its spec type,
// where it may stand, the check of its fields (and the parameters it declares), the output size
// it gives, its inference forward, its training forward and its backward. checkSpec, the smallest
// image, Model.run's buffer planning, Model.trainStep's tape and backward all read this table; a
// new layer kind is one entry here plus its ops in lib/ops/.
import { pair, Pair, pairOf } from '../core/checks';
import { describe, fail, isPositiveInt, MAX_ELEMENTS } from '../core/errors';
import { RaggedBatch } from '../core/ragged';
import { Spatial } from '../core/spatial';
import { Tensor } from '../core/tensor';
import { conv2d, conv2dBackward, conv2dCached, convOutSide } from '../ops/conv2d';
import { dropout, dropoutBackward, dropoutRate, relu, reluBackward } from '../ops/elementwise';
import { linear, linearBackward } from '../ops/linear';
import { localResponseNorm, localResponseNormBackward, lrnParams } from '../ops/lrn';
import { lrnMaxPool2d, maxPool2d, maxPool2dBackward, poolOutSide, poolWindow } from '../ops/pool';
import { BinRule, DEFAULT_LEVELS, PoolKind, spp, sppBackward, sppFeatures, sppPyramid } from '../ops/spp';

/** The spec of each layer kind (JSON: what Model.save stores and sp.loadModel({ spec }) takes). */
export interface LayerSpecs {
  conv: { type: 'conv'; name: string; out: number; kernel: Pair; stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number; relu?: boolean };
  lrn: { type: 'lrn'; size: number; alpha?: number; beta?: number; k?: number };
  maxpool: { type: 'maxpool'; kernel: Pair; stride?: Pair; padding?: Pair; ceilMode?: boolean };
  relu: { type: 'relu' };
  spp: { type: 'spp'; levels?: number[]; pool?: PoolKind; bins?: BinRule };
  fc: { type: 'fc'; name: string; out: number; relu?: boolean };
  dropout: { type: 'dropout'; p: number };
}
export type LayerType = keyof LayerSpecs;
export type LayerSpec = LayerSpecs[LayerType];

/** Largest kernel, stride, padding or dilation a spec may give (no image side above it is tried). */
export const MAX_SPEC_SIDE = 65536;

/** What a layer's check sees: where it stands, and the width (channels, or features after spp) flowing in. */
export interface SpecCheck {
  fn: string;
  /** 'spec.layers[i] (name)', for messages. */
  where: string;
  /** The layer as given (unchecked fields). */
  o: Record<string, unknown>;
  /** Channels before the spp layer, features after it; the check sets what flows out. */
  width: number;
  /** Its name field, checked (an identifier used once). */
  name(): string;
  /** Its `out` field, checked (a positive integer). */
  out(): number;
  /** Checks that an optional field is a boolean. */
  flag(field: string): void;
  /** Declares the layer's NAME.weight of `shape` and NAME.bias [shape[0]] (`axes` names the axes, for messages). */
  weight(name: string, shape: number[], fanIn: number, axes: string): void;
}

/** What a layer's forward and backward use besides their input. */
export interface LayerContext {
  weight(name: string): Tensor;
  /** Inference: the buffer to write the output into (a view of a pooled buffer), if any. */
  out?: Spatial;
  /** Inference: the conv layers' cached Winograd filter transforms (see conv2dCached). */
  cache?(layer: string, floats: number): Float32Array;
  /** Training: the layer's dropout seed. */
  seed?: number;
}

/** A training forward's result: the output, and what the backward needs besides input and output. */
export interface Trained {
  out: Spatial;
  mask?: Tensor | RaggedBatch;
}

/** A backward's result: the gradient of the input (absent when not asked for) and of each parameter. */
export interface Backward {
  grad?: Spatial;
  params: Array<[string, Tensor]>;
}

interface LayerKind<L> {
  /** 'trunk': before the spp layer, on maps; 'pyramid': the spp layer; 'head': after it, on rows; 'any': either side. */
  stage: 'trunk' | 'pyramid' | 'head' | 'any';
  /** The article of the kind's name in messages ('an fc layer'). */
  article: 'a' | 'an';
  /** Validates the fields, declares the parameters, sets c.width to the width out. */
  check(c: SpecCheck, l: L): void;
  /** The output side along an axis (layers that change map sizes). */
  side?(l: L, a: number, axis: 0 | 1): number;
  /** The width out for `width` in (default: unchanged). */
  width?(l: L, width: number): number;
  /** Declares parameters (whose gradients the backward gives). */
  params?: true;
  /** Inference; absent: the identity (the layer is skipped). */
  infer?(l: L, x: Spatial, c: LayerContext): Promise<Spatial>;
  /** Inference of this layer and the next one, of kind `next`, in one op (SPPNET_FUSE=0 turns it off). */
  fuse?: { next: LayerType; infer(l: L, next: LayerSpec, x: Spatial, c: LayerContext): Promise<Spatial> };
  /** Training forward (default: infer without an out buffer). */
  train?(l: L, x: Spatial, c: LayerContext): Promise<Trained>;
  /** Gradients from the output's; needInputGrad: some layer before has parameters. */
  backward(l: L, t: { input: Spatial; output: Spatial; mask?: Tensor | RaggedBatch; grad: Spatial; needInputGrad: boolean }, c: LayerContext): Promise<Backward>;
}

type Table = { [K in LayerType]: LayerKind<LayerSpecs[K]> };

/** Runs f(g2) on a gradient made here, freeing it after (whatever happens). */
async function using<T>(made: Spatial, given: Spatial, f: (g: Spatial) => Promise<T>): Promise<T> {
  try {
    return await f(made);
  } finally {
    if (made !== given) made.dispose();
  }
}

const convOpts = (l: LayerSpecs['conv']) => ({ stride: l.stride, padding: l.padding, dilation: l.dilation, groups: l.groups });
const lrnOpts = (l: LayerSpecs['lrn']) => ({ size: l.size, alpha: l.alpha, beta: l.beta, k: l.k });
const poolOpts = (l: LayerSpecs['maxpool']) => ({ kernel: l.kernel, stride: l.stride, padding: l.padding, ceilMode: l.ceilMode });
const sppOpts = (l: LayerSpecs['spp']) => ({ levels: l.levels, pool: l.pool, bins: l.bins });

export const LAYERS: Table = {
  conv: {
    stage: 'trunk',
    article: 'a',
    params: true,
    check(c, l) {
      const name = c.name();
      const cout = c.out();
      const { fn, where } = c;
      if (l.kernel === undefined) fail(`${fn}: ${where}.kernel is required`);
      const [kh, kw] = pairOfChecked(c, 'kernel', [1, 1], 1);
      pairOfChecked(c, 'stride', [1, 1], 1);
      pairOfChecked(c, 'padding', [0, 0], 0);
      pairOfChecked(c, 'dilation', [1, 1], 1);
      const g = l.groups ?? 1;
      if (!isPositiveInt(g) || c.width % g || cout % g) fail(`${fn}: ${where}.groups ${describe(l.groups)} must divide ${c.width} in and ${cout} out channels`);
      c.flag('relu');
      c.weight(name, [cout, c.width / g, kh, kw], (c.width / g) * kh * kw, 'out, input channels / groups, kernel');
      c.width = cout;
    },
    side: (l, a, axis) => convOutSide(a, pairOf(l.kernel, 1)[axis], pairOf(l.stride, 1)[axis], pairOf(l.padding, 0)[axis], pairOf(l.dilation, 1)[axis]),
    width: (l) => l.out,
    infer: (l, x, c) => conv2dCached(x, c.weight(`${l.name}.weight`), c.weight(`${l.name}.bias`), { ...convOpts(l), relu: l.relu !== false, out: c.out },
      (n) => c.cache!(l.name, n)),
    train: async (l, x, c) => ({ out: await conv2d(x, c.weight(`${l.name}.weight`), c.weight(`${l.name}.bias`), { ...convOpts(l), relu: l.relu !== false }) }),
    backward: async (l, t, c) => {
      const g = l.relu !== false ? await reluBackward(t.output, t.grad) : t.grad;
      const r = await using(g, t.grad, (gr) => conv2dBackward(t.input, c.weight(`${l.name}.weight`), gr, { ...convOpts(l), needInputGrad: t.needInputGrad }));
      return { grad: r.gradInput, params: paramList(l.name, r) };
    },
  },
  lrn: {
    stage: 'trunk',
    article: 'an',
    check: (c) => void lrnParams(c.fn, c.o, c.where),
    infer: (l, x, c) => localResponseNorm(x, { ...lrnOpts(l), out: c.out }),
    fuse: {
      next: 'maxpool',
      infer: (l, next, x, c) => lrnMaxPool2d(x, { lrn: lrnOpts(l), pool: poolOpts(next as LayerSpecs['maxpool']), out: c.out }),
    },
    backward: async (l, t) => ({ grad: await localResponseNormBackward(t.input, t.grad, lrnOpts(l)), params: [] }),
  },
  maxpool: {
    stage: 'trunk',
    article: 'a',
    check: (c) => void poolWindow(c.fn, c.o, c.where, MAX_SPEC_SIDE),
    side: (l, a, axis) => poolOutSide(a, pairOf(l.kernel, 1)[axis], pairOf(l.stride ?? l.kernel, 1)[axis], pairOf(l.padding, 0)[axis], l.ceilMode === true),
    infer: (l, x, c) => maxPool2d(x, { ...poolOpts(l), out: c.out }),
    backward: async (l, t) => ({ grad: await maxPool2dBackward(t.input, t.grad, poolOpts(l)), params: [] }),
  },
  relu: {
    stage: 'any',
    article: 'a',
    check: () => undefined,
    infer: (_l, x, c) => relu(x, { out: c.out }),
    backward: async (_l, t) => ({ grad: await reluBackward(t.output, t.grad), params: [] }),
  },
  spp: {
    stage: 'pyramid',
    article: 'an',
    check(c) {
      const levels = sppPyramid(c.fn, c.o, c.where).levels;
      const features = sppFeatures(c.width, levels);
      if (features > MAX_ELEMENTS)
        fail(`${c.fn}: ${c.where}.levels [${levels.join(', ')}] on ${c.width} channels give ${features} features per image, more than the 2^31-1 a row may hold`);
      c.width = features;
    },
    width: (l, channels) => sppFeatures(channels, l.levels ?? DEFAULT_LEVELS),
    infer: (l, x, c) => spp(x, { ...sppOpts(l), out: c.out as Tensor | undefined }),
    backward: async (l, t) => ({ grad: await sppBackward(t.input, t.grad as Tensor, sppOpts(l)), params: [] }),
  },
  fc: {
    stage: 'head',
    article: 'an',
    params: true,
    check(c) {
      const name = c.name();
      const width = c.out();
      c.flag('relu');
      c.weight(name, [width, c.width], c.width, `out, the ${c.width} features of the layers before`);
      c.width = width;
    },
    width: (l) => l.out,
    infer: (l, x, c) => linear(x as Tensor, c.weight(`${l.name}.weight`), c.weight(`${l.name}.bias`), { relu: l.relu === true, out: c.out as Tensor | undefined }),
    backward: async (l, t, c) => {
      const g = l.relu === true ? await reluBackward(t.output as Tensor, t.grad as Tensor) : t.grad;
      const r = await using(g, t.grad, (gr) => linearBackward(t.input as Tensor, c.weight(`${l.name}.weight`), gr as Tensor, { needInputGrad: true }));
      return { grad: r.gradInput, params: paramList(l.name, r) };
    },
  },
  dropout: {
    stage: 'any',
    article: 'a',
    check: (c) => void dropoutRate(c.fn, c.o, c.where),
    // Inference: the identity.
    train: async (l, x, c) => {
      const r = await dropout(x as Tensor, { p: l.p, seed: c.seed, training: true });
      return { out: r.output, mask: r.mask };
    },
    backward: async (_l, t) => ({ grad: t.mask ? await dropoutBackward(t.grad as Tensor, t.mask as Tensor) : t.grad, params: [] }),
  },
};

/** The entry of a layer's kind. */
export function kindOf<L extends LayerSpec>(l: L): LayerKind<L> {
  return LAYERS[l.type] as unknown as LayerKind<L>;
}

/** The training forward of a layer: its own, or its inference without an out buffer. */
export async function trainForward(l: LayerSpec, x: Spatial, c: LayerContext): Promise<Trained> {
  const k = kindOf(l);
  if (k.train) return k.train(l, x, c);
  return { out: k.infer ? await k.infer(l, x, { weight: c.weight }) : x };
}

function pairOfChecked(c: SpecCheck, field: string, dflt: [number, number], min: number): [number, number] {
  return pair(c.fn, `${c.where}.${field}`, c.o[field], dflt, min, MAX_SPEC_SIDE);
}

function paramList(name: string, r: { gradWeight: Tensor; gradBias?: Tensor }): Array<[string, Tensor]> {
  const out: Array<[string, Tensor]> = [[`${name}.weight`, r.gradWeight]];
  if (r.gradBias) out.push([`${name}.bias`, r.gradBias]);
  return out;
}
