// Building a model: a built-in arch or a spec, with weights from a state_dict, a safetensors file
// (names and layouts of PyTorch's state_dict) or He's initialisation.
import { backend, Device } from '../core/backend';
import { describe, fail, isPositiveInt } from '../core/errors';
import { prng } from '../core/random';
import { isPthFile, readPth } from '../io/pth';
import { checkStateDict, readSafetensors } from '../io/safetensors';
import { archSpec } from './archs';
import { ActivationOptions, activationSettings } from './memory';
import { Model } from './model';
import { checkSpec, ModelSpec, usedWeights } from './spec';
import { LinearWeights, linearWeightsOption, WeightSet } from './weights';

export interface LoadModelOptions extends ActivationOptions {
  /**
   * A built-in network (sp.ARCHS): the SPP-net paper's 'zf5', 'zf5-released', 'convnet5',
   * 'overfeat5', 'overfeat7', or torchvision's 'alexnet', 'vgg11' ... 'vgg19' (and '_bn'), 'googlenet'.
   */
  arch?: string;
  /** Or a network of your own. */
  spec?: ModelSpec;
  /** Classes of the last layer of a built-in network (default 1000). */
  classes?: number;
  /** SPP levels of a built-in network (default [6, 3, 2, 1]; for a torchvision arch, levels imply pool 'spp'). */
  levels?: number[];
  /**
   * torchvision archs: 'adaptive' (default) keeps torchvision's adaptive average pool before the
   * classifier; 'spp' puts SPP-net's max pyramid (levels, default [6, 3, 2, 1]) there.
   */
  pool?: 'adaptive' | 'spp';
  /** googlenet: torchvision's transform_input (off by default, as torchvision's constructor). */
  transformInput?: boolean;
  /** Weights keyed by state_dict name (e.g. from readSafetensors); He (Kaiming) initialisation when absent. */
  weights?: Map<string, { shape: number[]; data: Float32Array }>;
  /** @internal Where the weights came from, for messages. */
  weightsName?: string;
  /** Seed of the random initialisation (default 0). */
  seed?: number;
  device?: Device;
  /**
   * How to keep the fc layers' weight matrices: 'fp32' (default), or 'bf16': rounded to bfloat16
   * (to nearest even: at most 2^-9 relative error per weight), half their memory and, at batch 1
   * where reading them is the floor, about half their time; products and sums stay FP32. Such a
   * model is for inference: trainStep and trainHeadStep refuse it.
   */
  linearWeights?: LinearWeights;
}

/** Builds a model (weights given or He-initialised) on a device. */
export async function buildModel(opts: LoadModelOptions, fn = 'sp.loadModel'): Promise<Model> {
  if (typeof opts !== 'object' || opts === null) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  if ((opts.arch === undefined) === (opts.spec === undefined)) fail(`${fn}: give exactly one of options.arch and options.spec`);
  const classes = opts.classes ?? 1000;
  if (!isPositiveInt(classes)) fail(`${fn}: options.classes must be a positive integer, got ${describe(opts.classes)}`);
  const spec = opts.spec ?? archSpec(opts.arch as string, classes, opts.levels, { pool: opts.pool, transformInput: opts.transformInput });
  const checked = checkSpec(spec, fn);
  const activation = activationSettings(fn, opts);
  const device = opts.device ?? backend().device;
  const seed = opts.seed ?? 0;
  const linear = linearWeightsOption(fn, opts.linearWeights);
  let data: (name: string) => Float32Array;
  let fresh = false; // data's arrays are this call's own
  if (opts.weights) {
    const given = opts.weights instanceof Map ? opts.weights : undefined;
    if (!given) fail(`${fn}: options.weights must be a Map of state_dict tensors, got ${describe(opts.weights)}`);
    const host = new Map(Array.from(usedWeights(spec, given), ([k, v]) => [k, { dtype: 'float32' as const, shape: v.shape, data: v.data }]));
    checkStateDict(new Map(checked.params.map((p) => [p.name, { shape: p.shape }])), host, `${fn}: the weights${opts.weightsName ? ` in ${opts.weightsName}` : ''} do not fit ${spec.name}`);
    // Copied (fromHost): the model owns its weights (its caches assume nothing else writes them).
    data = (name) => given.get(name)!.data;
  } else {
    // He et al. 2015 (fan-in, for ReLU), uniform form: variance 2 / fan_in; drawn in the params' order.
    const uniform = prng(seed);
    const init = new Map<string, Float32Array>();
    for (const p of checked.params) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const d = new Float32Array(n);
      if (p.init === 'he') {
        const bound = Math.sqrt(6 / p.fanIn);
        for (let i = 0; i < n; i++) d[i] = (2 * uniform() - 1) * bound;
      } else if (p.init === 'ones') d.fill(1);
      init.set(p.name, d);
    }
    data = (name) => init.get(name)!;
    fresh = true;
  }
  return new Model(checked, WeightSet.fromHost(spec, checked.params, data, device, linear, fresh), device, activation);
}

export interface LoadModelFileOptions extends Omit<LoadModelOptions, 'weights'> {
  /**
   * A safetensors file (path or bytes), a PyTorch checkpoint (the path of a .pth / .pt written by
   * torch.save(model.state_dict()), PyTorch 1.6 or newer), or weights already in memory.
   */
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
    const file = typeof w === 'string' && (await isPthFile(w).catch(() => false)) ? await readPth(w, fn) : await readSafetensors(w);
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
