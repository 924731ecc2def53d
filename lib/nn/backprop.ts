// One training pass of a network: the forward in training mode keeps what each layer's backward
// needs (a tape), softmax cross-entropy gives the loss, and the backward runs every layer's entry
// of the layer table in reverse, down to the first layer with parameters. A layer with branches
// (concat) runs each branch as a tape of its own, through the same two functions.
import { CallSite, SppnetError } from '../core/errors';
import { newSequence, OpSequence } from '../core/sequence';
import { RaggedBatch } from '../core/ragged';
import { Spatial } from '../core/spatial';
import { Tensor } from '../core/tensor';
import { softmaxCrossEntropy } from '../ops/loss';
import { hasParams, kindOf, LayerContext, LayerSpec, trainForward } from './layers';
import { ModelSpec } from './spec';

interface TapeEntry {
  layer: LayerSpec;
  input: Spatial;
  output: Spatial;
  mask?: Tensor | RaggedBatch;
  saved?: unknown;
}

/**
 * What one pass shares: the weights, the gradients found so far, every tensor it made (freed at
 * the end), and the forward's op sequence: the ops of consecutive layers whose kind
 * recordsTraining, recorded and run as one native call before a layer that reads results back (or
 * the loss).
 */
interface Pass {
  weight: (name: string) => Tensor;
  grads: Map<string, Tensor>;
  owned: Set<Spatial>;
  /** Absent with SPPNET_SEQUENCE=0: every op called as it comes (the same results, bit for bit). */
  sequence?: OpSequence;
  /** The public call, for errors of a recorded run. */
  fn: string;
  /** Where parameters' gradients go (the caller's buffers, kept: never freed here), if given. */
  kept?: KeptGrads;
}

/** @internal A model's gradient buffers, kept between training steps. */
export interface KeptGrads {
  /** The buffer for this parameter (made on first use). */
  into(name: string, shape: readonly number[]): Tensor;
  /** Whether t is one of them (not to be freed with a step's other tensors). */
  owns(t: Tensor): boolean;
}

/** Runs what the pass's forward has recorded so far. */
function flush(pass: Pass): Promise<void> {
  const seq = pass.sequence;
  return seq && seq.length ? new CallSite().run(pass.fn, () => seq.run()) : Promise.resolve();
}

/** Frees a tensor made in this pass as soon as nothing later needs it (peak memory ~ the forward's). */
function drop(pass: Pass, t: Spatial | undefined, keep: Spatial): void {
  if (t && t !== keep && pass.owned.delete(t)) t.dispose();
}

/** The training forward of a list of layers from x; layer i seeded by seed + i * 0x9e3779b1. */
async function forwardTape(pass: Pass, layers: LayerSpec[], x: Spatial, seed: number): Promise<{ out: Spatial; tape: TapeEntry[] }> {
  const tape: TapeEntry[] = [];
  let cur = x;
  for (let li = 0; li < layers.length; li++) {
    const l = layers[li];
    const layerSeed = (seed + li * 0x9e3779b1) >>> 0;
    const records = kindOf(l).recordsTraining === true && pass.sequence !== undefined;
    if (!records) await flush(pass);
    const ctx: LayerContext = {
      weight: pass.weight,
      seed: layerSeed,
      sequence: records ? pass.sequence : undefined,
      // Branch k of this layer: its own seeds, derived from the layer's.
      trainBranch: async (b, bx, k) => forwardTape(pass, b, bx, (layerSeed + (k + 1) * 0x85ebca77) >>> 0),
      backwardBranch: (t, g, need) => backwardTape(pass, t as TapeEntry[], g, need),
    };
    const r = await trainForward(l, cur, ctx);
    if (r.out !== cur) pass.owned.add(r.out);
    if (r.mask) pass.owned.add(r.mask);
    tape.push({ layer: l, input: cur, output: r.out, mask: r.mask, saved: r.saved });
    cur = r.out;
  }
  return { out: cur, tape };
}

/**
 * The backward of a tape from the gradient of its output `g` (the caller's): the parameters'
 * gradients go into pass.grads; returns the gradient of the tape's input when needInputGrad
 * (the caller's to free, unless it is `g` itself). Frees the tape's outputs as it goes.
 */
async function backwardTape(pass: Pass, tape: TapeEntry[], g: Spatial, needInputGrad: boolean): Promise<Spatial | undefined> {
  const first = tape.findIndex((t) => hasParams(t.layer));
  const stop = needInputGrad ? 0 : first;
  let cur: Spatial | undefined = g;
  const ctx: LayerContext = { weight: pass.weight, gradInto: pass.kept?.into, backwardBranch: (t, gb, need) => backwardTape(pass, t as TapeEntry[], gb, need) };
  for (let ti = tape.length - 1; ti >= stop && ti >= 0 && cur; ti--) {
    const { layer: l, input, output, mask, saved } = tape[ti];
    const r = await kindOf(l).backward(l, { input, output, mask, saved, grad: cur, needInputGrad: needInputGrad || ti > first }, ctx);
    for (const [name, t] of r.params) pass.grads.set(name, t);
    const before: Spatial = cur;
    cur = r.grad;
    if (cur && cur !== before) pass.owned.add(cur);
    // This layer's output, mask and the gradient of its output are done with.
    if (before !== cur && before !== g) drop(pass, before, g);
    drop(pass, output, g);
    drop(pass, mask, g);
  }
  if (!needInputGrad || !cur) return undefined;
  pass.owned.delete(cur); // the caller's now
  return cur;
}

/**
 * @internal One forward + backward pass: the loss, and the gradient of every parameter (summed
 * over the batch, of the mean loss). Layers run in training mode (dropout on, layer i seeded by
 * seed + i * 0x9e3779b1; batch norms use the batch's statistics and update their running ones).
 * With `kept`, the convs' and fc layers' gradients are written into its buffers (the caller's).
 */
export async function lossAndGradients(
  spec: ModelSpec,
  weight: (name: string) => Tensor,
  x: Spatial,
  labels: Int32Array,
  seed: number,
  fn = 'Model.trainStep',
  kept?: KeptGrads,
): Promise<{ loss: number; correct: number; grads: Map<string, Tensor> }> {
  const pass: Pass = { weight, grads: new Map(), owned: new Set(), sequence: newSequence(), fn, kept };
  try {
    const { out, tape } = await forwardTape(pass, spec.layers, x, seed);
    await flush(pass);
    if (!(out instanceof Tensor)) throw new SppnetError('Model.trainStep: the network does not end in rows of logits', 'SPPNET_INTERNAL');
    const ce = await softmaxCrossEntropy(out, labels);
    pass.owned.add(ce.gradLogits);
    const gx = await backwardTape(pass, tape, ce.gradLogits, false);
    gx?.dispose();
    return { loss: ce.loss, correct: ce.correct, grads: pass.grads };
  } catch (e) {
    for (const t of pass.grads.values()) if (!kept?.owns(t)) t.dispose();
    pass.grads.clear();
    throw e;
  } finally {
    for (const t of pass.owned) if (t !== x) t.dispose();
  }
}
