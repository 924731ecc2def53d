// SPP-net models: a network is a plain spec (a list of layers), the paper's networks are such
// specs, and one runner serves them all: conv layers on a ragged batch (every image keeps its
// size), SPP to a fixed length, then fully connected layers.
import { backend, Device } from './backend';
import { describe, fail, isPositiveInt, MAX_ELEMENTS, SppnetError } from './errors';
import { conv2dCached, convOutSide, linear, localResponseNorm, lrnMaxPool2d, lrnParams, maxPool2d, pair, poolOutSide, poolWindow, relu, softmax } from './layers';
import { dropoutRate } from './grad';
import { RaggedBatch, ragged } from './ragged';
import { Spatial, spatialLayout, SpatialLayout } from './spatial';
import { BinRule, PoolKind, spp, sppFeatures, sppPyramid } from './spp';
import { checkStateDict, readSafetensors, writeSafetensors } from './safetensors';
import { allocateReleasable, freeReleasable, Storage, Tensor, tensor } from './tensor';
import { native } from './native';
import { prng } from './data';
import { checkLabels, lossAndGradients, Optimizer, OptimizerOptions, StepResult } from './train';
import { topK } from './topk';

type Pair = number | [number, number];

export type LayerSpec =
  | { type: 'conv'; name: string; out: number; kernel: Pair; stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number; relu?: boolean }
  | { type: 'lrn'; size: number; alpha?: number; beta?: number; k?: number }
  | { type: 'maxpool'; kernel: Pair; stride?: Pair; padding?: Pair; ceilMode?: boolean }
  | { type: 'relu' }
  | { type: 'spp'; levels?: number[]; pool?: PoolKind; bins?: BinRule }
  | { type: 'fc'; name: string; out: number; relu?: boolean }
  | { type: 'dropout'; p: number };

export interface ModelSpec {
  name: string;
  /** Image channels (3 for RGB). */
  inChannels: number;
  /** conv / lrn / maxpool / relu layers, one 'spp', then fc / dropout / relu layers. */
  layers: LayerSpec[];
}

const P = (n: number): [number, number] => [n, n];

/** The SPP-net paper's networks (Table 1 of He et al. 2014), with the paddings the README lists. */
export function archSpec(arch: string, classes: number, levels: number[] = [6, 3, 2, 1]): ModelSpec {
  const conv = (name: string, out: number, kernel: number, stride = 1, padding = 0): LayerSpec => ({ type: 'conv', name, out, kernel, stride, padding, relu: true });
  const lrn: LayerSpec = { type: 'lrn', size: 5, alpha: 1e-4, beta: 0.75, k: 2 };
  const pool = (kernel: number, stride: number, padding = 0): LayerSpec => ({ type: 'maxpool', kernel, stride, padding });
  const head: LayerSpec[] = [
    { type: 'spp', levels, pool: 'max' },
    { type: 'fc', name: 'fc6', out: 4096, relu: true },
    { type: 'dropout', p: 0.5 },
    { type: 'fc', name: 'fc7', out: 4096, relu: true },
    { type: 'dropout', p: 0.5 },
    { type: 'fc', name: 'fc8', out: classes, relu: false },
  ];
  switch (arch) {
    case 'zf5':
      return { name: 'zf5', inChannels: 3, layers: [
        conv('conv1', 96, 7, 2, 1), lrn, pool(3, 2, 1),     // 224 -> 110 -> 55
        conv('conv2', 256, 5, 2, 1), lrn, pool(3, 2, 0),    // 55 -> 27 -> 13
        conv('conv3', 384, 3, 1, 1), conv('conv4', 384, 3, 1, 1), conv('conv5', 256, 3, 1, 1), ...head] };
    case 'convnet5':
      return { name: 'convnet5', inChannels: 3, layers: [
        conv('conv1', 96, 11, 4, 2), lrn,                   // 224 -> 55
        conv('conv2', 256, 5, 1, 2), lrn, pool(3, 2, 0),    // 55 -> 27
        conv('conv3', 384, 3, 1, 1), pool(3, 2, 0),         // 27 -> 13
        conv('conv4', 384, 3, 1, 1), conv('conv5', 256, 3, 1, 1), ...head] };
    case 'overfeat5':
    case 'overfeat7': {
      const deep = arch === 'overfeat7' ? [conv('conv6', 512, 3, 1, 1), conv('conv7', 512, 3, 1, 1)] : [];
      return { name: arch, inChannels: 3, layers: [
        conv('conv1', 96, 7, 2, 0), lrn, pool(3, 3, 0),     // 224 -> 109 -> 36
        conv('conv2', 256, 5, 1, 2), lrn, pool(2, 2, 0),    // 36 -> 18
        conv('conv3', 512, 3, 1, 1), conv('conv4', 512, 3, 1, 1), conv('conv5', 512, 3, 1, 1), ...deep, ...head] };
    }
    default:
      return fail(`sp.models: unknown arch ${JSON.stringify(arch)}; known: zf5, convnet5, overfeat5, overfeat7`);
  }
}

const pairOf = (v: Pair | undefined, d: number): [number, number] => (v === undefined ? P(d) : typeof v === 'number' ? P(v) : v);

/** One parameter: its PyTorch state_dict name and shape. */
export interface ParamInfo {
  name: string;
  shape: number[];
  fanIn: number;
}

interface Checked {
  spec: ModelSpec;
  params: ParamInfo[];
  features: number;   // width after SPP
  classes: number;    // width of the last fc
  sppIndex: number;
  minSize: [number, number];
}

/** Largest kernel, stride, padding or dilation a spec may give (no image side above it is tried). */
export const MAX_SPEC_SIDE = 65536;
/** Most floats the weights of one model may hold together: 2^30, 4 GiB. */
export const MAX_MODEL_FLOATS = 2 ** 30;

/**
 * Validates a spec and derives its parameters (names as PyTorch's state_dict: NAME.weight,
 * NAME.bias), the width after SPP and the smallest image, before anything is allocated: every
 * field of every layer is checked (integers where sizes are, within what the kernels take), and
 * so are the sizes they multiply into (each weight within a tensor's 2^31-1 elements, all of them
 * within MAX_MODEL_FLOATS). Errors name the layer and the field.
 */
export function checkSpec(spec: ModelSpec, fn = 'sp.loadModel'): Checked {
  if (typeof spec !== 'object' || spec === null) fail(`${fn}: spec must be an object, got ${describe(spec)}`);
  if (typeof spec.name !== 'string' || spec.name === '') fail(`${fn}: spec.name must be a non-empty string, got ${describe(spec.name)}`);
  if (!isPositiveInt(spec.inChannels) || spec.inChannels > MAX_ELEMENTS)
    fail(`${fn}: spec.inChannels must be a positive integer (at most 2^31-1), got ${describe(spec.inChannels)}`);
  if (!Array.isArray(spec.layers) || spec.layers.length === 0) fail(`${fn}: spec.layers must be a non-empty array`);
  const params: ParamInfo[] = [];
  const owners: string[] = []; // per param: its layer, for messages
  const names = new Set<string>();
  let channels = spec.inChannels;
  let features = 0;
  let sppIndex = -1;
  let sppLevels: number[] = [];
  spec.layers.forEach((l, i) => {
    if (typeof l !== 'object' || l === null) fail(`${fn}: spec.layers[${i}] must be an object, got ${describe(l)}`);
    const label = typeof (l as { name?: unknown }).name === 'string' ? (l as { name: string }).name : String((l as { type?: unknown }).type);
    const where = `spec.layers[${i}] (${label})`;
    const afterSpp = sppIndex >= 0;
    const o = l as unknown as Record<string, unknown>;
    const named = (name: unknown) => {
      if (typeof name !== 'string' || !/^[A-Za-z_][\w.]*$/.test(name)) fail(`${fn}: spec.layers[${i}].name must be an identifier, got ${describe(name)}`);
      if (names.has(name)) fail(`${fn}: ${where}.name ${JSON.stringify(name)} is used twice`);
      names.add(name);
      return name;
    };
    const out = () => {
      if (!isPositiveInt(o.out) || o.out > MAX_ELEMENTS)
        fail(`${fn}: ${where}.out must be a positive integer (at most 2^31-1), got ${describe(o.out)}`);
      return o.out as number;
    };
    const flag = (field: string) => {
      if (o[field] !== undefined && typeof o[field] !== 'boolean') fail(`${fn}: ${where}.${field} must be a boolean, got ${describe(o[field])}`);
    };
    const weight = (name: string, shape: number[], fanIn: number, axes: string) => {
      const n = shape.reduce((a, b) => a * b, 1);
      if (n > MAX_ELEMENTS)
        fail(`${fn}: ${where}: its weight ${name}.weight [${shape.join(', ')}] (${axes}) would hold ${n} elements, more than the 2^31-1 a tensor may hold`);
      params.push({ name: `${name}.weight`, shape, fanIn }, { name: `${name}.bias`, shape: [shape[0]], fanIn });
      owners.push(where, where);
    };
    switch (l.type) {
      case 'conv': {
        if (afterSpp) fail(`${fn}: ${where} is a conv layer after the spp layer`);
        const name = named(l.name);
        const cout = out();
        if (l.kernel === undefined) fail(`${fn}: ${where}.kernel is required`);
        const [kh, kw] = pair(fn, `${where}.kernel`, l.kernel, [1, 1], 1, MAX_SPEC_SIDE);
        pair(fn, `${where}.stride`, l.stride, [1, 1], 1, MAX_SPEC_SIDE);
        pair(fn, `${where}.padding`, l.padding, [0, 0], 0, MAX_SPEC_SIDE);
        pair(fn, `${where}.dilation`, l.dilation, [1, 1], 1, MAX_SPEC_SIDE);
        const g = l.groups ?? 1;
        if (!isPositiveInt(g) || channels % g || cout % g) fail(`${fn}: ${where}.groups ${describe(l.groups)} must divide ${channels} in and ${cout} out channels`);
        flag('relu');
        weight(name, [cout, channels / g, kh, kw], (channels / g) * kh * kw, 'out, input channels / groups, kernel');
        channels = cout;
        break;
      }
      case 'lrn':
        if (afterSpp) fail(`${fn}: ${where} is an lrn layer after the spp layer`);
        lrnParams(fn, o, where);
        break;
      case 'maxpool':
        if (afterSpp) fail(`${fn}: ${where} is a maxpool layer after the spp layer`);
        poolWindow(fn, o, where, MAX_SPEC_SIDE);
        break;
      case 'relu':
        break;
      case 'dropout':
        dropoutRate(fn, o, where);
        break;
      case 'spp': {
        if (afterSpp) fail(`${fn}: ${where} is a second spp layer`);
        sppIndex = i;
        sppLevels = sppPyramid(fn, o, where).levels;
        features = sppFeatures(channels, sppLevels);
        if (features > MAX_ELEMENTS)
          fail(`${fn}: ${where}.levels [${sppLevels.join(', ')}] on ${channels} channels give ${features} features per image, more than the 2^31-1 a row may hold`);
        break;
      }
      case 'fc': {
        if (!afterSpp) fail(`${fn}: ${where} is an fc layer before the spp layer`);
        const name = named(l.name);
        const width = out();
        flag('relu');
        weight(name, [width, features], features, `out, the ${features} features of the layers before`);
        features = width;
        break;
      }
      default:
        fail(`${fn}: spec.layers[${i}].type must be conv, lrn, maxpool, relu, spp, fc or dropout, got ${describe((l as { type?: unknown }).type)}`);
    }
  });
  if (sppIndex < 0) fail(`${fn}: spec.layers has no spp layer`);
  const sizes = params.map((p) => p.shape.reduce((a, b) => a * b, 1));
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total > MAX_MODEL_FLOATS) {
    const k = sizes.indexOf(Math.max(...sizes));
    fail(`${fn}: ${spec.name}'s weights would hold ${total} floats (${(total / 2 ** 28).toFixed(1)} GiB), more than the ${MAX_MODEL_FLOATS} (4 GiB) a model may hold; ` +
      `the largest is ${params[k].name} [${params[k].shape.join(', ')}] of ${owners[k]}`);
  }
  return {
    spec, params, features: sppFeatures(channels, sppLevels), classes: features, sppIndex,
    minSize: [smallestSide(fn, spec, 0), smallestSide(fn, spec, 1)],
  };
}

/**
 * The output side of the conv part for an input side a along one axis, or the index of the first
 * layer whose output would be empty. For a checked spec.
 */
function sideAfter(spec: ModelSpec, a: number, axis: 0 | 1): { side: number; empty?: number } {
  for (let i = 0; i < spec.layers.length; i++) {
    const l = spec.layers[i];
    if (l.type === 'spp') break;
    if (l.type === 'conv') {
      a = convOutSide(a, pairOf(l.kernel, 1)[axis], pairOf(l.stride, 1)[axis], pairOf(l.padding, 0)[axis], pairOf(l.dilation, 1)[axis]);
    } else if (l.type === 'maxpool') {
      a = poolOutSide(a, pairOf(l.kernel, 1)[axis], pairOf(l.stride ?? l.kernel, 1)[axis], pairOf(l.padding, 0)[axis], l.ceilMode === true);
    }
    if (a < 1) return { side: 0, empty: i };
  }
  return { side: a };
}

/** The smallest image side (along H or W) every layer of a checked spec accepts. */
function smallestSide(fn: string, spec: ModelSpec, axis: 0 | 1): number {
  const largest = sideAfter(spec, MAX_SPEC_SIDE, axis);
  if (largest.empty !== undefined) {
    const l = spec.layers[largest.empty] as { name?: string; type: string };
    fail(`${fn}: spec.layers[${largest.empty}] (${l.name ?? l.type}) leaves nothing along ${axis === 0 ? 'H' : 'W'} of any image up to ${MAX_SPEC_SIDE} pixels: its kernel, stride and padding need more`);
  }
  // Output sides never shrink as the input grows: bisect.
  let lo = 1, hi = MAX_SPEC_SIDE;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (sideAfter(spec, mid, axis).side >= 1) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The smallest image [H, W] a network accepts (its spec is checked). */
export function minimumSize(spec: ModelSpec): [number, number] {
  return checkSpec(spec, 'sp.minimumSize').minSize;
}

/** What a model's activation pool may keep (sp.loadModel / sp.buildModel options). */
export interface ActivationOptions {
  /**
   * Bytes of activation buffers the model may hold (default SPPNET_ACTIVATION_BUDGET, else 1 GiB);
   * Infinity for no limit, 0 to keep none between runs.
   */
  activationBudget?: number;
  /**
   * Milliseconds without a run after which the model frees the buffers it keeps (default
   * SPPNET_ACTIVATION_IDLE_MS, else 10000); Infinity to keep them, 0 to free them after every run.
   */
  activationIdleMs?: number;
}

export const DEFAULT_ACTIVATION_BUDGET = 2 ** 30;
export const DEFAULT_ACTIVATION_IDLE_MS = 10000;

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Budget and idle time from the options, else the environment, else the defaults; checked. */
function activationSettings(fn: string, o: ActivationOptions): { budget: number; idleMs: number } {
  const setting = (name: keyof ActivationOptions, env: string, dflt: number, bytes: boolean): number => {
    const v = o[name];
    if (v !== undefined) {
      if (typeof v !== 'number' || !(v >= 0) || (Number.isFinite(v) && !Number.isInteger(v)))
        fail(`${fn}: options.${name} must be a non-negative integer or Infinity, got ${describe(v)}`);
      return v;
    }
    const raw = process.env[env];
    if (raw === undefined || raw.trim() === '') return dflt;
    const m = /^\s*(\d+(?:\.\d+)?|infinity)\s*(?:([kmgt])i?b?|b)?\s*$/i.exec(raw);
    const n = m ? (m[1].toLowerCase() === 'infinity' ? Infinity : Math.floor(Number(m[1]) * UNITS[(m[2] ?? '').toLowerCase()])) : NaN;
    if (!(n >= 0) || (!bytes && m?.[2] !== undefined))
      fail(`${fn}: ${env} must be ${bytes ? 'a byte count (e.g. 1073741824, 512M or 2G) or Infinity' : 'a number of milliseconds or Infinity'}, got ${JSON.stringify(raw)}`);
    return n;
  };
  return {
    budget: setting('activationBudget', 'SPPNET_ACTIVATION_BUDGET', DEFAULT_ACTIVATION_BUDGET, true),
    idleMs: setting('activationIdleMs', 'SPPNET_ACTIVATION_IDLE_MS', DEFAULT_ACTIVATION_IDLE_MS, false),
  };
}

/** Bytes held by the activation pools of this thread's live models (sp.memory().activationBytes). */
const activations = { bytes: 0 };
// A model dropped without dispose() takes its pool's bytes out of the total when collected.
const poolCollected = new FinalizationRegistry<{ bytes: number }>((held) => {
  activations.bytes -= held.bytes;
});

/** @internal */
export function activationBytes(): number {
  return activations.bytes;
}

/**
 * Activation buffers kept between runs, so that steady-state inference allocates nothing but its
 * result. Buffers are bucketed by size (rounded up to 1/8 of a power of two, at most 12.5% slack)
 * and a layer's output is a view of the first elements of one.
 *
 * The pool holds at most `budget` bytes (buffers in use and kept together) except while a run
 * needs more at once: then it allocates what it needs, first freeing kept buffers it does not,
 * and frees each buffer it is given back while it holds more than the budget. It frees what it
 * keeps after `idleMs` without a run (an unref'd timer), and at release().
 */
class ActivationPool {
  private kept = new Map<number, Tensor[]>();
  private keptBytes = 0;
  private runs = 0;
  /** Set by release() while runs are in flight: the buffers they give back are freed, until none is left. */
  private draining = false;
  /** Buffers were freed since the last release(): on CUDA the device's pool still holds their memory. */
  private dropped = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private readonly held = { bytes: 0 };

  constructor(private readonly device: Device, readonly budget: number, readonly idleMs: number) {
    poolCollected.register(this, this.held, this);
  }

  /** Bytes held: buffers in use and kept. */
  get bytes(): number {
    return this.held.bytes;
  }

  private static bucket(n: number): number {
    if (n <= 1024) return 1024;
    const step = 2 ** (Math.floor(Math.log2(n)) - 3);
    return Math.ceil(n / step) * step;
  }

  private count(bytes: number): void {
    this.held.bytes += bytes;
    activations.bytes += bytes;
  }

  private drop(t: Tensor): void {
    freeReleasable(t); // its host memory goes back to the system now, not at the next GC
    this.count(-4 * t.size);
    this.dropped = true;
  }

  /** A run starts: nothing is idle. */
  begin(): void {
    this.runs += 1;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** A run ended: once none is left, what the pool keeps is freed after idleMs. */
  end(): void {
    this.runs -= 1;
    if (this.runs === 0) this.draining = false;
    if (this.runs > 0 || this.closed || (this.keptBytes === 0 && !this.dropped) || this.idleMs === Infinity) return;
    if (this.idleMs === 0) return this.release();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.runs === 0) this.release();
    }, this.idleMs);
    this.timer.unref?.();
  }

  take(n: number, fn: string): Tensor {
    const b = ActivationPool.bucket(n);
    let t = this.kept.get(b)?.pop();
    if (t) {
      this.keptBytes -= 4 * b;
    } else {
      this.evict(this.held.bytes + 4 * b - this.budget);
      t = allocateReleasable([b], this.device, fn);
      this.count(4 * b);
    }
    return t;
  }

  give(t: Tensor): void {
    if (this.closed || this.draining || this.held.bytes > this.budget) return this.drop(t);
    const list = this.kept.get(t.size) ?? [];
    list.push(t);
    this.kept.set(t.size, list);
    this.keptBytes += 4 * t.size;
  }

  /** Frees kept buffers, largest first, until `bytes` are freed or none is left. */
  private evict(bytes: number): void {
    if (bytes <= 0 || this.keptBytes === 0) return;
    for (const size of [...this.kept.keys()].sort((x, y) => y - x)) {
      const list = this.kept.get(size)!;
      while (list.length > 0 && bytes > 0) {
        const t = list.pop()!;
        this.keptBytes -= 4 * size;
        bytes -= 4 * size;
        this.drop(t);
      }
      if (list.length === 0) this.kept.delete(size);
      if (bytes <= 0) break;
    }
  }

  /**
   * Frees every kept buffer now, and those the runs in flight use as they give them back. On
   * CUDA the device's memory pool then gives what nothing uses back to the driver.
   */
  release(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.draining = this.runs > 0;
    this.evict(Infinity);
    this.kept.clear();
    if (this.dropped && this.device === 'cuda') native.trimDeviceMemory();
    // On the CPU the buffers themselves are unmapped already; the C library's heap keeps what the
    // runs' smaller allocations (and image decoding) left free: hand that back too, off the loop.
    if (this.dropped && this.device === 'cpu') native.trimHostMemory().catch(() => {});
    this.dropped = false;
  }

  /** A view of the first elements of `buf` as the output of a layer. */
  static view(buf: Tensor, kind: SpatialLayout['kind'] | 'matrix', channels: number, sizes: Array<readonly [number, number]>, rows = 0): Spatial {
    const s = buf.storage('Model.run', 'an activation buffer');
    const n = kind === 'matrix' ? rows * channels : sizes.reduce((a, [h, w]) => a + channels * h * w, 0);
    const store: Storage = s.device === 'cpu' ? { device: 'cpu', array: s.array.subarray(0, n) } : { device: 'cuda', buffer: s.buffer, offset: s.offset };
    if (kind === 'ragged') return new RaggedBatch(new Tensor(store, [n], false, buf), channels, sizes);
    const shape = kind === 'matrix' ? [rows, channels] : kind === 'dense' ? [sizes.length, channels, ...sizes[0]] : [channels, ...sizes[0]];
    return new Tensor(store, shape, false, buf);
  }

  /** Frees everything now; buffers still in use are freed when given back. */
  dispose(): void {
    this.release();
    this.closed = true;
    poolCollected.unregister(this);
  }
}

export interface Prediction {
  index: number;
  label?: string;
  score: number;
}

export class Model {
  readonly spec: ModelSpec;
  readonly device: Device;
  readonly params: ReadonlyArray<ParamInfo>;
  readonly classes: number;
  /** Smallest image [H, W] the network accepts. */
  readonly minSize: readonly [number, number];
  private weights: Map<string, Tensor>;
  private pool: ActivationPool;
  private opt: Optimizer | undefined;
  private disposed = false;
  /** Calls in flight (run, predict, trainStep, stateDict): dispose() frees the memory after the last. */
  private inflight = 0;
  /**
   * Per conv layer, the CPU Winograd path's transformed filters (conv2dCached), kept between runs:
   * the weights only change through trainStep and loadStateDict, which drop these.
   */
  private filterCaches = new Map<string, Float32Array>();

  /** @internal Use sp.loadModel(). */
  constructor(checked: Checked, weights: Map<string, Tensor>, device: Device, activation: { budget: number; idleMs: number }) {
    this.spec = checked.spec;
    this.params = checked.params;
    this.classes = checked.classes;
    this.device = device;
    this.weights = weights;
    this.pool = new ActivationPool(device, activation.budget, activation.idleMs);
    this.minSize = Object.freeze(checked.minSize);
  }

  /** The parameters as host arrays keyed by state_dict name (a copy). */
  stateDict(): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    return this.call('Model.stateDict', async () => {
      const out = new Map<string, { shape: number[]; data: Float32Array }>();
      for (const p of this.params) out.set(p.name, { shape: [...p.shape], data: await this.weights.get(p.name)!.data() });
      return out;
    });
  }

  /** Bytes of activation buffers the model holds now (in use by runs in flight, and kept for the next). */
  get activationBytes(): number {
    return this.pool.bytes;
  }

  /** The activation budget in bytes and the idle time in ms this model was built with. */
  get activationBudget(): { bytes: number; idleMs: number } {
    return { bytes: this.pool.budget, idleMs: this.pool.idleMs };
  }

  /**
   * Frees the activation buffers the model keeps now (those a run in flight uses, when it ends);
   * later runs allocate afresh. Nothing happens on a disposed model.
   */
  releaseBuffers(): void {
    this.pool.release();
  }

  private alive(fn: string) {
    if (this.disposed) throw new SppnetError(`${fn}: the model was disposed`, 'SPPNET_DISPOSED');
  }

  /**
   * Runs `body` as a call in flight: refused once the model is disposed; a dispose() meanwhile
   * lets it finish and frees the model's memory when the last call in flight ends.
   */
  private async call<T>(fn: string, body: () => Promise<T>): Promise<T> {
    this.alive(fn);
    this.inflight += 1;
    try {
      return await body();
    } finally {
      this.inflight -= 1;
      if (this.inflight === 0 && this.disposed) this.free();
    }
  }

  private w(name: string): Tensor {
    return this.weights.get(name)!;
  }

  private filterCache(layer: string, floats: number): Float32Array {
    let c = this.filterCaches.get(layer);
    if (!c || c.length !== floats) this.filterCaches.set(layer, (c = new Float32Array(floats)));
    return c;
  }

  /**
   * Logits [N, classes] for N images of any sizes >= minSize: a RaggedBatch of [C, H, W] maps, an
   * array of [C, H, W] tensors, or a dense [N, C, H, W] tensor. Inference mode (dropout off).
   */
  run(images: RaggedBatch | Tensor | Tensor[]): Promise<Tensor> {
    return this.runAs('Model.run', images);
  }

  private runAs(fn: string, images: RaggedBatch | Tensor | Tensor[]): Promise<Tensor> {
    return this.call(fn, async () => {
      this.pool.begin(); // from the call on (synchronously): the pool is not idle
      try {
        const { x, owned, L } = await this.input(fn, images);
        try {
          return await this.forward(fn, x, L);
        } finally {
          owned?.dispose();
        }
      } finally {
        this.pool.end();
      }
    });
  }

  /** Checks the images and packs an array of maps into a batch on the model's device. */
  private async input(fn: string, images: RaggedBatch | Tensor | Tensor[]): Promise<{ x: RaggedBatch | Tensor; owned?: RaggedBatch; L: SpatialLayout }> {
    let owned: RaggedBatch | undefined;
    let x: RaggedBatch | Tensor;
    if (Array.isArray(images)) {
      images.forEach((t, i) => {
        if (!(t instanceof Tensor)) fail(`${fn}: images[${i}] must be a Tensor [C, H, W], got ${describe(t)}`);
        t.storage(fn, `images[${i}]`);
        if (t.rank !== 3) fail(`${fn}: images[${i}] must have rank 3 [C, H, W], got shape [${t.shape.join(', ')}]`);
        if (t.shape[0] !== this.spec.inChannels) fail(`${fn}: images[${i}] has ${t.shape[0]} channels (axis 0), ${this.spec.name} takes ${this.spec.inChannels}`);
      });
      if (images.length === 0) fail(`${fn}: images is empty`);
      const moved = await Promise.all(images.map((t, i) => t.moveTo(this.device, fn, `images[${i}]`)));
      owned = ragged(moved);
      moved.forEach((m, i) => m !== images[i] && m.dispose());
      x = owned;
    } else {
      x = images;
    }
    try {
      const L = spatialLayout(fn, x, 'images');
      if (L.channels !== this.spec.inChannels) fail(`${fn}: images have ${L.channels} channels, ${this.spec.name} takes ${this.spec.inChannels}`);
      if (L.device !== this.device)
        throw new SppnetError(`${fn}: images are on ${L.device}, the model on ${this.device} (use await t.to('${this.device}'))`, 'SPPNET_DEVICE_MISMATCH');
      L.sizes.forEach(([h, w], i) => {
        if (h < this.minSize[0] || w < this.minSize[1])
          fail(`${fn}: image ${i} is ${h}x${w} (HxW), smaller than ${this.spec.name}'s minimum ${this.minSize[0]}x${this.minSize[1]}`);
      });
      return { x, owned, L };
    } catch (e) {
      owned?.dispose();
      throw e;
    }
  }

  private async forward(fn: string, x: RaggedBatch | Tensor, L: SpatialLayout): Promise<Tensor> {
    // Each layer writes into a pooled buffer (a view of it), except the last, whose output is the
    // caller's; the previous layer's buffer goes back to the pool once the next layer has run.
    const layers = this.spec.layers.filter((l) => l.type !== 'dropout'); // dropout: identity at inference
    let cur: Spatial = x;
    let held: Tensor | undefined;
    let kind: SpatialLayout['kind'] = L.kind;
    let channels = L.channels;
    let sizes = L.sizes;
    const rows = L.sizes.length;
    try {
      for (let li = 0; li < layers.length; ++li) {
        let l = layers[li];
        // LRN then max pool: one pass that never writes the LRN map (sp.lrnMaxPool2d; the same
        // values). SPPNET_FUSE=0 runs them as two layers, for comparisons.
        const lrnFirst = l.type === 'lrn' && layers[li + 1]?.type === 'maxpool' && process.env.SPPNET_FUSE !== '0' ? l : null;
        if (lrnFirst) l = layers[++li];
        const last = li === layers.length - 1;
        // The output's layout, to take a buffer for it.
        let outKind: SpatialLayout['kind'] | 'matrix' = kind;
        let outC = channels;
        let outSizes = sizes;
        if (l.type === 'conv') {
          const [kh, kw] = pairOf(l.kernel, 1), [sh, sw] = pairOf(l.stride, 1), [ph, pw] = pairOf(l.padding, 0), [dh, dw] = pairOf(l.dilation, 1);
          outC = l.out;
          outSizes = sizes.map(([h, w]) => [convOutSide(h, kh, sh, ph, dh), convOutSide(w, kw, sw, pw, dw)] as const);
        } else if (l.type === 'maxpool') {
          const [kh, kw] = pairOf(l.kernel, 1), [sh, sw] = pairOf(l.stride ?? l.kernel, 1), [ph, pw] = pairOf(l.padding, 0);
          outSizes = sizes.map(([h, w]) => [poolOutSide(h, kh, sh, ph, l.ceilMode === true), poolOutSide(w, kw, sw, pw, l.ceilMode === true)] as const);
        } else if (l.type === 'spp') {
          outKind = 'matrix';
          outC = sppFeatures(channels, l.levels ?? [6, 3, 2, 1]);
        } else if (l.type === 'fc') {
          outKind = 'matrix';
          outC = l.out;
        }
        const n = outKind === 'matrix' ? rows * outC : outSizes.reduce((a, [h, w]) => a + outC * h * w, 0);
        if (n > MAX_ELEMENTS) {
          const i = this.spec.layers.indexOf(l);
          fail(`${fn}: spec.layers[${i}] (${'name' in l ? l.name : l.type}) would output ${n} elements for these images, more than the 2^31-1 a tensor may hold (run fewer or smaller images at once)`);
        }
        const buf = last ? undefined : this.pool.take(n, fn);
        const out = buf ? ActivationPool.view(buf, outKind, outC, outSizes, rows) : undefined;
        let next: Spatial;
        switch (l.type) {
          case 'conv': {
            const name = l.name;
            next = await conv2dCached(cur, this.w(`${name}.weight`), this.w(`${name}.bias`),
              { stride: l.stride, padding: l.padding, dilation: l.dilation, groups: l.groups, relu: l.relu !== false, out }, (n) => this.filterCache(name, n));
            break;
          }
          case 'lrn':
            next = await localResponseNorm(cur, { size: l.size, alpha: l.alpha, beta: l.beta, k: l.k, out });
            break;
          case 'maxpool':
            next = lrnFirst && lrnFirst.type === 'lrn'
              ? await lrnMaxPool2d(cur, {
                lrn: { size: lrnFirst.size, alpha: lrnFirst.alpha, beta: lrnFirst.beta, k: lrnFirst.k },
                pool: { kernel: l.kernel, stride: l.stride, padding: l.padding, ceilMode: l.ceilMode },
                out,
              })
              : await maxPool2d(cur, { kernel: l.kernel, stride: l.stride, padding: l.padding, ceilMode: l.ceilMode, out });
            break;
          case 'relu':
            next = await relu(cur, { out });
            break;
          case 'spp':
            next = await spp(cur, { levels: l.levels, pool: l.pool, bins: l.bins, out: out as Tensor | undefined });
            break;
          case 'fc':
            next = await linear(cur as Tensor, this.w(`${l.name}.weight`), this.w(`${l.name}.bias`), { relu: l.relu === true, out: out as Tensor | undefined });
            break;
          default:
            throw new SppnetError(`${fn}: unexpected layer type`, 'SPPNET_INTERNAL');
        }
        if (held) this.pool.give(held);
        held = buf;
        cur = next;
        if (outKind !== 'matrix') kind = outKind;
        channels = outC;
        sizes = outSizes;
      }
    } catch (e) {
      if (held) this.pool.give(held);
      throw e;
    }
    if (held) this.pool.give(held); // only when the last layer wrote into a pooled buffer (never)
    return cur as Tensor;
  }

  /** @internal The weight tensors by state_dict name (the model's own: do not dispose). The caller may write them: the cached filter transforms are dropped. */
  parameters(): ReadonlyMap<string, Tensor> {
    this.alive('Model.parameters');
    this.filterCaches.clear();
    return this.weights;
  }

  /** Replaces the weights with a state_dict (every tensor named and shaped as the model's; one error lists every problem). */
  async loadStateDict(weights: Map<string, { shape: number[]; data: Float32Array }>, sourceName?: string): Promise<void> {
    const fn = 'Model.loadStateDict';
    this.alive(fn);
    if (!(weights instanceof Map)) fail(`${fn}: weights must be a Map of state_dict tensors, got ${describe(weights)}`);
    const host = new Map(Array.from(weights, ([k, v]) => [k, { dtype: 'float32' as const, shape: v.shape, data: v.data }]));
    checkStateDict(new Map(this.params.map((p) => [p.name, { shape: p.shape }])), host, `${fn}: the weights${sourceName ? ` in ${sourceName}` : ''} do not fit ${this.spec.name}`);
    const fresh = new Map<string, Tensor>();
    try {
      for (const p of this.params) fresh.set(p.name, tensor(Float32Array.from(weights.get(p.name)!.data), p.shape, { device: this.device }));
    } catch (e) {
      for (const t of fresh.values()) t.dispose();
      throw e;
    }
    for (const t of this.weights.values()) t.dispose();
    this.weights = fresh;
    this.filterCaches.clear();
  }

  /** The optimizer trainStep() uses (SGD, momentum 0.9, weight decay 5e-4, lr 0.01 until set). */
  get optimizer(): Optimizer {
    this.alive('Model.optimizer');
    if (!this.opt) this.opt = new Optimizer(undefined);
    return this.opt;
  }

  /** Replaces the optimizer (its state starts afresh). */
  setOptimizer(options: OptimizerOptions = {}): Optimizer {
    this.alive('Model.setOptimizer');
    const o = new Optimizer(options, 'Model.setOptimizer');
    this.opt?.dispose();
    this.opt = o;
    return o;
  }

  /**
   * One training step on a batch (any sizes >= minSize, as run() takes): forward in training mode
   * (dropout on), softmax cross-entropy against `labels`, backward, and an optimizer update of
   * every weight. A loss that is NaN or Inf throws before the weights change.
   */
  trainStep(images: RaggedBatch | Tensor | Tensor[], labels: ArrayLike<number>, opts: { lr?: number; seed?: number } = {}): Promise<StepResult> {
    return this.call('Model.trainStep', () => this.step('Model.trainStep', images, labels, opts));
  }

  private async step(fn: string, images: RaggedBatch | Tensor | Tensor[], labels: ArrayLike<number>, opts: { lr?: number; seed?: number }): Promise<StepResult> {
    if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
    const opt = this.optimizer;
    const lr = opts.lr ?? opt.options.lr;
    if (typeof lr !== 'number' || !(lr > 0) || !Number.isFinite(lr)) fail(`${fn}: options.lr must be a positive number, got ${describe(opts.lr)}`);
    const seed = opts.seed ?? opt.steps;
    if (!Number.isInteger(seed)) fail(`${fn}: options.seed must be an integer, got ${describe(opts.seed)}`);
    const { x, owned, L } = await this.input(fn, images);
    try {
      const y = checkLabels(fn, labels, L.sizes.length, this.classes);
      const r = await lossAndGradients(this, (n) => this.w(n), x, y, seed >>> 0);
      try {
        if (!Number.isFinite(r.loss))
          throw new SppnetError(`${fn}: the loss is ${r.loss} at optimizer step ${opt.steps + 1}; the weights were left as they were (try a lower learning rate)`, 'SPPNET_NONFINITE');
        // Dropped before the update and again after it: a run that overlaps the update may have
        // filled a fresh cache from weights half way through it.
        this.filterCaches.clear();
        try {
          await opt.apply(this.weights, r.grads, lr);
        } finally {
          this.filterCaches.clear();
        }
      } finally {
        for (const g of r.grads.values()) g.dispose();
      }
      return { loss: r.loss, correct: r.correct, count: L.sizes.length };
    } finally {
      owned?.dispose();
    }
  }

  /** Top-k classes per image, with scores (softmax) and labels when given. */
  async predict(images: RaggedBatch | Tensor | Tensor[], opts: { topk?: number; labels?: string[] } = {}): Promise<Prediction[][]> {
    const k = opts.topk ?? 5;
    if (!isPositiveInt(k)) fail(`Model.predict: options.topk must be a positive integer, got ${describe(opts.topk)}`);
    if (opts.labels !== undefined && (!Array.isArray(opts.labels) || opts.labels.length !== this.classes))
      fail(`Model.predict: options.labels must list ${this.classes} labels, got ${Array.isArray(opts.labels) ? opts.labels.length : describe(opts.labels)}`);
    const logits = await this.runAs('Model.predict', images);
    const probs = await softmax(logits);
    logits.dispose();
    const p = await probs.data();
    probs.dispose();
    const n = p.length / this.classes;
    return Array.from({ length: n }, (_, i) => topK(p, k, opts.labels, i * this.classes, this.classes));
  }

  /** Writes the weights as safetensors (PyTorch state_dict names; atomic: temp file, then rename). */
  async save(path: string, metadata: Record<string, string> = {}): Promise<void> {
    this.alive('Model.save');
    const sd = await this.stateDict();
    await writeSafetensors(path, sd, { arch: this.spec.name, classes: String(this.classes), spec: JSON.stringify(this.spec), ...metadata });
  }

  /**
   * Frees the weights, the activation buffers and the optimizer state. Calls made afterwards throw
   * SPPNET_DISPOSED; calls already in flight finish (with valid results) and the memory is freed
   * when the last of them ends.
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.inflight === 0) this.free();
  }

  private free(): void {
    for (const t of this.weights.values()) t.dispose();
    this.weights.clear();
    this.filterCaches.clear();
    this.pool.dispose();
    this.opt?.dispose();
    this.opt = undefined;
  }
}

export interface LoadModelOptions extends ActivationOptions {
  /** A built-in network: 'zf5', 'convnet5', 'overfeat5', 'overfeat7'. */
  arch?: string;
  /** Or a network of your own. */
  spec?: ModelSpec;
  /** Classes of the last layer of a built-in network (default 1000). */
  classes?: number;
  /** SPP levels of a built-in network (default [6, 3, 2, 1]). */
  levels?: number[];
  /** Weights keyed by state_dict name (e.g. from readSafetensors); He (Kaiming) initialisation when absent. */
  weights?: Map<string, { shape: number[]; data: Float32Array }>;
  /** @internal Where the weights came from, for messages. */
  weightsName?: string;
  /** Seed of the random initialisation (default 0). */
  seed?: number;
  device?: Device;
}

/** Builds a model (weights given or He-initialised) on a device. */
export async function buildModel(opts: LoadModelOptions, fn = 'sp.loadModel'): Promise<Model> {
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  if ((opts.arch === undefined) === (opts.spec === undefined)) fail(`${fn}: give exactly one of options.arch and options.spec`);
  const classes = opts.classes ?? 1000;
  if (!isPositiveInt(classes)) fail(`${fn}: options.classes must be a positive integer, got ${describe(opts.classes)}`);
  const spec = opts.spec ?? archSpec(opts.arch as string, classes, opts.levels);
  const checked = checkSpec(spec, fn);
  const activation = activationSettings(fn, opts);
  const device = opts.device ?? backend().device;
  const seed = opts.seed ?? 0;
  const weights = new Map<string, Tensor>();
  try {
    if (opts.weights) {
      const given = opts.weights instanceof Map ? opts.weights : undefined;
      if (!given) fail(`${fn}: options.weights must be a Map of state_dict tensors, got ${describe(opts.weights)}`);
      const host = new Map(Array.from(given, ([k, v]) => [k, { dtype: 'float32' as const, shape: v.shape, data: v.data }]));
      checkStateDict(new Map(checked.params.map((p) => [p.name, { shape: p.shape }])), host, `${fn}: the weights${opts.weightsName ? ` in ${opts.weightsName}` : ''} do not fit ${spec.name}`);
      // Copied: the model owns its weights (its caches assume nothing else writes them).
      for (const p of checked.params) weights.set(p.name, tensor(Float32Array.from(opts.weights.get(p.name)!.data), p.shape, { device }));
    } else {
      const uniform = prng(seed);
      for (const p of checked.params) {
        const n = p.shape.reduce((a, b) => a * b, 1);
        const data = new Float32Array(n);
        if (p.name.endsWith('.weight')) {
          // He et al. 2015 (fan-in, for ReLU), uniform form: variance 2 / fan_in.
          const bound = Math.sqrt(6 / p.fanIn);
          for (let i = 0; i < n; i++) data[i] = (2 * uniform() - 1) * bound;
        }
        weights.set(p.name, tensor(data, p.shape, { device }));
      }
    }
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  }
  return new Model(checked, weights, device, activation);
}

export interface LoadModelFileOptions extends Omit<LoadModelOptions, 'weights'> {
  /** A safetensors file (path or bytes), or weights already in memory. */
  weights?: string | Uint8Array | LoadModelOptions['weights'];
}

/**
 * Builds a model from a built-in arch or a spec, with weights from a safetensors file (names and
 * layouts of the PyTorch state_dict) or He-initialised. A file saved by Model.save() carries its
 * spec, so { weights } alone is enough to load it.
 */
export async function loadModel(opts: LoadModelFileOptions): Promise<Model> {
  const fn = 'sp.loadModel';
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const w = opts.weights;
  if (typeof w === 'string' || w instanceof Uint8Array) {
    if (opts.spec !== undefined) checkSpec(opts.spec, fn); // before reading the file
    const file = await readSafetensors(w);
    let spec = opts.spec;
    if (!spec && opts.arch === undefined && file.metadata.spec) {
      try {
        spec = JSON.parse(file.metadata.spec) as ModelSpec;
      } catch {
        fail(`${fn}: the spec stored in ${typeof w === 'string' ? w : 'the weights'} is not valid JSON`);
      }
    }
    const classes = opts.classes ?? (file.metadata.classes ? Number(file.metadata.classes) : undefined);
    return buildModel({ ...opts, spec, classes, weights: file.tensors, weightsName: typeof w === 'string' ? w : undefined }, fn);
  }
  return buildModel(opts as LoadModelOptions, fn);
}
