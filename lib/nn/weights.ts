// A model's weights on its device: float32 tensors by state_dict name, and with linearWeights
// 'bf16' the fc layers' weight matrices as bfloat16 instead (lib/ops/bf16.ts: half the memory and,
// where reading them is the floor, half the time; inference only). Built from host arrays, as
// loadModel and loadStateDict have them, so a bf16 matrix never exists as float32 on the device.
import { Device } from '../core/backend';
import { describe, fail } from '../core/errors';
import { tensor, Tensor } from '../core/tensor';
import { bf16FromHost, BF16Matrix } from '../ops/bf16';
import { ModelSpec, ParamInfo } from './spec';

/** How a model keeps its fc layers' weight matrices: 'fp32' (default) or 'bf16' (inference only). */
export type LinearWeights = 'fp32' | 'bf16';

/** options.linearWeights of `fn`, checked; 'fp32' when absent. */
export function linearWeightsOption(fn: string, v: unknown): LinearWeights {
  if (v === undefined) return 'fp32';
  if (v !== 'fp32' && v !== 'bf16') fail(`${fn}: options.linearWeights must be 'fp32' or 'bf16', got ${describe(v)}`);
  return v;
}

export class WeightSet {
  private constructor(
    private readonly tensors: Map<string, Tensor>,
    private readonly halves: Map<string, BF16Matrix>,
    readonly linear: LinearWeights,
  ) {}

  /**
   * The weights of `params` from host arrays (`data(name)`: copied, or with `adopt` taken as they
   * are on the CPU), on `device`; with 'bf16' the weights of the spec's fc layers rounded to
   * bfloat16. Nothing is left allocated on failure.
   */
  static fromHost(spec: ModelSpec, params: ReadonlyArray<ParamInfo>, data: (name: string) => Float32Array, device: Device, linear: LinearWeights, adopt = false): WeightSet {
    const halfNames = new Set(linear === 'bf16' ? spec.layers.flatMap((l) => (l.type === 'fc' ? [`${l.name}.weight`] : [])) : []);
    const set = new WeightSet(new Map(), new Map(), linear);
    try {
      for (const p of params) {
        if (halfNames.has(p.name)) set.halves.set(p.name, bf16FromHost(data(p.name), [p.shape[0], p.shape[1]], device));
        else set.tensors.set(p.name, tensor(adopt ? data(p.name) : Float32Array.from(data(p.name)), p.shape, { device }));
      }
    } catch (e) {
      set.dispose();
      throw e;
    }
    return set;
  }

  /** A weight as the layers' inference forwards take it (a BF16Matrix for a bf16 fc weight). */
  any(name: string): Tensor | BF16Matrix {
    return this.tensors.get(name) ?? this.halves.get(name)!;
  }

  /** A float32 weight (training, and every layer but a bf16 fc). */
  tensor(name: string): Tensor {
    const t = this.tensors.get(name);
    if (!t) fail(`internal: weight ${name} is not a float32 tensor`, 'SPPNET_INTERNAL');
    return t;
  }

  /** The float32 tensors, for an optimizer: refused with `fn` named when some weights are bfloat16. */
  trainable(fn: string): Map<string, Tensor> {
    if (this.halves.size > 0)
      fail(`${fn}: the model keeps its fc weights in bfloat16 (loadModel's linearWeights: 'bf16'), which is for inference only; load it with linearWeights 'fp32' to train`);
    return this.tensors;
  }

  /** The weights as host float32 arrays keyed by state_dict name (bf16 ones widened: exact). */
  async stateDict(params: ReadonlyArray<ParamInfo>): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const p of params) out.set(p.name, { shape: [...p.shape], data: await this.any(p.name).data() });
    return out;
  }

  /** Bytes the weights take on their device. */
  get bytes(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += 4 * t.size;
    for (const m of this.halves.values()) n += m.bytes;
    return n;
  }

  dispose(): void {
    for (const t of this.tensors.values()) t.dispose();
    for (const m of this.halves.values()) m.dispose();
    this.tensors.clear();
    this.halves.clear();
  }
}
