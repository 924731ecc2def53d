// Which device runs: SPPNET_DEVICE=auto|cpu|cuda (default auto). 'cuda' asked for but not
// available is an error saying why; 'auto' falls back to the CPU and says why.
import { CallSite, SppnetError, fail } from './errors';
import { native, NativeInfo } from './native';
import { getMath, MATH_CODE, MathDefaults, MathMode, tensorCoreCheck, tensorCoreResult, TensorCoreCheck } from './math';

export type Device = 'cpu' | 'cuda';
export type DevicePolicy = 'auto' | Device;

export interface BackendInfo {
  /** The device new tensors go to by default and that `auto` picked. */
  device: Device;
  /** Why this device: the GPU found, or why CUDA is not used. */
  reason: string;
  /** The SPPNET_DEVICE policy in force. */
  policy: DevicePolicy;
  cuda: {
    built: boolean;
    available: boolean;
    deviceCount: number;
    name?: string;
    computeCapability?: string;
    multiprocessors?: number;
    totalMemory?: number;
    driverVersion: string | null;
    runtimeVersion: string | null;
    archs?: string;
    error?: string;
    /**
     * How conv2d and linear multiply on this GPU: the default modes (sp.setMath, SPPNET_MATH),
     * which kernels run and why, and the tensor-core check's result once it has run
     * (sp.tensorCoreCheck(); conv2d and linear run it before their first tensor-core call).
     */
    math?: { defaults: MathDefaults; kernels: string; check?: TensorCoreCheck };
  };
  /** bf16: whether math 'bf16' gets BF16 products in sp.linear on this CPU (AVX-512 BF16). */
  cpu: { isa: string; threads: number; bf16: boolean; settings: CpuSettings };
}

/**
 * The CPU kernels' tuning in effect, fixed when the addon loaded (from SPPNET_WINOGRAD,
 * SPPNET_LANES, SPPNET_AMX, SPPNET_WINOGRAD_MIN_CHANNELS, SPPNET_WINOGRAD_CHUNK, SPPNET_GEMM_KC, SPPNET_GEMM_L2,
 * SPPNET_POOL_SPIN, else the defaults): changing those variables afterwards does nothing.
 */
export interface CpuSettings {
  /** 3x3 stride-1 convs may take the Winograd path. */
  winograd: boolean;
  /** Strided convs may take the AVX-512 lanes path (output pixels in the vector lanes, no im2col). */
  lanes: boolean;
  /**
   * Convs take bf16x3 products on AMX tiles (SPPNET_AMX=1, on a CPU with AMX-BF16 whose OS grants
   * the tile state): those convs 1.5-2x faster, within 5e-5 of sum |w x| (1-4e-6 on random data)
   * instead of FP32's ~1e-7.
   */
  amx: boolean;
  /**
   * linear's BF16 products (math 'bf16', from 256 rows, 8 with a BF16Matrix) take AMX tiles (from 128
   * rows, 32 with a BF16Matrix, 16 in a model): the
   * CPU has AMX-BF16 and SPPNET_AMX is not 0 (no SPPNET_AMX=1 needed: the same arithmetic as the
   * AVX-512 BF16 kernels, 7-8x faster on fc6 at 2,000 rows). Linux is asked for the tile state at
   * the first such call (not by this report, so it says what the CPU and SPPNET_AMX allow); where
   * Linux refuses, those calls take the AVX-512 BF16 kernels (linear) and the FP32 ones (conv2d).
   */
  amxProducts: boolean;
  /** ... from this many input and output channels (Winograd). */
  winogradMinChannels: number;
  /** Tiles per chunk of the Winograd path (0: sized by memory). */
  winogradChunk: number;
  /** The GEMM's K block, and the bytes of a group of packed panels. */
  gemmKc: number;
  gemmL2: number;
  /** PAUSEs a helper thread spins between parallel steps before it sleeps. */
  poolSpin: number;
}

let cachedInfo: NativeInfo | undefined;
function nativeInfo(): NativeInfo {
  if (!cachedInfo) cachedInfo = native.info();
  return cachedInfo;
}

const version = (v: number) => (v > 0 ? `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}` : null);

function policy(): DevicePolicy {
  const raw = (process.env.SPPNET_DEVICE ?? 'auto').trim().toLowerCase();
  if (raw === '' || raw === 'auto') return 'auto';
  if (raw === 'cpu' || raw === 'cuda') return raw;
  return fail(`SPPNET_DEVICE must be 'auto', 'cpu' or 'cuda', got ${JSON.stringify(process.env.SPPNET_DEVICE)}`);
}

/** Why CUDA cannot be used, or null when it can. */
export function cudaUnavailableReason(): string | null {
  const c = nativeInfo().cuda;
  if (!c.built) return c.error || 'sppnet was built without CUDA';
  if (c.deviceCount < 1) return `sppnet is built with CUDA, but no device answers: ${c.error || 'no CUDA device found'}`;
  return null;
}

/** @internal The CUDA device runs the tensor-core kernels (compute capability 8.0 or newer). */
export function tensorCoresPresent(): boolean {
  if (cudaUnavailableReason() !== null) return false;
  const major = Number(String(nativeInfo().cuda.computeCapability ?? '0').split('.')[0]);
  return major >= 8;
}

/**
 * @internal The ConvMath code a call on `device` runs with: the mode asked for, or 'direct' when
 * the GPU has no TF32/BF16 tensor cores or the tensor-core check found this mode wrong on it.
 */
export async function kernelMath(device: Device, mode: MathMode): Promise<number> {
  if (device !== 'cuda' || mode === 'direct') return MATH_CODE[mode];
  if (!tensorCoresPresent()) return MATH_CODE.direct;
  const r = await tensorCoreCheck();
  return r.modes[mode as 'tf32' | 'bf16' | 'fp32'].ok ? MATH_CODE[mode] : MATH_CODE.direct;
}

export function backend(): BackendInfo {
  const info = nativeInfo();
  const c = info.cuda;
  const pol = policy();
  const why = cudaUnavailableReason();
  const cuda: BackendInfo['cuda'] = {
    built: c.built,
    available: why === null,
    deviceCount: c.deviceCount,
    driverVersion: version(c.driverVersion),
    runtimeVersion: version(c.runtimeVersion),
  };
  if (c.built) cuda.archs = c.archs;
  if (why === null) {
    Object.assign(cuda, { name: c.name, computeCapability: c.computeCapability, multiprocessors: c.multiprocessors, totalMemory: c.totalMemory });
    const check = tensorCoreResult();
    const kernels = !tensorCoresPresent()
      ? `direct FP32 kernels: compute capability ${c.computeCapability} has no TF32/BF16 tensor cores (8.0 or newer is needed)`
      : !check
        ? 'tensor cores (mma.sync implicit GEMM); their check against the FP32 kernels runs before the first call'
        : check.ok
          ? 'tensor cores (mma.sync implicit GEMM), checked against the FP32 kernels'
          : `direct FP32 kernels for the modes that failed the tensor-core check (${check.detail})`;
    cuda.math = { defaults: getMath(), kernels, ...(check ? { check } : {}) };
  } else {
    cuda.error = why;
  }
  let device: Device;
  let reason: string;
  if (pol === 'cpu') {
    device = 'cpu';
    reason = 'SPPNET_DEVICE=cpu';
  } else if (why === null) {
    device = 'cuda';
    reason = `${pol === 'cuda' ? 'SPPNET_DEVICE=cuda' : 'auto'}: CUDA device 0 is ${c.name} (compute capability ${c.computeCapability})`;
  } else if (pol === 'cuda') {
    throw new SppnetError(`SPPNET_DEVICE=cuda, but CUDA is unavailable: ${why}`, 'SPPNET_UNAVAILABLE');
  } else {
    device = 'cpu';
    reason = `auto: using the CPU because ${why}`;
  }
  const s = info.cpu.settings;
  const settings: CpuSettings = {
    winograd: s.winograd === 1,
    lanes: s.lanes === 1,
    amx: s.amx === 1,
    amxProducts: s.amxProducts === 1,
    winogradMinChannels: s.winogradMinChannels,
    winogradChunk: s.winogradChunk,
    gemmKc: s.gemmKc,
    gemmL2: s.gemmL2,
    poolSpin: s.poolSpin,
  };
  return { device, reason, policy: pol, cuda, cpu: { ...info.cpu, settings } };
}

/** Throws unless `device` can run here. */
export function requireDevice(device: Device, fn: string): void {
  if (device === 'cuda') {
    const why = cudaUnavailableReason();
    if (why !== null) throw new SppnetError(`${fn}: device 'cuda' requested, but CUDA is unavailable: ${why}`, 'SPPNET_UNAVAILABLE');
  }
}

export interface CpuPeak {
  /** The vector ISA the CPU kernels use, whose FMAs were timed. */
  isa: string;
  /** Threads run at once. */
  threads: number;
  /** Their FP32 throughput together, and each thread's, in GFLOP/s (an FMA counts 2). */
  gflops: number;
  perThread: number[];
}

/**
 * Measures this machine's FP32 peak as the CPU kernels can reach it: `threads` threads (default:
 * the kernels' thread count) started together, each running independent FMA chains of the ISA in
 * use for about `seconds` (default 0.2). Off the event loop. For benchmarks: divide FLOPs by it
 * for "% of peak" instead of assuming a clock and FMA width.
 */
export async function measureCpuPeak(opts: { threads?: number; seconds?: number } = {}): Promise<CpuPeak> {
  const fn = 'sp.measureCpuPeak';
  const site = new CallSite();
  const info = native.info();
  const threads = opts.threads ?? info.cpu.threads;
  const seconds = opts.seconds ?? 0.2;
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024) fail(`${fn}: opts.threads must be an integer in [1, 1024], got ${String(threads)}`);
  if (typeof seconds !== 'number' || !(seconds > 0 && seconds <= 10)) fail(`${fn}: opts.seconds must be a number in (0, 10], got ${String(seconds)}`);
  const out = new Float64Array(threads + 1);
  await site.run(fn, () => native.cpuPeak(threads, seconds, out));
  return { isa: info.cpu.isa, threads, gflops: out[0], perThread: Array.from(out.subarray(1)) };
}
