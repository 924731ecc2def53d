// A network is a plain spec: a list of layers (lib/nn/layers.ts's table says what each kind
// takes). checkSpec validates one before anything is allocated and derives its parameters, its
// widths and the smallest image it accepts.
import { describe, fail, isPositiveInt, MAX_ELEMENTS } from '../core/errors';
import { kindOf, LAYERS, LayerSpec, LayerType, MAX_SPEC_SIDE, ParamInit, SpecCheck, sideThrough } from './layers';

export interface ModelSpec {
  name: string;
  /** Image channels (3 for RGB). */
  inChannels: number;
  /** Map layers (conv, batchnorm, lrn, maxpool, affine, concat, relu), one 'spp', then fc / dropout / relu layers. */
  layers: LayerSpec[];
  /**
   * State_dict name prefixes of tensors a checkpoint may hold that the network does not use (e.g.
   * GoogLeNet's auxiliary heads 'aux1.', 'aux2.'): accepted in the weights and left out.
   */
  ignore?: string[];
}

/** The weights without those the spec ignores (ModelSpec.ignore). */
export function usedWeights<V>(spec: ModelSpec, weights: Map<string, V>): Map<string, V> {
  const ignore = spec.ignore ?? [];
  if (ignore.length === 0) return weights;
  return new Map(Array.from(weights).filter(([k]) => !ignore.some((p) => k.startsWith(p))));
}

/** One parameter: its PyTorch state_dict name and shape. */
export interface ParamInfo {
  name: string;
  shape: number[];
  fanIn: number;
  /** How it starts without weights: He's uniform (fan-in), zeros or ones. */
  init: ParamInit;
  /** A buffer (batch norm's running statistics): in the state_dict, never given a gradient. */
  buffer?: boolean;
}

/** @internal A checked spec and what it derives. */
export interface CheckedSpec {
  spec: ModelSpec;
  params: ParamInfo[];
  /** Width after SPP. */
  features: number;
  /** Width of the last layer. */
  classes: number;
  sppIndex: number;
  minSize: [number, number];
}

/** Most floats the weights of one model may hold together: 2^30, 4 GiB. */
export const MAX_MODEL_FLOATS = 2 ** 30;

const TYPES = Object.keys(LAYERS) as LayerType[];

/**
 * Validates a spec and derives its parameters (names as PyTorch's state_dict: NAME.weight,
 * NAME.bias), the width after SPP and the smallest image, before anything is allocated: every
 * field of every layer is checked (integers where sizes are, within what the kernels take), and
 * so are the sizes they multiply into (each weight within a tensor's 2^31-1 elements, all of them
 * within MAX_MODEL_FLOATS). Errors name the layer and the field.
 */
export function checkSpec(spec: ModelSpec, fn = 'sp.loadModel'): CheckedSpec {
  if (typeof spec !== 'object' || spec === null) fail(`${fn}: spec must be an object, got ${describe(spec)}`);
  if (typeof spec.name !== 'string' || spec.name === '') fail(`${fn}: spec.name must be a non-empty string, got ${describe(spec.name)}`);
  if (!isPositiveInt(spec.inChannels) || spec.inChannels > MAX_ELEMENTS)
    fail(`${fn}: spec.inChannels must be a positive integer (at most 2^31-1), got ${describe(spec.inChannels)}`);
  if (spec.ignore !== undefined && (!Array.isArray(spec.ignore) || !spec.ignore.every((p) => typeof p === 'string' && p !== '')))
    fail(`${fn}: spec.ignore must be an array of non-empty state_dict name prefixes, got ${describe(spec.ignore)}`);
  const params: ParamInfo[] = [];
  const owners: string[] = []; // per param: its layer, for messages
  const names = new Set<string>(); // layer names
  const paramNames = new Set<string>();
  let features = 0;
  let sppIndex = -1;
  // Checks a list of layers (the spec's, or a branch's: `nested`, map layers only) on `width` in; the width out.
  const checkLayers = (layers: unknown, path: string, width: number, nested: boolean): number => {
    if (!Array.isArray(layers) || layers.length === 0) fail(`${fn}: ${path} must be a non-empty array`);
    layers.forEach((l: unknown, i: number) => {
      const at = `${path}[${i}]`;
      if (typeof l !== 'object' || l === null) fail(`${fn}: ${at} must be an object, got ${describe(l)}`);
      const o = l as Record<string, unknown>;
      if (!TYPES.includes(o.type as LayerType))
        fail(`${fn}: ${at}.type must be ${TYPES.slice(0, -1).join(', ')} or ${TYPES[TYPES.length - 1]}, got ${describe(o.type)}`);
      const label = typeof o.name === 'string' ? o.name : String(o.type);
      const where = `${at} (${label})`;
      const kind = kindOf(l as LayerSpec);
      const afterSpp = sppIndex >= 0;
      if (nested && kind.stage !== 'trunk' && kind.stage !== 'any') fail(`${fn}: ${where} is ${kind.article} ${o.type} layer inside a branch, which holds map layers only`);
      if (kind.stage === 'trunk' && afterSpp) fail(`${fn}: ${where} is ${kind.article} ${o.type} layer after the spp layer`);
      if (kind.stage === 'head' && !afterSpp) fail(`${fn}: ${where} is ${kind.article} ${o.type} layer before the spp layer`);
      if (kind.stage === 'pyramid' && afterSpp) fail(`${fn}: ${where} is a second ${o.type} layer`);
      const param = (name: string, shape: number[], init: ParamInit, buffer = false, fanIn = 0) => {
        if (paramNames.has(name)) fail(`${fn}: ${where} declares ${name}, which another layer declares too`);
        paramNames.add(name);
        params.push({ name, shape, fanIn, init, ...(buffer ? { buffer } : {}) });
        owners.push(where);
      };
      const c: SpecCheck = {
        fn, where, at, o, width,
        name() {
          const name = o.name;
          if (typeof name !== 'string' || !/^[A-Za-z_][\w.]*$/.test(name)) fail(`${fn}: ${at}.name must be an identifier, got ${describe(name)}`);
          if (names.has(name)) fail(`${fn}: ${where}.name ${JSON.stringify(name)} is used twice`);
          names.add(name);
          return name;
        },
        out() {
          if (!isPositiveInt(o.out) || o.out > MAX_ELEMENTS) fail(`${fn}: ${where}.out must be a positive integer (at most 2^31-1), got ${describe(o.out)}`);
          return o.out as number;
        },
        flag(field) {
          if (o[field] !== undefined && typeof o[field] !== 'boolean') fail(`${fn}: ${where}.${field} must be a boolean, got ${describe(o[field])}`);
        },
        weight(name, shape, fanIn, axes, bias = true) {
          const n = shape.reduce((a, b) => a * b, 1);
          if (n > MAX_ELEMENTS)
            fail(`${fn}: ${where}: its weight ${name}.weight [${shape.join(', ')}] (${axes}) would hold ${n} elements, more than the 2^31-1 a tensor may hold`);
          param(`${name}.weight`, shape, 'he', false, fanIn);
          if (bias) param(`${name}.bias`, [shape[0]], 'zeros', false, fanIn);
        },
        param: (name, shape, init, buffer) => param(name, shape, init, buffer),
        sequence: (branch, bpath) => checkLayers(branch, bpath, c.width, true),
      };
      kind.check(c, l as never);
      width = c.width;
      if (kind.stage === 'pyramid') {
        sppIndex = i;
        features = width;
      }
    });
    return width;
  };
  const classes = checkLayers(spec.layers, 'spec.layers', spec.inChannels, false);
  if (sppIndex < 0) fail(`${fn}: spec.layers has no spp layer`);
  const sizes = params.map((p) => p.shape.reduce((a, b) => a * b, 1));
  const total = sizes.reduce((a, b) => a + b, 0);
  if (total > MAX_MODEL_FLOATS) {
    const k = sizes.indexOf(Math.max(...sizes));
    fail(`${fn}: ${spec.name}'s weights would hold ${total} floats (${(total / 2 ** 28).toFixed(1)} GiB), more than the ${MAX_MODEL_FLOATS} (4 GiB) a model may hold; ` +
      `the largest is ${params[k].name} [${params[k].shape.join(', ')}] of ${owners[k]}`);
  }
  return { spec, params, features, classes, sppIndex, minSize: [smallestSide(fn, spec, 0), smallestSide(fn, spec, 1)] };
}

/**
 * The output side of the conv part for an input side a along one axis, or the index of the first
 * layer whose output would be empty. For a checked spec.
 */
function sideAfter(spec: ModelSpec, a: number, axis: 0 | 1): { side: number; empty?: number } {
  const side = sideThrough(spec.layers, a, axis);
  if (side >= 1) return { side };
  // The first layer that leaves nothing.
  const empty = spec.layers.findIndex((_, i) => sideThrough(spec.layers.slice(0, i + 1), a, axis) < 1);
  return { side: 0, empty };
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
