// The built-in networks as specs: the SPP-net paper's ZF-5 (also as its authors released it),
// Convnet*-5, Overfeat-5 and Overfeat-7, and torchvision's (lib/nn/torchvision.ts).
import { fail } from '../core/errors';
import { DEFAULT_LEVELS } from '../ops/spp';
import { LayerSpec } from './layers';
import { ModelSpec } from './spec';
import { TORCHVISION_ARCHS, TorchvisionOptions, torchvisionSpec } from './torchvision';

/** The SPP-net paper's networks. */
export const PAPER_ARCHS = Object.freeze(['zf5', 'zf5-released', 'convnet5', 'overfeat5', 'overfeat7'] as const);
/** Every built-in arch (sp.loadModel's `arch`, sp.models). */
export const ARCHS = Object.freeze([...PAPER_ARCHS, ...TORCHVISION_ARCHS] as const);
export type Arch = (typeof ARCHS)[number];

/**
 * The spec of a built-in arch: `classes` outputs, SPP `levels` (the paper's networks: default
 * [6, 3, 2, 1]; torchvision's: they replace the adaptive pool), and for torchvision's, `pool` and
 * `transformInput` (TorchvisionOptions).
 */
export function archSpec(arch: string, classes = 1000, levels?: number[], opts: Omit<TorchvisionOptions, 'classes' | 'levels'> = {}): ModelSpec {
  if ((TORCHVISION_ARCHS as readonly string[]).includes(arch)) return torchvisionSpec(arch, { ...opts, classes, levels });
  if (opts.pool !== undefined && opts.pool !== 'spp') fail(`sp.loadModel: options.pool must be 'spp' for ${arch} (the paper's networks have no other), got ${JSON.stringify(opts.pool)}`);
  if (opts.transformInput !== undefined) fail(`sp.loadModel: options.transformInput applies to googlenet only, not ${arch}`);
  return paperSpec(arch, classes, levels);
}

/** The SPP-net paper's networks (Table 1 of He et al. 2014), with the paddings the README lists. */
function paperSpec(arch: string, classes: number, levels?: number[]): ModelSpec {
  const conv = (name: string, out: number, kernel: number, stride = 1, padding = 0): LayerSpec => ({ type: 'conv', name, out, kernel, stride, padding, relu: true });
  const lrn: LayerSpec = { type: 'lrn', size: 5, alpha: 1e-4, beta: 0.75, k: 2 };
  const pool = (kernel: number, stride: number, padding = 0): LayerSpec => ({ type: 'maxpool', kernel, stride, padding });
  const head: LayerSpec[] = [
    { type: 'spp', levels: levels ?? [...DEFAULT_LEVELS], pool: 'max' },
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
    case 'zf5-released': {
      // The ZF-5 of the SPP-net authors' release (ShaoqingRen/SPP_net, model-defs/Zeiler_conv5.prototxt,
      // Caffe): conv2 unpadded, pools in Caffe's ceil mode, LRN WITHIN_CHANNEL (3x3 in the plane),
      // alpha 5e-5, beta 0.75, k 1;
      // the pyramid in the prototxt's concat order {1, 2, 3, 6}, which its fc6 columns follow, with
      // the bins of its detection pooling (spm_pool_caffe_mex: floor / ceil, our 'adaptive').
      const norm: LayerSpec = { type: 'lrn', size: 3, alpha: 5e-5, beta: 0.75, k: 1, region: 'within' };
      const ceilPool: LayerSpec = { type: 'maxpool', kernel: 3, stride: 2, padding: 0, ceilMode: true };
      return { name: arch, inChannels: 3, layers: [
        conv('conv1', 96, 7, 2, 1), norm, ceilPool,         // 224 -> 110 -> 55
        conv('conv2', 256, 5, 2, 0), norm, ceilPool,        // 55 -> 26 -> 13
        conv('conv3', 384, 3, 1, 1), conv('conv4', 384, 3, 1, 1), conv('conv5', 256, 3, 1, 1),
        { type: 'spp', levels: levels ?? [1, 2, 3, 6], pool: 'max', bins: 'adaptive' }, ...head.slice(1)] };
    }
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
      return fail(`sp.loadModel: unknown arch ${JSON.stringify(arch)}; known: ${ARCHS.join(', ')}`);
  }
}
