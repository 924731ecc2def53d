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
  // Each case against the direct FP32 kernels (and their run on |inputs| for the error's scale).
  const convCase = async (sizes: Array<[number, number]>, C: number, O: number, opts: Conv2dOptions) => {
    const g = opts.groups ?? 1;
    const xs = sizes.map(([h, w]) => rand(C * h * w));
    const wv = rand(O * (C / g) * 9), bv = rand(O);
    const batch = (arrs: Float32Array[]) => keep(ragged(arrs.map((a, i) => cuda(a, [C, sizes[i][0], sizes[i][1]]))));
    const x = batch(xs), xa = batch(xs.map(abs));
    const w = cuda(wv, [O, C / g, 3, 3]), wa = cuda(abs(wv), [O, C / g, 3, 3]);
    const b = cuda(bv, [O]), ba = cuda(abs(bv), [O]);
    const want = await keep(await conv2dAs(x, w, b, opts, MATH_CODE.direct)).data();
    const mag = await keep(await conv2dAs(xa, wa, ba, opts, MATH_CODE.direct)).data();
    for (const m of modes) worst[m] = Math.max(worst[m], worstError(await keep(await conv2dAs(x, w, b, opts, MATH_CODE[m])).data(), want, mag));
  };
  const linearCase = async (rows: number, K: number, N: number) => {
    const lx = rand(rows * K), lw = rand(N * K), lb = rand(N);
    const X = cuda(lx, [rows, K]), W = cuda(lw, [N, K]), B = cuda(lb, [N]);
    const lwant = await keep(await linearAs(X, W, B, {}, MATH_CODE.direct)).data();
    const lmag = await keep(await linearAs(cuda(abs(lx), [rows, K]), cuda(abs(lw), [N, K]), cuda(abs(lb), [N]), {}, MATH_CODE.direct)).data();
    for (const m of modes) worst[m] = Math.max(worst[m], worstError(await keep(await linearAs(X, W, B, {}, MATH_CODE[m])).data(), lwant, lmag));
  };
  try {
    // conv: a ragged batch whose tiles span maps (1x1 included), groups 2, 20 out channels; and
    // few tiles over a long K (64 x 3 x 3), which splits K (a second kernel adds the parts).
    await convCase([[11, 13], [1, 1], [6, 4], [17, 9]], 6, 20, { padding: 1, groups: 2 });
    await convCase([[7, 5], [3, 3]], 64, 24, { padding: 1 });
    // linear: rows and features off the tile sizes; and 12 rows over K = 1024 (split-K).
    await linearCase(37, 70, 33);
    await linearCase(12, 1024, 24);
  } finally {
    for (const t of owned.reverse()) t.dispose();
  }
  const res = {} as TensorCoreCheck['modes'];
  // The direct kernels are FP32 themselves: allow their error on top of each mode's.
  for (const m of modes) res[m] = { ok: worst[m] <= MATH_TOLERANCE[m] + MATH_TOLERANCE.direct, worst: worst[m], tolerance: MATH_TOLERANCE[m] };
  const ok = modes.every((m) => res[m].ok);
  const detail = `conv2d on 4 ragged maps (1x1 to 17x9, 6 -> 20 channels, 3x3, groups 2) and on 2 maps with split-K (64 -> 24 channels), linear 37x70 -> 33 and 12x1024 -> 24 (split-K) against the direct FP32 kernels; ` +
    modes.map((m) => `${m} worst ${res[m].worst.toExponential(2)} (tolerance ${res[m].tolerance})`).join(', ');
  return { ok, ran: true, modes: res, detail };
}

registerTensorCoreProbe(probeTensorCores);
