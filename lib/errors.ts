// Errors thrown by sppnet. Every message names the function, the argument and, where it
// applies, the axis, the expected and the actual value.

export type ErrorCode =
  | 'SPPNET_INVALID_ARGUMENT'
  | 'SPPNET_DISPOSED'
  | 'SPPNET_DEVICE_MISMATCH'
  | 'SPPNET_UNAVAILABLE'
  | 'SPPNET_OUT_OF_MEMORY'
  | 'SPPNET_CUDA_ERROR'
  | 'SPPNET_QUEUE_FULL'
  | 'SPPNET_TIMEOUT'
  | 'SPPNET_ABORTED'
  | 'SPPNET_NONFINITE'
  | 'SPPNET_INTERNAL';

export class SppnetError extends Error {
  readonly code: ErrorCode;
  constructor(message: string, code: ErrorCode = 'SPPNET_INVALID_ARGUMENT') {
    super(message);
    this.name = 'SppnetError';
    this.code = code;
  }
}

/** Where an async operation was called from: its stack replaces the worker thread's. */
export class CallSite {
  private readonly site = new Error();
  /** Wraps a failure of the native side as an SppnetError that points at the caller. */
  wrap(e: unknown, fn: string): SppnetError {
    if (e instanceof SppnetError) return e;
    const err = e as { message?: string; code?: string };
    const code = (typeof err?.code === 'string' && err.code.startsWith('SPPNET_') ? err.code : 'SPPNET_INTERNAL') as ErrorCode;
    const out = new SppnetError(`${fn}: ${err?.message ?? String(e)}`, code);
    const frames = (this.site.stack ?? '').split('\n').slice(1).join('\n');
    out.stack = `${out.name}: ${out.message}\n${frames}`;
    return out;
  }
  async run<T>(fn: string, p: () => Promise<T>): Promise<T> {
    try {
      return await p();
    } catch (e) {
      throw this.wrap(e, fn);
    }
  }
}

export const MAX_ELEMENTS = 2 ** 31 - 1;

export function fail(message: string, code: ErrorCode = 'SPPNET_INVALID_ARGUMENT'): never {
  throw new SppnetError(message, code);
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === 'object') return `an object (${(v as object).constructor?.name ?? 'Object'})`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  return `${typeof v} ${String(v)}`;
}

export function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}
