// Batch norm at inference is a per-channel affine map, y = x * s + t with s = gamma / sqrt(var + eps)
// and t = beta - mean * s: folded into the convolution before it (w' = w * s per output channel,
// b' = (b - mean) * s + beta), or run alone as a 1x1 depthwise convolution. The folded weights
// are derived from the model's own, on the host in float64, and rounded once to float32.
import { Device } from '../core/backend';
import { Tensor, tensor } from '../core/tensor';

/** The named parameters of a batch-norm layer (PyTorch's BatchNorm2d state_dict names). */
export const BN_PARAMS = ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'] as const;

/** Per channel: the scale s and shift t of a batch norm at inference. */
export async function bnAffine(weight: (name: string) => Tensor, bn: string, eps: number): Promise<{ scale: Float64Array; shift: Float64Array }> {
  const [g, b, m, v] = await Promise.all(['weight', 'bias', 'running_mean', 'running_var'].map((p) => weight(`${bn}.${p}`).data()));
  const scale = new Float64Array(g.length), shift = new Float64Array(g.length);
  for (let c = 0; c < g.length; c++) {
    // As PyTorch: (x - mean) / sqrt(var + eps) * gamma + beta, eps added in float32.
    scale[c] = g[c] / Math.sqrt(Math.fround(v[c] + eps));
    shift[c] = b[c] - m[c] * scale[c];
  }
  return { scale, shift };
}

/** A conv's weight [out, ...] and bias (absent: zero) with a per-output-channel affine map folded in. */
export async function foldAffine(w: Tensor, bias: Tensor | undefined, a: { scale: Float64Array; shift: Float64Array }, device: Device): Promise<[Tensor, Tensor]> {
  const [wd, bd] = await Promise.all([w.data(), bias ? bias.data() : Promise.resolve(undefined)]);
  const out = w.shape[0], per = wd.length / out;
  const w2 = new Float32Array(wd.length), b2 = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    const s = a.scale[o];
    for (let i = o * per; i < (o + 1) * per; i++) w2[i] = wd[i] * s;
    b2[o] = (bd ? bd[o] : 0) * s + a.shift[o];
  }
  return [tensor(w2, [...w.shape], { device }), tensor(b2, [out], { device })];
}

/** A per-channel affine map as the weight [C, 1, 1, 1] and bias [C] of a 1x1 depthwise convolution. */
export function depthwiseAffine(a: { scale: ArrayLike<number>; shift: ArrayLike<number> }, device: Device): [Tensor, Tensor] {
  const C = a.scale.length;
  return [tensor(Float32Array.from(a.scale), [C, 1, 1, 1], { device }), tensor(Float32Array.from(a.shift), [C], { device })];
}
