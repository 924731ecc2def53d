// The types of the layer table (lib/nn/layers.ts): each layer kind's spec, what its check sees,
// what its forward and backward get and give, and the entry itself.
import { Pair } from '../core/checks';
import { RaggedBatch } from '../core/ragged';
import { ChannelSlice, Spatial } from '../core/spatial';
import { Tensor } from '../core/tensor';
import { OpSequence } from '../core/sequence';
import { BF16Matrix } from '../ops/bf16';
import { BinRule, PoolKind } from '../ops/spp';

/** The spec of each layer kind (JSON: what Model.save stores and sp.loadModel({ spec }) takes). */
export interface LayerSpecs {
  conv: { type: 'conv'; name: string; out: number; kernel: Pair; stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number; relu?: boolean; bias?: boolean };
  /** PyTorch's BatchNorm2d (eps 1e-5, momentum 0.1 by default), then a ReLU when relu is true. Folded into the conv before it at inference. */
  batchnorm: { type: 'batchnorm'; name: string; eps?: number; momentum?: number; relu?: boolean };
  /** y = x * scale[c] + shift[c] per channel, constants of the spec (torchvision's transform_input). */
  affine: { type: 'affine'; scale: number[]; shift: number[] };
  /** The branches (sequences of map layers) run on the same input, their outputs concatenated along channels (Inception). */
  concat: { type: 'concat'; branches: LayerSpec[][] };
  lrn: { type: 'lrn'; size: number; alpha?: number; beta?: number; k?: number; region?: 'across' | 'within' };
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
  /**
   * The run's op sequence, passed to every op as options.sequence (lib/core/sequence.ts): in
   * inference always; in training to the layers whose kind says `recordsTraining`.
   */
  sequence?: OpSequence;
  /** Inference: a weight as sp.linear takes it (a BF16Matrix where the model keeps fc weights in bfloat16). */
  matrix?(name: string): Tensor | BF16Matrix;
  /** Inference: the buffer to write the output into (a view of a pooled buffer), if any. */
  out?: Spatial;
  /** Inference, for a kind that `writesSlices`: its channels of a concat's output to write into instead (CPU). */
  slice?: ChannelSlice;
  /** Inference: what the CPU kernels pack from the weights, kept between calls (the convs' filters, the fc layers' weights on AMX: conv2dCached, linearCached). */
  cache?(layer: string, floats: number): Float32Array;
  /** Training: where a parameter's gradient goes (a model's buffer of that shape, kept between steps), if anywhere. */
  gradInto?(name: string, shape: readonly number[]): Tensor | undefined;
  /** Training: the layer's dropout seed. */
  seed?: number;
  /** Inference: tensors derived from the weights (folded batch norms), made once per key and kept until the weights change. */
  derived?(key: string, make: () => Promise<Tensor[]>): Promise<Tensor[]>;
  /**
   * Inference: runs a branch (a sequence of map layers) on x; done() gives its output's memory
   * back. With `into`, a branch whose last op writes slices writes its output there (inPlace).
   */
  branch?(layers: LayerSpec[], x: Spatial, into?: ChannelSlice): Promise<{ out: Spatial; done(): void; inPlace: boolean }>;
  /** Training: runs branch k in training mode on x, keeping a tape for backwardBranch. */
  trainBranch?(layers: LayerSpec[], x: Spatial, k: number): Promise<{ out: Spatial; tape: unknown }>;
  /** Training: a branch's backward from the gradient of its output; the gradient of its input when needInputGrad. */
  backwardBranch?(tape: unknown, grad: Spatial, needInputGrad: boolean): Promise<Spatial | undefined>;
}

/** A training forward's result: the output, and what the backward needs besides input and output. */
export interface Trained {
  out: Spatial;
  mask?: Tensor | RaggedBatch;
  /** Anything else the backward needs (batch statistics, the branches' tapes). */
  saved?: unknown;
}

/** A backward's result: the gradient of the input (absent when not asked for) and of each parameter. */
export interface Backward {
  grad?: Spatial;
  params: Array<[string, Tensor]>;
}

export interface LayerKind<L> {
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
  /**
   * Its inference op (and its fused pair's, when it leads one) writes into c.slice, a channel
   * slice of a larger output, where one is given: a concat's branch that ends in it writes its
   * channels of the concat's output in place, with no copy after (Model.run, CPU).
   */
  writesSlices?: true;
  /** Inference of this layer and the next one, of kind `next`, in one op where `when` allows (SPPNET_FUSE=0 turns it off). */
  fuse?: { next: LayerType; when?(l: L, next: LayerSpec): boolean; infer(l: L, next: LayerSpec, x: Spatial, c: LayerContext): Promise<Spatial> };
  /** Training forward (default: infer without an out buffer). */
  train?(l: L, x: Spatial, c: LayerContext): Promise<Trained>;
  /**
   * Its training forward only records ops into c.sequence (nothing read back on the host), so a
   * trainStep's forward records it with its neighbours and runs them in one native call; other
   * kinds run what was recorded before them first. A concat records its own op; a layer inside
   * its branches that does not record runs what was recorded before it first, as anywhere.
   */
  recordsTraining?: true;
  /** Gradients from the output's; needInputGrad: some layer before has parameters. */
  backward(l: L, t: { input: Spatial; output: Spatial; mask?: Tensor | RaggedBatch; saved?: unknown; grad: Spatial; needInputGrad: boolean }, c: LayerContext): Promise<Backward>;
  /** The layer lists inside this layer (a concat's branches), for what walks the whole network. */
  nested?(l: L): LayerSpec[][];
}
