// One training pass of a network: the forward in training mode keeps what each layer's backward
// needs (a tape), softmax cross-entropy gives the loss, and the backward runs every layer's entry
// of the layer table in reverse, down to the first layer with parameters.
import { SppnetError } from '../core/errors';
import { RaggedBatch } from '../core/ragged';
import { Spatial } from '../core/spatial';
import { Tensor } from '../core/tensor';
import { softmaxCrossEntropy } from '../ops/loss';
import { kindOf, LayerSpec, trainForward } from './layers';
import { ModelSpec } from './spec';

interface TapeEntry {
  layer: LayerSpec;
  input: Spatial;
  output: Spatial;
  mask?: Tensor | RaggedBatch;
}

/**
 * @internal One forward + backward pass: the loss, and the gradient of every parameter (summed
 * over the batch, of the mean loss). Layers run in training mode (dropout on, layer i seeded by
 * seed + i * 0x9e3779b1).
 */
export async function lossAndGradients(
  spec: ModelSpec,
  weight: (name: string) => Tensor,
  x: Spatial,
  labels: Int32Array,
  seed: number,
): Promise<{ loss: number; correct: number; grads: Map<string, Tensor> }> {
  const tape: TapeEntry[] = [];
  const owned = new Set<Spatial>(); // everything allocated here, disposed at the end
  const grads = new Map<string, Tensor>();
  const keep = (t: Spatial) => (owned.add(t), t);
  // Frees a tensor made here as soon as nothing later needs it (peak memory ~ the forward's).
  const drop = (t: Spatial | undefined) => {
    if (t && t !== x && owned.delete(t)) t.dispose();
  };
  try {
    let cur: Spatial = x;
    for (let li = 0; li < spec.layers.length; li++) {
      const l = spec.layers[li];
      const r = await trainForward(l, cur, { weight, seed: (seed + li * 0x9e3779b1) >>> 0 });
      if (r.out !== cur) keep(r.out);
      if (r.mask) keep(r.mask);
      tape.push({ layer: l, input: cur, output: r.out, mask: r.mask });
      cur = r.out;
    }
    if (!(cur instanceof Tensor)) throw new SppnetError('Model.trainStep: the network does not end in rows of logits', 'SPPNET_INTERNAL');
    const ce = await softmaxCrossEntropy(cur, labels);
    let g: Spatial = keep(ce.gradLogits);
    // The layers below the first with parameters need no gradient.
    const first = tape.findIndex((t) => kindOf(t.layer).params);
    for (let ti = tape.length - 1; ti >= Math.max(first, 0); ti--) {
      const { layer: l, input, output, mask } = tape[ti];
      const r = await kindOf(l).backward(l, { input, output, mask, grad: g, needInputGrad: ti > first }, { weight });
      for (const [name, t] of r.params) grads.set(name, t);
      const gOut = g;
      if (r.grad && r.grad !== g) g = keep(r.grad);
      // This layer's output, mask and the gradient of its output are done with.
      if (gOut !== g) drop(gOut);
      drop(output);
      drop(mask);
    }
    return { loss: ce.loss, correct: ce.correct, grads };
  } catch (e) {
    for (const t of grads.values()) t.dispose();
    grads.clear();
    throw e;
  } finally {
    for (const t of owned) if (t !== x) t.dispose();
  }
}
