// The layer table: for each kind of layer a network spec may hold, in ONE entry, its spec type,
// where it may stand, the check of its fields (and the parameters it declares), the output size
// it gives, its inference forward, its training forward and its backward. checkSpec, the smallest
// image, Model.run's buffer planning, Model.trainStep's tape and backward all read this table; a
// new layer kind is one entry here plus its ops in lib/ops/.
import { pair, pairOf } from '../core/checks';
import { describe, fail, isPositiveInt, MAX_ELEMENTS } from '../core/errors';
import { ChannelSlice, Spatial, spatialLayout, SpatialLayout } from '../core/spatial';
import { Tensor } from '../core/tensor';
import { addSpatial, affineChannels, batchNormBackward, BatchNormSaved, batchNormTrain } from '../ops/batchnorm';
import { concat, concatBackward, concatInto } from '../ops/concat';
import { conv2d, conv2dBackward, conv2dCached, convOutSide, GradInto } from '../ops/conv2d';
import { dropout, dropoutBackward, dropoutRate, relu, reluBackward } from '../ops/elementwise';
import { linearBackward, linearCached } from '../ops/linear';
import { localResponseNorm, localResponseNormBackward, lrnParams } from '../ops/lrn';
import { lrnMaxPool2d, maxPool2d, maxPool2dBackward, poolOutSide, poolWindow } from '../ops/pool';
import { bnAffine, depthwiseAffine, foldAffine } from './fold';
import { Backward, LayerContext, LayerKind, LayerSpec, LayerSpecs, LayerType, MAX_SPEC_SIDE, SpecCheck, Trained } from './layer-types';
import { DEFAULT_LEVELS, spp, sppBackward, sppFeatures, sppPyramid } from '../ops/spp';

export type { Backward, LayerContext, LayerKind, LayerSpec, LayerSpecs, LayerType, ParamInit, SpecCheck, Trained } from './layer-types';
export { MAX_SPEC_SIDE } from './layer-types';

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
const lrnOpts = (l: LayerSpecs['lrn']) => ({ size: l.size, alpha: l.alpha, beta: l.beta, k: l.k, region: l.region });
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
    infer: (l, x, c) => conv2dCached(x, c.weight(`${l.name}.weight`), convBias(l, c), { ...convOpts(l), relu: l.relu !== false, out: c.slice ?? c.out, sequence: c.sequence },
      (n) => c.cache!(l.name, n)),
    writesSlices: true,
    // conv then batch norm (then ReLU): one conv with the batch norm folded into its weights.
    fuse: {
      next: 'batchnorm',
      when: (l) => l.relu === false,
      infer: async (l, next, x, c) => {
        const bn = next as LayerSpecs['batchnorm'];
        const [w, b] = await c.derived!(`${l.name}+${bn.name}`, async () =>
          foldAffine(c.weight(`${l.name}.weight`), convBias(l, c), await bnAffine(c.weight, bn.name, bnEps(bn)), x.device));
        return conv2dCached(x, w, b, { ...convOpts(l), relu: bn.relu === true, out: c.slice ?? c.out, sequence: c.sequence }, (n) => c.cache!(`${l.name}+${bn.name}`, n));
      },
    },
    train: async (l, x, c) => ({ out: await conv2d(x, c.weight(`${l.name}.weight`), convBias(l, c), { ...convOpts(l), relu: l.relu !== false, sequence: c.sequence }) }),
    recordsTraining: true,
    backward: async (l, t, c) => {
      const g = l.relu !== false ? await reluBackward(t.output, t.grad) : t.grad;
      const w = c.weight(`${l.name}.weight`), into = gradInto(c, l.name, w, l.bias !== false);
      const r = await using(g, t.grad, (gr) => conv2dBackward(t.input, w, gr, { ...convOpts(l), bias: l.bias !== false, needInputGrad: t.needInputGrad, into }));
      return { grad: r.gradInput, params: paramList(l.name, r) };
    },
  },
  lrn: {
    stage: 'trunk',
    recordsTraining: true,
    article: 'an',
    check: (c) => void lrnParams(c.fn, c.o, c.where),
    infer: (l, x, c) => localResponseNorm(x, { ...lrnOpts(l), out: c.out, sequence: c.sequence }),
    fuse: {
      next: 'maxpool',
      when: (l) => l.region !== 'within',
      infer: (l, next, x, c) => lrnMaxPool2d(x, { lrn: lrnOpts(l), pool: poolOpts(next as LayerSpecs['maxpool']), out: c.out, sequence: c.sequence }),
    },
    backward: async (l, t) => ({ grad: await localResponseNormBackward(t.input, t.grad, lrnOpts(l)), params: [] }),
  },
  maxpool: {
    stage: 'trunk',
    recordsTraining: true,
    article: 'a',
    check: (c) => void poolWindow(c.fn, c.o, c.where, MAX_SPEC_SIDE),
    side: (l, a, axis) => poolOutSide(a, pairOf(l.kernel, 1)[axis], pairOf(l.stride ?? l.kernel, 1)[axis], pairOf(l.padding, 0)[axis], l.ceilMode === true),
    infer: (l, x, c) => maxPool2d(x, { ...poolOpts(l), out: c.out, sequence: c.sequence }),
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
      return conv2d(x, w, b, { groups: w.shape[0], relu: l.relu === true, out: c.out, sequence: c.sequence });
    },
    // Training: the batch's statistics (and the running ones updated), as BatchNorm2d.train().
    train: async (l, x, c) => {
      const p = (n: string) => c.weight(`${l.name}.${n}`);
      const r = await batchNormTrain(x, { weight: p('weight'), bias: p('bias'), runningMean: p('running_mean'), runningVar: p('running_var'), numBatchesTracked: p('num_batches_tracked') },
        { eps: bnEps(l), momentum: l.momentum ?? 0.1, relu: l.relu === true });
      return { out: r.output, saved: r.saved };
    },
    backward: async (l, t) => {
      const g = l.relu === true ? await reluBackward(t.output, t.grad) : t.grad;
      const r = await using(g, t.grad, (gr) => batchNormBackward(t.input, gr, t.saved as BatchNormSaved, t.needInputGrad));
      return { grad: r.gradInput, params: [[`${l.name}.weight`, r.gradWeight], [`${l.name}.bias`, r.gradBias]] };
    },
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
      return conv2d(x, w, b, { groups: w.shape[0], out: c.out, sequence: c.sequence });
    },
    train: async (l, x) => ({ out: await affineChannels(x, l.scale, l.shift) }),
    backward: async (l, t) => ({ grad: t.needInputGrad ? await affineChannels(t.grad, l.scale, l.scale.map(() => 0)) : undefined, params: [] }),
  },
  concat: {
    stage: 'trunk',
    recordsTraining: true,
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
    width: (l, width) => l.branches.reduce((s2, b) => s2 + branchWidth(b, width), 0),
    // On the CPU, a branch that ends in a kind that writesSlices (a conv, or a conv with its batch
    // norm folded: every branch of an Inception block) writes its channels of the output in place;
    // the others' outputs are copied in after (googlenet 4x224: ~20 MB of copies a run saved).
    infer: async (l, x, c) => {
      const parts: Array<{ out: Spatial; done(): void; inPlace: boolean }> = [];
      const widths: number[] = [];
      try {
        const inC = spatialLayout('Model.run', x).channels;
        const whole = c.out && x.device === 'cpu' ? c.out : undefined;
        let at = 0;
        for (const b of l.branches) {
          const w = branchWidth(b, inC);
          parts.push(await c.branch!(b, x, whole ? new ChannelSlice(whole, at, w) : undefined));
          widths.push(w);
          at += w;
        }
        if (!whole) return await concat(parts.map((p) => p.out), { out: c.out, sequence: c.sequence });
        await concatInto(parts.map((p) => (p.inPlace ? null : p.out)), widths, whole!, { sequence: c.sequence });
        return whole!;
      } finally {
        for (const p of parts) p.done();
      }
    },
    // Training: every branch keeps its tape (the caller frees what they hold after the backward).
    train: async (l, x, c) => {
      const runs: Array<{ out: Spatial; tape: unknown }> = [];
      for (let k = 0; k < l.branches.length; k++) runs.push(await c.trainBranch!(l.branches[k], x, k));
      const out = await concat(runs.map((r) => r.out), { sequence: c.sequence });
      return { out, saved: { tapes: runs.map((r) => r.tape), widths: runs.map((r) => spatialLayout('Model.trainStep', r.out).channels) } };
    },
    backward: async (l, t, c) => {
      const { tapes, widths } = t.saved as { tapes: unknown[]; widths: number[] };
      const parts = await concatBackward(t.grad, widths);
      let sum: Spatial | undefined;
      try {
        for (let k = 0; k < tapes.length; k++) {
          const gk = await c.backwardBranch!(tapes[k], parts[k], t.needInputGrad);
          if (!gk) continue;
          if (!sum) sum = gk;
          else {
            const next = await addSpatial(sum, gk);
            sum.dispose();
            if (gk !== parts[k]) gk.dispose();
            sum = next;
          }
        }
      } finally {
        for (const p of parts) if (p !== sum) p.dispose();
      }
      // The parameters' gradients were collected by backwardBranch.
      return { grad: sum, params: [] };
    },
    nested: (l) => l.branches,
  },
  relu: {
    stage: 'any',
    recordsTraining: true,
    article: 'a',
    check: () => undefined,
    infer: (_l, x, c) => relu(x, { out: c.out, sequence: c.sequence }),
    backward: async (_l, t) => ({ grad: await reluBackward(t.output, t.grad), params: [] }),
  },
  spp: {
    stage: 'pyramid',
    recordsTraining: true,
    article: 'an',
    check(c) {
      const levels = sppPyramid(c.fn, c.o, c.where).levels;
      const features = sppFeatures(c.width, levels);
      if (features > MAX_ELEMENTS)
        fail(`${c.fn}: ${c.where}.levels [${levels.join(', ')}] on ${c.width} channels give ${features} features per image, more than the 2^31-1 a row may hold`);
      c.width = features;
    },
    width: (l, channels) => sppFeatures(channels, l.levels ?? DEFAULT_LEVELS),
    infer: (l, x, c) => spp(x, { ...sppOpts(l), out: c.out as Tensor | undefined, sequence: c.sequence }),
    backward: async (l, t) => ({ grad: await sppBackward(t.input, t.grad as Tensor, sppOpts(l)), params: [] }),
  },
  fc: {
    stage: 'head',
    recordsTraining: true,
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
    infer: (l, x, c) => linearCached(x as Tensor, c.matrix?.(`${l.name}.weight`) ?? c.weight(`${l.name}.weight`), c.weight(`${l.name}.bias`),
      { relu: l.relu === true, out: c.out as Tensor | undefined, sequence: c.sequence }, c.cache && ((n) => c.cache!(l.name, n))),
    backward: async (l, t, c) => {
      const g = l.relu === true ? await reluBackward(t.output as Tensor, t.grad as Tensor) : t.grad;
      const w = c.weight(`${l.name}.weight`), into = gradInto(c, l.name, w, true);
      const r = await using(g, t.grad, (gr) => linearBackward(t.input as Tensor, w, gr as Tensor, { needInputGrad: true, into }));
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
  return { out: k.infer ? await k.infer(l, x, { weight: c.weight, sequence: c.sequence }) : x };
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

/** The layout of a layer's output: maps of a kind, or rows of features (after the spp layer). */
export interface Layout {
  kind: SpatialLayout['kind'] | 'matrix';
  channels: number;
  sizes: Array<readonly [number, number]>;
}

/** The output layout of layer l for input layout `x` (from the layer table). */
export function layoutAfter(l: LayerSpec, x: Layout): Layout {
  const k = kindOf(l);
  const channels = widthAfter(l, x.channels);
  if (x.kind === 'matrix' || k.stage === 'pyramid') return { kind: 'matrix', channels, sizes: x.sizes };
  const side = k.side;
  return { kind: x.kind, channels, sizes: side ? x.sizes.map(([h, w]) => [side(l, h, 0), side(l, w, 1)] as const) : x.sizes };
}

/** The width out of a branch (a list of layers) for `width` in. */
function branchWidth(b: LayerSpec[], width: number): number {
  return b.reduce((w, layer) => widthAfter(layer, w), width);
}

/** The width (channels, or features after the spp layer) after layer l for `width` in. */
export function widthAfter(l: LayerSpec, width: number): number {
  const k = kindOf(l);
  return k.width ? k.width(l, width) : width;
}

const convBias = (l: LayerSpecs['conv'], c: LayerContext) => (l.bias === false ? undefined : c.weight(`${l.name}.bias`));
const bnEps = (l: LayerSpecs['batchnorm']) => l.eps ?? 1e-5;


/** Whether a layer, or a layer nested in it, has parameters (its backward gives their gradients). */
export function hasParams(l: LayerSpec): boolean {
  const k = kindOf(l);
  return k.params === true || (k.nested?.(l) ?? []).some((b) => b.some(hasParams));
}

function pairOfChecked(c: SpecCheck, field: string, dflt: [number, number], min: number): [number, number] {
  return pair(c.fn, `${c.where}.${field}`, c.o[field], dflt, min, MAX_SPEC_SIDE);
}

/** The context's kept buffers for a layer's weight and bias gradients (none outside Model.trainStep). */
function gradInto(c: LayerContext, name: string, w: Tensor, bias: boolean): GradInto | undefined {
  if (!c.gradInto) return undefined;
  return { weight: c.gradInto(`${name}.weight`, w.shape), bias: bias ? c.gradInto(`${name}.bias`, [w.shape[0]]) : undefined };
}

function paramList(name: string, r: { gradWeight: Tensor; gradBias?: Tensor }): Array<[string, Tensor]> {
  const out: Array<[string, Tensor]> = [[`${name}.weight`, r.gradWeight]];
  if (r.gradBias) out.push([`${name}.bias`, r.gradBias]);
  return out;
}
