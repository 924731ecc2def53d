// The tensor-core check: a small ragged convolution and a linear layer through the tensor-core
// kernels in every math mode and through the direct FP32 kernels, compared. lib/core/math.ts runs
// it once per thread (sp.tensorCoreCheck(), and before the first tensor-core call of conv2d and
// linear). The check needs the kernels and the kernels need its verdict: math.ts holds the verdict
// and this module hands it the probe when it loads (lib/index.ts loads it), which keeps the
// imports one-way.
import { cudaUnavailableReason, tensorCoresPresent } from '../core/backend';
import { MATH_CODE, MATH_TOLERANCE, registerTensorCoreProbe, TensorCoreCheck, worstError } from '../core/math';
import { lcg } from '../core/random';
import { ragged } from '../core/ragged';
import { tensor } from '../core/tensor';
import { Conv2dOptions, conv2dAs } from './conv2d';
import { linearAs } from './linear';

async function probeTensorCores(): Promise<TensorCoreCheck> {
  const r = lcg(0x5eed5);
  const rand = (n: number) => Float32Array.from({ length: n }, () => r());
  const abs = (a: Float32Array) => a.map(Math.abs);
  const owned: Array<{ dispose(): void }> = [];
  const keep = <T extends { dispose(): void }>(t: T) => (owned.push(t), t);
  const cuda = (a: Float32Array, shape: number[]) => keep(tensor(a, shape, { device: 'cuda' }));
  const modes = ['tf32', 'bf16', 'fp32'] as const;
  if (!tensorCoresPresent()) {
    const none = { ok: false, worst: NaN };
    return {
      ok: false, ran: false,
      modes: { tf32: { ...none, tolerance: MATH_TOLERANCE.tf32 }, bf16: { ...none, tolerance: MATH_TOLERANCE.bf16 }, fp32: { ...none, tolerance: MATH_TOLERANCE.fp32 } },
      detail: `not run: ${cudaUnavailableReason() ?? 'the CUDA device predates compute capability 8.0 (no TF32/BF16 tensor cores)'}`,
    };
  }
  const worst = { tf32: 0, bf16: 0, fp32: 0 };
  try {
    // conv: a ragged batch whose tiles span maps (1x1 included), groups 2, 20 out channels.
    const sizes: Array<[number, number]> = [[11, 13], [1, 1], [6, 4], [17, 9]];
    const C = 6, O = 20, opts: Conv2dOptions = { padding: 1, groups: 2 };
    const xs = sizes.map(([h, w]) => rand(C * h * w));
    const wv = rand(O * 3 * 3 * 3), bv = rand(O);
    const batch = (arrs: Float32Array[]) => keep(ragged(arrs.map((a, i) => cuda(a, [C, sizes[i][0], sizes[i][1]]))));
    const x = batch(xs), xa = batch(xs.map(abs));
    const w = cuda(wv, [O, 3, 3, 3]), wa = cuda(abs(wv), [O, 3, 3, 3]);
    const b = cuda(bv, [O]), ba = cuda(abs(bv), [O]);
    const want = await keep(await conv2dAs(x, w, b, opts, MATH_CODE.direct)).data();
    const mag = await keep(await conv2dAs(xa, wa, ba, opts, MATH_CODE.direct)).data();
    for (const m of modes) worst[m] = worstError(await keep(await conv2dAs(x, w, b, opts, MATH_CODE[m])).data(), want, mag);
    // linear: rows and features off the tile sizes.
    const lx = rand(37 * 70), lw = rand(33 * 70), lb = rand(33);
    const X = cuda(lx, [37, 70]), W = cuda(lw, [33, 70]), B = cuda(lb, [33]);
    const lwant = await keep(await linearAs(X, W, B, {}, MATH_CODE.direct)).data();
    const lmag = await keep(await linearAs(cuda(abs(lx), [37, 70]), cuda(abs(lw), [33, 70]), cuda(abs(lb), [33]), {}, MATH_CODE.direct)).data();
    for (const m of modes) worst[m] = Math.max(worst[m], worstError(await keep(await linearAs(X, W, B, {}, MATH_CODE[m])).data(), lwant, lmag));
  } finally {
    for (const t of owned.reverse()) t.dispose();
  }
  const res = {} as TensorCoreCheck['modes'];
  // The direct kernels are FP32 themselves: allow their error on top of each mode's.
  for (const m of modes) res[m] = { ok: worst[m] <= MATH_TOLERANCE[m] + MATH_TOLERANCE.direct, worst: worst[m], tolerance: MATH_TOLERANCE[m] };
  const ok = modes.every((m) => res[m].ok);
  const detail = `conv2d on 4 ragged maps (1x1 to 17x9, 6 -> 20 channels, 3x3, groups 2) and linear 37x70 -> 33 against the direct FP32 kernels; ` +
    modes.map((m) => `${m} worst ${res[m].worst.toExponential(2)} (tolerance ${res[m].tolerance})`).join(', ');
  return { ok, ran: true, modes: res, detail };
}

registerTensorCoreProbe(probeTensorCores);
