// What this thread holds: live tensors per device, the activation buffers of its models, and the
// addon's device allocations (sp.memory()).
import { native } from './native';
import { live } from './tensor';

/**
 * @internal Bytes held by the activation pools of this thread's live models (lib/nn/memory.ts
 * counts them here; sp.memory().activationBytes).
 */
export const activations = { bytes: 0 };

export interface MemoryInfo {
  /** Tensors (and ragged batches) created and not yet disposed, and their bytes, per device. */
  tensors: { cpu: number; cuda: number };
  bytes: { cpu: number; cuda: number };
  /** Tensors created so far (a steady state allocates nothing new but its results). */
  allocations: { cpu: number; cuda: number };
  /**
   * Bytes of activation buffers held by this thread's live models, on any device (part of
   * `bytes`): what runs in flight use and what the models keep for their next runs, within each
   * model's budget (model.activationBytes, model.releaseBuffers()).
   */
  activationBytes: number;
  /**
   * Host memory the addon keeps for reuse: the results of 1.33 MiB and more that were disposed
   * (at most SPPNET_HOST_CACHE_MB, default 256 MiB; emptied by model.releaseBuffers()), and the
   * allocations it has served so far.
   */
  hostCacheBytes: number;
  hostCacheReused: number;
  /** Device allocations alive in the addon (freed at dispose, or when an op using them ends). */
  deviceBuffers: number;
  deviceBytes: number;
  /**
   * The GPU's free and total memory, once this thread has allocated on the device. Memory freed
   * by dispose() goes back to the CUDA memory pool, which keeps it for reuse, so deviceFree does
   * not rise after a dispose (see devicePoolReserved).
   */
  deviceFree?: number;
  deviceTotal?: number;
  /**
   * The device's CUDA memory pool (shared by the process, once this thread has allocated on the
   * device): bytes it holds from the driver, and bytes of those handed out. Reserved minus used is
   * freed memory the pool keeps for reuse; it is given back when an allocation would fail.
   */
  devicePoolReserved?: number;
  devicePoolUsed?: number;
}

/** Live tensors and device allocations (for leak checks). */
export function memory(): MemoryInfo {
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  const { opsInline, opsQueued, cpuOpNs, cudaOpNs, ...device } = native.memoryStats();
  return {
    tensors: { cpu: live.cpu.tensors, cuda: live.cuda.tensors },
    bytes: { cpu: live.cpu.bytes, cuda: live.cuda.bytes },
    allocations: { cpu: live.cpu.allocations, cuda: live.cuda.allocations },
    activationBytes: activations.bytes,
    ...device,
  };
}

