// The layer table: for each kind of layer a network spec may hold, in ONE entry, its spec type,
// where it may stand, the check of its fields (and the parameters it declares), the output size
// it gives, its inference forward, its training forward and its backward. checkSpec, the smallest
// image, Model.run's buffer planning, Model.trainStep's tape and backward all read this table; a
// new layer kind is one entry here plus its ops in lib/ops/.
import { pair, Pair, pairOf } from '../core/checks';
import { describe, fail, isPositiveInt, MAX_ELEMENTS, SppnetError } from '../core/errors';
import { RaggedBatch } from '../core/ragged';
import { Spatial } from '../core/spatial';
import { Tensor } from '../core/tensor';
import { concat } from '../ops/concat';
import { conv2d, conv2dBackward, conv2dCached, convOutSide } from '../ops/conv2d';
import { dropout, dropoutBackward, dropoutRate, relu, reluBackward } from '../ops/elementwise';
import { linear, linearBackward } from '../ops/linear';
import { localResponseNorm, localResponseNormBackward, lrnParams } from '../ops/lrn';
import { lrnMaxPool2d, maxPool2d, maxPool2dBackward, poolOutSide, poolWindow } from '../ops/pool';
import { bnAffine, depthwiseAffine, foldAffine } from './fold';
import { BinRule, DEFAULT_LEVELS, PoolKind, spp, sppBackward, sppFeatures, sppPyramid } from '../ops/spp';

/** The spec of each layer kind (JSON: what Model.save stores and sp.loadModel({ spec }) takes). */
export interface LayerSpecs {
  conv: { type: 'conv'; name: string; out: number; kernel: Pair; stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number; relu?: boolean; bias?: boolean };
  /** PyTorch's BatchNorm2d (eps 1e-5, momentum 0.1 by default), then a ReLU when relu is true. Folded into the conv before it at inference. */
  batchnorm: { type: 'batchnorm'; name: string; eps?: number; momentum?: number; relu?: boolean };
  /** y = x * scale[c] + shift[c] per channel, constants of the spec (torchvision's transform_input). */
  affine: { type: 'affine'; scale: number[]; shift: number[] };
  /** The branches (sequences of map layers) run on the same input, their outputs concatenated along channels (Inception). */
  concat: { type: 'concat'; branches: LayerSpec[][] };
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
  /** 'spec.layers[i]': where it stands, for the paths of nested layers. */
  at: string;
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
  /** Declares the layer's NAME.weight of `shape` and, unless bias is false, NAME.bias [shape[0]] (`axes` names the axes, for messages). */
  weight(name: string, shape: number[], fanIn: number, axes: string, bias?: boolean): void;
  /** Declares one parameter or (buffer: true, no gradient) buffer of the state_dict, initialised as `init`. */
  param(name: string, shape: number[], init: ParamInit, buffer?: boolean): void;
  /** Checks a nested sequence of map layers (a branch) on c.width channels; its width out. */
  sequence(layers: unknown, where: string): number;
}

/** How a parameter starts when no weights are given: He's uniform initialisation (fan-in), zeros or ones. */
export type ParamInit = 'he' | 'zeros' | 'ones';

/** What a layer's forward and backward use besides their input. */
export interface LayerContext {
  weight(name: string): Tensor;
  /** Inference: the buffer to write the output into (a view of a pooled buffer), if any. */
  out?: Spatial;
  /** Inference: the conv layers' cached Winograd filter transforms (see conv2dCached). */
  cache?(layer: string, floats: number): Float32Array;
  /** Training: the layer's dropout seed. */
  seed?: number;
  /** Inference: tensors derived from the weights (folded batch norms), made once per key and kept until the weights change. */
  derived?(key: string, make: () => Promise<Tensor[]>): Promise<Tensor[]>;
  /** Inference: runs a branch (a sequence of map layers) on x; done() gives its output's memory back. */
  branch?(layers: LayerSpec[], x: Spatial): Promise<{ out: Spatial; done(): void }>;
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
  /** Inference of this layer and the next one, of kind `next`, in one op where `when` allows (SPPNET_FUSE=0 turns it off). */
  fuse?: { next: LayerType; when?(l: L, next: LayerSpec): boolean; infer(l: L, next: LayerSpec, x: Spatial, c: LayerContext): Promise<Spatial> };
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
      c.flag('bias');
      c.weight(name, [cout, c.width / g, kh, kw], (c.width / g) * kh * kw, 'out, input channels / groups, kernel', l.bias !== false);
      c.width = cout;
    },
    side: (l, a, axis) => convOutSide(a, pairOf(l.kernel, 1)[axis], pairOf(l.stride, 1)[axis], pairOf(l.padding, 0)[axis], pairOf(l.dilation, 1)[axis]),
    width: (l) => l.out,
    infer: (l, x, c) => conv2dCached(x, c.weight(`${l.name}.weight`), convBias(l, c), { ...convOpts(l), relu: l.relu !== false, out: c.out },
      (n) => c.cache!(l.name, n)),
    // conv then batch norm (then ReLU): one conv with the batch norm folded into its weights.
    fuse: {
      next: 'batchnorm',
      when: (l) => l.relu === false,
      infer: async (l, next, x, c) => {
        const bn = next as LayerSpecs['batchnorm'];
        const [w, b] = await c.derived!(`${l.name}+${bn.name}`, async () =>
          foldAffine(c.weight(`${l.name}.weight`), convBias(l, c), await bnAffine(c.weight, bn.name, bnEps(bn)), x.device));
        return conv2dCached(x, w, b, { ...convOpts(l), relu: bn.relu === true, out: c.out }, (n) => c.cache!(`${l.name}+${bn.name}`, n));
      },
    },
    train: async (l, x, c) => ({ out: await conv2d(x, c.weight(`${l.name}.weight`), convBias(l, c), { ...convOpts(l), relu: l.relu !== false }) }),
    backward: async (l, t, c) => {
      const g = l.relu !== false ? await reluBackward(t.output, t.grad) : t.grad;
      const r = await using(g, t.grad, (gr) => conv2dBackward(t.input, c.weight(`${l.name}.weight`), gr, { ...convOpts(l), bias: l.bias !== false, needInputGrad: t.needInputGrad }));
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
  batchnorm: {
    stage: 'trunk',
    article: 'a',
    params: true,
    check(c, l) {
      const name = c.name();
      const { fn, where, o } = c;
      c.flag('relu');
      for (const [field, ok, range] of [['eps', (v: number) => v > 0, 'a positive number'], ['momentum', (v: number) => v >= 0 && v <= 1, 'a number in [0, 1]']] as const)
        if (o[field] !== undefined && (typeof o[field] !== 'number' || !Number.isFinite(o[field]) || !ok(o[field] as number)))
          fail(`${fn}: ${where}.${field} must be ${range}, got ${describe(o[field])}`);
      const C = [c.width];
      c.param(`${name}.weight`, C, 'ones');
      c.param(`${name}.bias`, C, 'zeros');
      c.param(`${name}.running_mean`, C, 'zeros', true);
      c.param(`${name}.running_var`, C, 'ones', true);
      c.param(`${name}.num_batches_tracked`, [], 'zeros', true);
    },
    // Alone (not after a conv it folds into): a 1x1 depthwise conv with the batch norm's scale and shift.
    infer: async (l, x, c) => {
      const [w, b] = await c.derived!(l.name, async () => depthwiseAffine(await bnAffine(c.weight, l.name, bnEps(l)), x.device));
      return conv2d(x, w, b, { groups: w.shape[0], relu: l.relu === true, out: c.out });
    },
    train: notTrainable,
    backward: notTrainable,
  },
  affine: {
    stage: 'trunk',
    article: 'an',
    check(c, l) {
      for (const field of ['scale', 'shift'] as const) {
        const v = c.o[field];
        if (!Array.isArray(v) || v.length !== c.width || !v.every((e) => typeof e === 'number' && Number.isFinite(e)))
          fail(`${c.fn}: ${c.where}.${field} must list ${c.width} finite numbers (one per channel), got ${describe(v)}`);
      }
      void l;
    },
    infer: async (l, x, c) => {
      const [w, b] = await c.derived!(`affine:${l.scale.join(',')}:${l.shift.join(',')}`, async () => depthwiseAffine(l, x.device));
      return conv2d(x, w, b, { groups: w.shape[0], out: c.out });
    },
    train: notTrainable,
    backward: notTrainable,
  },
  concat: {
    stage: 'trunk',
    article: 'a',
    check(c, l) {
      const { fn, where } = c;
      if (!Array.isArray(l.branches) || l.branches.length === 0) fail(`${fn}: ${where}.branches must be a non-empty array of layer lists`);
      const widths = l.branches.map((b, k) => c.sequence(b, `${c.at}.branches[${k}]`));
      // Every branch must give maps of the same size as the first, for every input size.
      for (const axis of [0, 1] as const) {
        for (let a = 1; a <= 256; a++) {
          const sides = l.branches.map((b) => sideThrough(b, a, axis));
          const k = sides.findIndex((sd) => sd !== sides[0]);
          if (sides[0] >= 1 && k > 0)
            fail(`${fn}: ${where}: branch ${k} makes ${sides[k]} of an input side ${a} along ${axis === 0 ? 'H' : 'W'}, branch 0 makes ${sides[0]}; the branches' maps must be the same size`);
        }
      }
      c.width = widths.reduce((s2, w) => s2 + w, 0);
    },
    side: (l, a, axis) => sideThrough(l.branches[0], a, axis),
    width: (l, width) => l.branches.reduce((s2, b) => s2 + b.reduce((w, layer) => widthAfter(layer, w), width), 0),
    infer: async (l, x, c) => {
      const parts: Array<{ out: Spatial; done(): void }> = [];
      try {
        for (const b of l.branches) parts.push(await c.branch!(b, x));
        return await concat(parts.map((p) => p.out), { out: c.out });
      } finally {
        for (const p of parts) p.done();
      }
    },
    train: notTrainable,
    backward: notTrainable,
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

/** The map side after a sequence of map layers for an input side a (below 1: nothing is left). */
export function sideThrough(layers: LayerSpec[], a: number, axis: 0 | 1): number {
  for (const l of layers) {
    const k = kindOf(l);
    if (k.stage === 'pyramid') break;
    if (k.side) a = k.side(l, a, axis);
    if (a < 1) return 0;
  }
  return a;
}

/** The width (channels, or features after the spp layer) after layer l for `width` in. */
export function widthAfter(l: LayerSpec, width: number): number {
  const k = kindOf(l);
  return k.width ? k.width(l, width) : width;
}

const convBias = (l: LayerSpecs['conv'], c: LayerContext) => (l.bias === false ? undefined : c.weight(`${l.name}.bias`));
const bnEps = (l: LayerSpecs['batchnorm']) => l.eps ?? 1e-5;

/** Training through layers whose backward is not written yet: an error that says which. */
function notTrainable(l: LayerSpec): never {
  throw new SppnetError(`Model.trainStep: ${l.type} layers run at inference only in this version (training ${l.type === 'batchnorm' ? 'batch norm' : `through ${l.type} layers`} is not implemented yet)`, 'SPPNET_UNAVAILABLE');
}

function pairOfChecked(c: SpecCheck, field: string, dflt: [number, number], min: number): [number, number] {
  return pair(c.fn, `${c.where}.${field}`, c.o[field], dflt, min, MAX_SPEC_SIDE);
}

function paramList(name: string, r: { gradWeight: Tensor; gradBias?: Tensor }): Array<[string, Tensor]> {
  const out: Array<[string, Tensor]> = [[`${name}.weight`, r.gradWeight]];
  if (r.gradBias) out.push([`${name}.bias`, r.gradBias]);
  return out;
}
