// torchvision's ImageNet networks of the SPP-net paper's comparison table as specs, with
// torchvision's exact structure and state_dict names (torchvision 0.14): AlexNet, VGG 11/13/16/19
// with and without batch norm, and GoogLeNet (Inception v1). Each ends in an adaptive average
// pool, a one-level pyramid; `pool: 'spp'` (or `levels`) puts SPP-net's max-pooled pyramid there
// instead and builds the first fc layer for its width.
import { fail } from '../core/errors';
import { DEFAULT_LEVELS } from '../ops/spp';
import { LayerSpec, LayerSpecs } from './layers';
import { ModelSpec } from './spec';

export interface TorchvisionOptions {
  classes: number;
  /** 'adaptive' (torchvision's own average pool, the default) or 'spp' (SPP-net's max pyramid). */
  pool?: 'adaptive' | 'spp';
  /** The pyramid's levels (implies pool 'spp'; default [6, 3, 2, 1]). */
  levels?: number[];
  /** GoogLeNet: rescale inputs normalised with ImageNet's mean and std to [-1, 1] per channel first (torchvision's transform_input). */
  transformInput?: boolean;
}

const VGG_CFGS: Record<string, Array<number | 'M'>> = {
  vgg11: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  vgg13: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  vgg16: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  vgg19: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
};

/** The built-in torchvision archs. */
export const TORCHVISION_ARCHS = Object.freeze(['alexnet', 'vgg11', 'vgg11_bn', 'vgg13', 'vgg13_bn', 'vgg16', 'vgg16_bn', 'vgg19', 'vgg19_bn', 'googlenet'] as const);

type Conv = LayerSpecs['conv'];
const conv = (name: string, out: number, kernel: number, extra: Partial<Conv> = {}): LayerSpec => ({ type: 'conv', name, out, kernel, relu: true, ...extra });
const maxpool = (kernel: number, stride: number, extra: Partial<LayerSpecs['maxpool']> = {}): LayerSpec => ({ type: 'maxpool', kernel, stride, ...extra });

/** torchvision's BasicConv2d: conv without bias, batch norm (eps 1e-3), ReLU. */
const basic = (name: string, out: number, kernel: number, extra: Partial<Conv> = {}): LayerSpec[] => [
  conv(`${name}.conv`, out, kernel, { relu: false, bias: false, ...extra }),
  { type: 'batchnorm', name: `${name}.bn`, eps: 1e-3, relu: true },
];

/** GoogLeNet's Inception block (with torchvision's 3x3 in the "5x5" branch). */
function inception(name: string, c1: number, c3r: number, c3: number, c5r: number, c5: number, pool: number): LayerSpec {
  return { type: 'concat', branches: [
    basic(`${name}.branch1`, c1, 1),
    [...basic(`${name}.branch2.0`, c3r, 1), ...basic(`${name}.branch2.1`, c3, 3, { padding: 1 })],
    [...basic(`${name}.branch3.0`, c5r, 1), ...basic(`${name}.branch3.1`, c5, 3, { padding: 1 })],
    [maxpool(3, 1, { padding: 1, ceilMode: true }), ...basic(`${name}.branch4.1`, pool, 1)],
  ] };
}

/** The pooling before the classifier: torchvision's adaptive average pool to n x n, or the pyramid. */
function pyramid(n: number, o: TorchvisionOptions): LayerSpec {
  if (o.pool === 'spp' || o.levels !== undefined) return { type: 'spp', levels: o.levels ?? [...DEFAULT_LEVELS], pool: 'max' };
  return { type: 'spp', levels: [n], pool: 'avg', bins: 'adaptive' };
}

/** A torchvision arch's spec (names and order of its state_dict). */
export function torchvisionSpec(arch: string, o: TorchvisionOptions): ModelSpec {
  if (o.pool !== undefined && o.pool !== 'adaptive' && o.pool !== 'spp') fail(`sp.loadModel: options.pool must be 'adaptive' or 'spp', got ${JSON.stringify(o.pool)}`);
  if (o.transformInput !== undefined && arch !== 'googlenet') fail(`sp.loadModel: options.transformInput applies to googlenet only, not ${arch}`);
  const suffix = o.pool === 'spp' || o.levels ? '-spp' : '';
  if (arch === 'alexnet') {
    return { name: `alexnet${suffix}`, inChannels: 3, layers: [
      conv('features.0', 64, 11, { stride: 4, padding: 2 }), maxpool(3, 2),
      conv('features.3', 192, 5, { padding: 2 }), maxpool(3, 2),
      conv('features.6', 384, 3, { padding: 1 }), conv('features.8', 256, 3, { padding: 1 }), conv('features.10', 256, 3, { padding: 1 }), maxpool(3, 2),
      pyramid(6, o),
      { type: 'dropout', p: 0.5 }, { type: 'fc', name: 'classifier.1', out: 4096, relu: true },
      { type: 'dropout', p: 0.5 }, { type: 'fc', name: 'classifier.4', out: 4096, relu: true },
      { type: 'fc', name: 'classifier.6', out: o.classes },
    ] };
  }
  const vgg = /^(vgg\d+)(_bn)?$/.exec(arch);
  if (vgg && VGG_CFGS[vgg[1]]) {
    const bn = vgg[2] !== undefined;
    const layers: LayerSpec[] = [];
    let i = 0;
    for (const v of VGG_CFGS[vgg[1]]) {
      if (v === 'M') {
        layers.push(maxpool(2, 2));
        i += 1;
      } else if (bn) {
        layers.push(conv(`features.${i}`, v, 3, { padding: 1, relu: false }), { type: 'batchnorm', name: `features.${i + 1}`, relu: true });
        i += 3;
      } else {
        layers.push(conv(`features.${i}`, v, 3, { padding: 1 }));
        i += 2;
      }
    }
    return { name: `${arch}${suffix}`, inChannels: 3, layers: [
      ...layers, pyramid(7, o),
      { type: 'fc', name: 'classifier.0', out: 4096, relu: true }, { type: 'dropout', p: 0.5 },
      { type: 'fc', name: 'classifier.3', out: 4096, relu: true }, { type: 'dropout', p: 0.5 },
      { type: 'fc', name: 'classifier.6', out: o.classes },
    ] };
  }
  if (arch === 'googlenet') {
    // transform_input: x * std / 0.5 + (mean - 0.5) / 0.5 per channel, in torchvision's float arithmetic.
    const affine: LayerSpec[] = o.transformInput
      ? [{ type: 'affine', scale: [0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5], shift: [(0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5] }]
      : [];
    return { name: `googlenet${suffix}`, inChannels: 3, ignore: ['aux1.', 'aux2.'], layers: [
      ...affine,
      ...basic('conv1', 64, 7, { stride: 2, padding: 3 }), maxpool(3, 2, { ceilMode: true }),
      ...basic('conv2', 64, 1), ...basic('conv3', 192, 3, { padding: 1 }), maxpool(3, 2, { ceilMode: true }),
      inception('inception3a', 64, 96, 128, 16, 32, 32), inception('inception3b', 128, 128, 192, 32, 96, 64), maxpool(3, 2, { ceilMode: true }),
      inception('inception4a', 192, 96, 208, 16, 48, 64), inception('inception4b', 160, 112, 224, 24, 64, 64),
      inception('inception4c', 128, 128, 256, 24, 64, 64), inception('inception4d', 112, 144, 288, 32, 64, 64),
      inception('inception4e', 256, 160, 320, 32, 128, 128), maxpool(2, 2, { ceilMode: true }),
      inception('inception5a', 256, 160, 320, 32, 128, 128), inception('inception5b', 384, 192, 384, 48, 128, 128),
      pyramid(1, o),
      { type: 'dropout', p: 0.2 }, { type: 'fc', name: 'fc', out: o.classes },
    ] };
  }
  return fail(`sp.loadModel: unknown arch ${JSON.stringify(arch)}`);
}
