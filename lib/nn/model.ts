// The model runner: one network spec (lib/nn/spec.ts) with its weights on a device. run() and
// predict() take ragged batches (every image keeps its size) through the layer table's inference
// forwards, each layer writing into pooled activation memory; trainStep() runs the table's
// training forwards and backwards and an optimizer update.
import { Device } from '../core/backend';
import { checkLabels } from '../core/checks';
import { CallSite, describe, fail, isPositiveInt, MAX_ELEMENTS, SppnetError } from '../core/errors';
import { RaggedBatch } from '../core/ragged';
import { ChannelSlice, mapElements, Spatial } from '../core/spatial';
import { Tensor } from '../core/tensor';
import { TopEntry, topK } from '../core/topk';
import { checkStateDict, writeSafetensors } from '../io/safetensors';
import { softmax } from '../ops/elementwise';
import { lossAndGradients } from './backprop';
import { GradBuffers } from './grads';
import { kindOf, Layout, layoutAfter, LayerContext, LayerSpec } from './layers';
import { ActivationPool, RunBuffers } from './memory';
import { PlanCache } from './plans';
import { Optimizer, OptimizerOptions, StepResult } from './optim';
import { checkRows, headEnd, modelInput, stepOptions } from './inputs';
import { CheckedSpec, ModelSpec, ParamInfo, usedWeights } from './spec';
import { LinearWeights, WeightSet } from './weights';

/** One of predict()'s top classes: index, score, and label where the model has labels. */
export type Prediction = TopEntry;

export class Model {
  readonly spec: ModelSpec;
  readonly device: Device;
  readonly params: ReadonlyArray<ParamInfo>;
  readonly classes: number;
  /** Smallest image [H, W] the network accepts. */
  readonly minSize: readonly [number, number];
  /** Features per row out of the spp layer (what head() takes); the spp layer's index in spec.layers. */
  readonly pooledFeatures: number;
  private readonly sppIndex: number;
  private weights: WeightSet;
  private pool: ActivationPool;
  private opt: Optimizer | undefined;
  private disposed = false;
  /** Calls in flight (run, predict, trainStep, stateDict): dispose() frees the memory after the last. */
  private inflight = 0;
  /** Per conv layer, the CPU Winograd path's transformed filters (conv2dCached), kept between runs until the weights change. */
  private filterCaches = new Map<string, Float32Array>();
  private grads: GradBuffers; // trainStep's gradient buffers, kept between steps (grads.ts)
  /** Tensors derived from the weights (folded batch norms), by key; see derivedWeights(). */
  private derived = new Map<string, Promise<Tensor[]>>();
  /** Derived tensors dropped while calls were in flight: freed when the last ends. */
  private retired: Array<Promise<Tensor[]>> = [];
  private plans: PlanCache; // compiled runs of the input signatures seen again (lib/nn/plans.ts)

  /** @internal Use sp.loadModel(). */
  constructor(checked: CheckedSpec, weights: WeightSet, device: Device, activation: { budget: number; idleMs: number }) {
    this.spec = checked.spec;
    this.params = checked.params;
    this.classes = checked.classes;
    this.device = device;
    this.grads = new GradBuffers(device);
    this.weights = weights;
    this.pool = new ActivationPool(device, activation.budget, activation.idleMs);
    this.plans = new PlanCache(this.pool);
    this.minSize = Object.freeze(checked.minSize);
    this.pooledFeatures = checked.features;
    this.sppIndex = checked.sppIndex;
  }

  /** The parameters as host arrays keyed by state_dict name (a copy). */
  stateDict(): Promise<Map<string, { shape: number[]; data: Float32Array }>> { return this.call('Model.stateDict', () => this.weights.stateDict(this.params)); } // prettier-ignore

  /** @internal Each timed plan's step times (SPPNET_PLAN_TIMES=1; plans.ts). */ planTimes(): ReturnType<PlanCache['times']> { return this.plans.times(); } // prettier-ignore
  /** Bytes of activation buffers the model holds now (in use by runs in flight, and kept for the next). */
  get activationBytes(): number { return this.pool.bytes; } // prettier-ignore

  /** The activation budget in bytes and the idle time in ms this model was built with. */
  get activationBudget(): { bytes: number; idleMs: number } { return { bytes: this.pool.budget, idleMs: this.pool.idleMs }; } // prettier-ignore

  /** Frees the activation buffers and trainStep's gradient buffers kept now (those a call in flight uses, when it ends); later calls allocate afresh. */
  releaseBuffers(): void {
    this.pool.release();
    this.grads.release(this.inflight > 0);
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
      if (this.inflight === 0) {
        this.freeRetired();
        this.grads.settle();
        if (this.disposed) this.free();
      }
    }
  }

  /** How the fc layers' weight matrices are kept: 'fp32', or 'bf16' (loadModel's linearWeights: inference only). */
  get linearWeights(): LinearWeights { return this.weights.linear; } // prettier-ignore

  /** Bytes the weights take on the model's device. */
  get weightBytes(): number { return this.weights.bytes; } // prettier-ignore

  /**
   * Logits [N, classes] for N images of any sizes >= minSize: a RaggedBatch of [C, H, W] maps, an
   * array of [C, H, W] tensors, or a dense [N, C, H, W] tensor. Inference mode (dropout off).
   */
  run(images: RaggedBatch | Tensor | Tensor[]): Promise<Tensor> {
    return this.runAs('Model.run', images) as Promise<Tensor>;
  }

  /**
   * The conv trunk alone (the layers before the spp layer) on images as run() takes them: their
   * maps, the caller's (a RaggedBatch, or a [N, C, H, W] tensor for one). Detection runs this once
   * per image and scale, then pools each window from the maps (sp.spp with windows) into head().
   */
  features(images: RaggedBatch | Tensor | Tensor[]): Promise<RaggedBatch | Tensor> {
    if (this.sppIndex === 0) return Promise.reject(new SppnetError(`Model.features: ${this.spec.name} has no layers before its spp layer`, 'SPPNET_INVALID_ARGUMENT'));
    return this.runAs('Model.features', images, this.spec.layers.slice(0, this.sppIndex)) as Promise<RaggedBatch | Tensor>;
  }

  /** The layers after the spp layer (dropout off) on pooled rows [N, pooledFeatures]: logits, or with `until` that named layer's output (fc7 for SVMs). */
  head(rows: Tensor, opts: { until?: string } = {}): Promise<Tensor> {
    const fn = 'Model.head';
    return this.call(fn, async () => {
      const n = checkRows(fn, rows, this);
      const end = headEnd(fn, this.spec, this.sppIndex, opts);
      const layout: Layout = { kind: 'matrix', channels: this.pooledFeatures, sizes: new Array(n).fill([1, 1]) };
      return (await this.inRun(fn, async (run) => (await this.runLayers(fn, this.spec.layers.slice(this.sppIndex + 1, end), rows, layout, true, run)).out)) as Tensor;
    });
  }

  private runAs(fn: string, images: RaggedBatch | Tensor | Tensor[], layers = this.spec.layers): Promise<Spatial> {
    return this.call(fn, () =>
      this.inRun(fn, async (run) => {
        const { x, owned, L } = await modelInput(fn, images, this);
        if (owned) run.defer(() => owned.dispose());
        const layout: Layout = { kind: L.kind, channels: L.channels, sizes: L.sizes };
        const planned = await this.plans.run(fn, layers === this.spec.layers ? 'run' : 'features', L, run, (input) => this.runLayers(fn, layers, input, layout, false, run));
        return planned ?? (await this.runLayers(fn, layers, x, layout, true, run)).out;
      }),
    );
  }

  /**
   * body(run) between pool.begin() (from the call on, synchronously: the pool is not idle) and
   * end(), its ops recorded into run.sequence and run as one native call afterwards; the result
   * is disposed if that fails.
   */
  private async inRun(fn: string, body: (run: RunBuffers) => Promise<Spatial>): Promise<Spatial> {
    this.pool.begin();
    const run = new RunBuffers(this.pool);
    let ok = false;
    try {
      const out = await body(run);
      await run.finish().catch((e) => {
        out.dispose();
        throw new CallSite().wrap(e, fn);
      });
      ok = true;
      return out;
    } finally {
      run.release(ok);
      this.pool.end();
    }
  }

  /**
   * Runs a list of layers (the spec's, or a branch's) at inference. Each layer writes into a pooled
   * buffer (a view of it); the previous layer's buffer goes back to the pool once the next layer
   * has run. The last layer's output is the caller's (`last`: a new tensor), or a branch's: `into`
   * where its kind writesSlices (inPlace), else a pooled buffer given back by done(). Layers with
   * no inference (dropout) are the identity.
   */
  private async runLayers(fn: string, all: LayerSpec[], x: Spatial, layout: Layout, last: boolean, run: RunBuffers, into?: ChannelSlice): Promise<{ out: Spatial; done(): void; inPlace: boolean }> {
    const layers = all.filter((l) => kindOf(l).infer);
    const fuse = process.env.SPPNET_FUSE !== '0'; // SPPNET_FUSE=0: fused pairs run as two layers, for comparisons
    const rows = layout.sizes.length;
    const ctx: LayerContext = {
      weight: (n: string) => this.weights.tensor(n),
      matrix: (n: string) => this.weights.any(n),
      cache: (layer: string, n: number) => {
        const c = this.filterCaches.get(layer);
        return c && c.length === n ? c : (this.filterCaches.set(layer, new Float32Array(n)), this.filterCaches.get(layer)!);
      },
      derived: (key, make) => this.derivedWeights(key, make),
      sequence: run.sequence,
    };
    let cur: Spatial = x;
    let held: Tensor | undefined;
    let taken: Tensor | undefined; // the buffer of the layer running now
    try {
      for (let li = 0; li < layers.length; ++li) {
        const first = layers[li];
        const f = kindOf(first).fuse;
        // A pair the table runs as one op (LRN then max pool, conv then batch norm).
        const next = layers[li + 1];
        const pair = fuse && f && next?.type === f.next && (!f.when || f.when(first, next)) ? first : null;
        const before = layout; // the layout of cur: a branch's input
        if (pair) layout = layoutAfter(first, layout);
        const l = pair ? layers[++li] : first;
        layout = layoutAfter(l, layout);
        const n = layout.kind === 'matrix' ? rows * layout.channels : mapElements(layout.channels, layout.sizes);
        if (n > MAX_ELEMENTS) {
          const name = 'name' in l ? l.name : l.type, i = this.spec.layers.indexOf(l);
          fail(`${fn}: ${i >= 0 ? `spec.layers[${i}] (${name})` : `the ${name} layer of a branch`} would output ${n} elements for these images, more than the 2^31-1 a tensor may hold (run fewer or smaller images at once)`);
        }
        const slice = li === layers.length - 1 && into && kindOf(pair ?? l).writesSlices ? into : undefined;
        const buf = (taken = (li === layers.length - 1 && last) || slice ? undefined : run.take(n, fn));
        const out = buf ? ActivationPool.view(buf, layout.kind, layout.channels, layout.sizes, rows) : undefined;
        const c: LayerContext = { ...ctx, out, slice, branch: (b, bx, bi) => this.runLayers(fn, b, bx, before, false, run, bi) };
        const y: Spatial = pair ? await f!.infer(pair, l, cur, c) : await kindOf(l).infer!(l, cur, c);
        if (held) run.give(held);
        (held = buf), (taken = undefined), (cur = y);
      }
    } catch (e) {
      for (const t of [taken, held]) if (t) run.give(t);
      throw e;
    }
    const keep = held;
    return { out: cur, done: () => keep && run.give(keep), inPlace: (cur as unknown) === into }; // conv2d returns the slice it wrote
  }

  /**
   * Tensors derived from the weights (a batch norm folded into its conv), made once per key and
   * kept until the weights change; those a run in flight may use are freed when the last call ends.
   */
  private derivedWeights(key: string, make: () => Promise<Tensor[]>): Promise<Tensor[]> {
    let p = this.derived.get(key);
    if (!p) {
      p = make();
      this.derived.set(key, p);
      p.catch(() => this.derived.get(key) === p && this.derived.delete(key));
    }
    return p;
  }

  /** Drops what is derived from the weights (they are about to change, or have). */
  private weightsChanged(): void {
    this.plans.clear();
    this.filterCaches.clear();
    for (const p of this.derived.values()) this.retired.push(p);
    this.derived.clear();
  }

  /** @internal The weight tensors by state_dict name (the model's own: do not dispose). The caller may write them: the cached filter transforms are dropped. */
  parameters(): ReadonlyMap<string, Tensor> {
    this.alive('Model.parameters');
    this.weightsChanged();
    return this.weights.trainable('Model.parameters');
  }

  /** Replaces the weights with a state_dict (every tensor named and shaped as the model's; one error lists every problem). */
  async loadStateDict(weights: Map<string, { shape: number[]; data: Float32Array }>, sourceName?: string): Promise<void> {
    const fn = 'Model.loadStateDict';
    this.alive(fn);
    if (!(weights instanceof Map)) fail(`${fn}: weights must be a Map of state_dict tensors, got ${describe(weights)}`);
    const host = new Map(Array.from(usedWeights(this.spec, weights), ([k, v]) => [k, { dtype: 'float32' as const, shape: v.shape, data: v.data }]));
    checkStateDict(new Map(this.params.map((p) => [p.name, { shape: p.shape }])), host, `${fn}: the weights${sourceName ? ` in ${sourceName}` : ''} do not fit ${this.spec.name}`);
    const fresh = WeightSet.fromHost(this.spec, this.params, (name) => weights.get(name)!.data, this.device, this.weights.linear);
    this.weights.dispose();
    this.weights = fresh;
    this.weightsChanged();
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
    const { lr, seed } = stepOptions(fn, opts, this.optimizer);
    const { x, owned, L } = await modelInput(fn, images, this);
    try {
      return await this.update(fn, this.spec, x, L.sizes.length, labels, lr, seed, 'images');
    } finally {
      owned?.dispose();
    }
  }

  /**
   * One training step of the head alone (the layers after the spp layer) on pooled rows
   * [N, pooledFeatures], as trainStep() does for the whole network: only the head's weights change.
   * Detection fine-tunes fc layers this way on windows pooled from fixed conv features.
   */
  trainHeadStep(rows: Tensor, labels: ArrayLike<number>, opts: { lr?: number; seed?: number } = {}): Promise<StepResult> {
    const fn = 'Model.trainHeadStep';
    return this.call(fn, async () => {
      const { lr, seed } = stepOptions(fn, opts, this.optimizer);
      const n = checkRows(fn, rows, this);
      return this.update(fn, { ...this.spec, layers: this.spec.layers.slice(this.sppIndex + 1) }, rows, n, labels, lr, seed, 'rows');
    });
  }

  private async update(fn: string, spec: ModelSpec, x: Spatial, n: number, labels: ArrayLike<number>, lr: number, seed: number, what: 'images' | 'rows'): Promise<StepResult> {
    const params = this.weights.trainable(fn);
    const opt = this.optimizer;
    const y = checkLabels(fn, labels, n, this.classes, what);
    const kept = this.grads.take(); // undefined while another step holds them: this one takes fresh tensors
    try {
      const r = await lossAndGradients(spec, (name) => this.weights.tensor(name), x, y, seed >>> 0, fn, kept);
      try {
        if (!Number.isFinite(r.loss))
          throw new SppnetError(`${fn}: the loss is ${r.loss} at optimizer step ${opt.steps + 1}; the weights were left as they were (try a lower learning rate)`, 'SPPNET_NONFINITE');
        // Dropped before the update and again after it: a run that overlaps the update may have
        // filled a fresh cache from weights half way through it.
        this.weightsChanged();
        try {
          await opt.apply(params, r.grads, lr, fn);
        } finally {
          this.weightsChanged();
        }
      } finally {
        for (const g of r.grads.values()) if (!this.grads.owns(g)) g.dispose();
      }
      return { loss: r.loss, correct: r.correct, count: n };
    } finally {
      if (kept) this.grads.give();
    }
  }

  /** Top-k classes per image, with scores (softmax) and labels when given. */
  async predict(images: RaggedBatch | Tensor | Tensor[], opts: { topk?: number; labels?: string[] } = {}): Promise<Prediction[][]> {
    const k = opts.topk ?? 5;
    if (!isPositiveInt(k)) fail(`Model.predict: options.topk must be a positive integer, got ${describe(opts.topk)}`);
    if (opts.labels !== undefined && (!Array.isArray(opts.labels) || opts.labels.length !== this.classes))
      fail(`Model.predict: options.labels must list ${this.classes} labels, got ${Array.isArray(opts.labels) ? opts.labels.length : describe(opts.labels)}`);
    const logits = (await this.runAs('Model.predict', images)) as Tensor;
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

  private freeRetired(): void {
    const r = this.retired;
    this.retired = [];
    for (const p of r) p.then((ts) => ts.forEach((t) => t.dispose()), () => undefined);
  }

  private free(): void {
    this.weights.dispose();
    this.weightsChanged();
    this.freeRetired();
    this.pool.dispose();
    this.opt?.dispose();
    this.opt = undefined;
    this.grads.release();
  }
}
