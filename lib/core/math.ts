// How the CUDA backend multiplies in conv2d and linear: the math modes, their defaults (PyTorch's:
// TF32 for convolutions, FP32 for matrix products), and the one-time check that the tensor-core
// kernels agree with the plain FP32 kernels on this GPU before any result of theirs is used.
// The CPU computes in FP32 in every mode but one: 'bf16' in linear, on a CPU with AVX-512 BF16
// (sp.backend().cpu.bf16), from 256 rows (8 with a BF16Matrix weight), takes BF16 products there too,
// on AMX tiles where the CPU has them (sp.backend().cpu.settings.amxProducts; SPPNET_AMX=0: not), and
// 'bf16' in conv2d takes them on those tiles (the convs the AMX path takes; the rest stay FP32);
// and SPPNET_AMX=1 (sp.backend().cpu.settings.amx), in the other modes, makes most convs, and linear from 128 rows, bf16x3 on AMX tiles.
import { SppnetError, fail } from './errors';
import { native } from './native';

/**
 * - `'tf32'`: tensor cores, inputs rounded to TF32 (10-bit mantissa), FP32 accumulation.
 *   Error within about 1e-3 of sum |w x| (the default for conv2d, as PyTorch's cuDNN).
 * - `'bf16'`: tensor cores, inputs rounded to BF16 (7-bit mantissa): about 1e-2 of sum |w x|.
 *   The CPU's linear too, where it has AVX-512 BF16: twice the FP32 products per instruction; and
 *   its conv2d and linear on AMX tiles, where it has AMX-BF16.
 * - `'fp32'`: tensor cores, each input split into two TF32 parts and three products summed:
 *   about FP32 accuracy, 1e-5 of sum |w x| (the default for linear, as PyTorch's matmul).
 * - `'direct'`: the plain FP32 kernels, one thread per output, no tensor cores (slow; the
 *   reference the others are checked against, and what runs below compute capability 8.0).
 */
export type MathMode = 'tf32' | 'bf16' | 'fp32' | 'direct';
export const MATH_MODES: readonly MathMode[] = ['tf32', 'bf16', 'fp32', 'direct'];
/** Codes of the C++ ConvMath, from the addon. */
export const MATH_CODE: Readonly<Record<MathMode, number>> = native.enums.convMath;
/**
 * Documented error bounds per mode, relative to sum_k |w_k x_k| (+ |bias|) of each output: what
 * the tests and the tensor-core check hold each mode to against a float64 reference.
 */
export const MATH_TOLERANCE: Record<MathMode, number> = { tf32: 2e-3, bf16: 1.6e-2, fp32: 1e-5, direct: 1e-5 };

export interface MathDefaults {
  conv: MathMode;
  linear: MathMode;
}

function parseMode(where: string, v: unknown): MathMode {
  if (typeof v === 'string' && (MATH_MODES as readonly string[]).includes(v)) return v as MathMode;
  return fail(`${where} must be one of ${MATH_MODES.map((m) => `'${m}'`).join(', ')}, got ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`);
}

/** SPPNET_MATH, e.g. "conv=bf16,linear=tf32" or "tf32" (both). */
function fromEnv(): MathDefaults {
  const d: MathDefaults = { conv: 'tf32', linear: 'fp32' };
  const raw = (process.env.SPPNET_MATH ?? '').trim();
  if (!raw) return d;
  for (const part of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq < 0) {
      d.conv = d.linear = parseMode('SPPNET_MATH', part);
      continue;
    }
    const key = part.slice(0, eq).trim(), val = part.slice(eq + 1).trim();
    if (key !== 'conv' && key !== 'linear') fail(`SPPNET_MATH: unknown key ${JSON.stringify(key)} (conv or linear)`);
    d[key] = parseMode(`SPPNET_MATH ${key}`, val);
  }
  return d;
}

let defaults: MathDefaults | undefined;
let key: string | undefined;

/** The math modes conv2d and linear use on CUDA when a call names none. */
export function getMath(): MathDefaults {
  if (!defaults) defaults = fromEnv();
  return { ...defaults };
}

/** @internal The defaults as a short string, kept until they change (for keys made on every run). */
export function mathKey(): string {
  if (key === undefined) {
    const m = getMath();
    key = `${m.conv},${m.linear}`;
  }
  return key;
}

/** Sets the default math modes (this thread only; SPPNET_MATH sets the starting values). */
export function setMath(m: Partial<MathDefaults>): MathDefaults {
  if (typeof m !== 'object' || m === null) fail(`sp.setMath: expected { conv?, linear? }, got ${String(m)}`);
  for (const k of Object.keys(m)) if (k !== 'conv' && k !== 'linear') fail(`sp.setMath: unknown key ${JSON.stringify(k)} (conv or linear)`);
  const cur = getMath();
  if (m.conv !== undefined) cur.conv = parseMode('sp.setMath: conv', m.conv);
  if (m.linear !== undefined) cur.linear = parseMode('sp.setMath: linear', m.linear);
  defaults = cur;
  key = undefined;
  return { ...cur };
}

/** @internal The mode of one call: its option, else the default. */
export function callMath(fn: string, v: unknown, kind: keyof MathDefaults): MathMode {
  return v === undefined ? getMath()[kind] : parseMode(`${fn}: options.math`, v);
}

// ---- the tensor-core check ----

export interface TensorCoreModeCheck {
  ok: boolean;
  /** Largest |tensor core - direct| / (sum |w x| + |b| + 1e-30) seen. */
  worst: number;
  tolerance: number;
}

export interface TensorCoreCheck {
  /** All three modes agree with the direct FP32 kernels within their tolerances. */
  ok: boolean;
  /** False when there is no CUDA device with tensor cores to check (detail says why). */
  ran: boolean;
  modes: Record<'tf32' | 'bf16' | 'fp32', TensorCoreModeCheck>;
  /** What was run, or why the check failed. */
  detail: string;
}

let probe: (() => Promise<TensorCoreCheck>) | undefined;
let pending: Promise<TensorCoreCheck> | undefined;
let result: TensorCoreCheck | undefined;

/** @internal lib/ops/tensorcore.ts registers the probe (it runs the kernels). */
export function registerTensorCoreProbe(p: () => Promise<TensorCoreCheck>) {
  probe = p;
}

/** @internal The check's result, once it has run on this thread. */
export function tensorCoreResult(): TensorCoreCheck | undefined {
  return result;
}

/**
 * Runs (once per thread; later calls get the same result) a small ragged convolution and a
 * linear layer through the tensor-core kernels in every mode and through the direct FP32
 * kernels, and compares. conv2d and linear on CUDA wait for it before their first tensor-core
 * call; a mode that disagrees is never used: its calls run the direct kernels, with a warning.
 */
export function tensorCoreCheck(): Promise<TensorCoreCheck> {
  if (!probe) throw new SppnetError('sp.tensorCoreCheck: internal: no probe registered', 'SPPNET_INTERNAL');
  if (!pending) {
    pending = probe().then(
      (r) => r,
      (e: unknown) => ({
        ok: false,
        ran: true,
        modes: {
          tf32: { ok: false, worst: NaN, tolerance: MATH_TOLERANCE.tf32 },
          bf16: { ok: false, worst: NaN, tolerance: MATH_TOLERANCE.bf16 },
          fp32: { ok: false, worst: NaN, tolerance: MATH_TOLERANCE.fp32 },
        },
        detail: `the check failed to run: ${e instanceof Error ? e.message : String(e)}`,
      }),
    ).then((r) => {
      result = r;
      if (r.ran && !r.ok) {
        const bad = (Object.keys(r.modes) as Array<keyof TensorCoreCheck['modes']>).filter((m) => !r.modes[m].ok);
        process.emitWarning(`sppnet: the tensor-core kernels disagree with the FP32 kernels on this GPU in mode(s) ${bad.join(', ')}; ` +
          `those calls run the direct kernels instead (${r.detail})`, { code: 'SPPNET_TENSOR_CORES' });
      }
      return r;
    });
  }
  return pending;
}

/** Compares a result with the direct reference: worst |got - want| / magnitude, NaN where they differ in NaN-ness. */
export function worstError(got: Float32Array, want: Float32Array, magnitude: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const g = got[i], w = want[i];
    if (g === w) continue;
    if (Number.isNaN(w) || Number.isNaN(g)) {
      if (Number.isNaN(w) !== Number.isNaN(g)) return Infinity;
      continue;
    }
    const e = Math.abs(g - w) / (magnitude[i] + 1e-30);
    if (!(e <= worst)) worst = e;
  }
  return worst;
}
