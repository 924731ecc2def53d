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
  | 'SPPNET_TOO_LARGE'
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

/**
 * Where an async operation was called from: its stack replaces the worker thread's. An op
 * recorded into a sequence (its options.sequence set: Model.run) captures none: its failures
 * surface where the sequence runs, which has its own CallSite.
 */
export class CallSite {
  private readonly site: Error | undefined;
  constructor(opts?: unknown) {
    this.site = opts !== null && typeof opts === 'object' && (opts as { sequence?: unknown }).sequence ? undefined : new Error();
  }
  /** Wraps a failure of the native side as an SppnetError that points at the caller. */
  wrap(e: unknown, fn: string): SppnetError {
    if (e instanceof SppnetError) return e;
    const err = e as { message?: string; code?: string };
    const code = (typeof err?.code === 'string' && err.code.startsWith('SPPNET_') ? err.code : 'SPPNET_INTERNAL') as ErrorCode;
    const out = new SppnetError(`${fn}: ${err?.message ?? String(e)}`, code);
    if (this.site) out.stack = `${out.name}: ${out.message}\n${(this.site.stack ?? '').split('\n').slice(1).join('\n')}`;
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
  if (typeof v === 'string') return v.length > 100 ? `the string ${JSON.stringify(v.slice(0, 100))}... (${v.length} characters)` : `the string ${JSON.stringify(v)}`;
  return `${typeof v} ${String(v)}`;
}

/** Bytes or pixels as a person reads them (16 MiB, 34.8 MP); small amounts as they are (300 pixels). */
export function formatAmount(n: number, unit: 'bytes' | 'pixels'): string {
  if (unit === 'bytes') return n >= 2 ** 20 ? `${+(n / 2 ** 20).toFixed(1)} MiB` : n >= 1024 ? `${+(n / 1024).toFixed(1)} KiB` : `${n} bytes`;
  return n >= 1e4 ? `${+(n / 1e6).toFixed(n < 1e6 ? 3 : 1)} MP` : `${n} pixels`;
}

/**
 * The refusal of something over a limit (a request's bytes, an image's or a batch's pixels):
 * SPPNET_TOO_LARGE (HTTP 413), the message naming the call, what is too large (`what` ends with
 * its verb: 'the body has'), how large, and the limit by its option's name.
 */
export function overLimit(fn: string, what: string, amount: number, unit: 'bytes' | 'pixels', limitName: string, limit: number): SppnetError {
  const amounts = (n: number) => (formatAmount(n, unit) === `${n} ${unit}` ? `${n} ${unit}` : `${n} ${unit} (${formatAmount(n, unit)})`);
  return new SppnetError(`${fn}: ${what} ${amounts(amount)}, more than ${limitName} ${amounts(limit).replace(` ${unit}`, '')}`, 'SPPNET_TOO_LARGE');
}

export function isPositiveInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** opts[name] checked as a positive integer (`dflt` when undefined); the error names fn and the option. */
export function positiveIntOption<T extends object>(fn: string, opts: T, name: keyof T & string, dflt: number): number {
  const v = (opts as Record<string, unknown>)[name] ?? dflt;
  if (!isPositiveInt(v)) fail(`${fn}: options.${name} must be a positive integer, got ${describe((opts as Record<string, unknown>)[name])}`);
  return v;
}

/** opts[name] checked as a finite number >= 0 (`dflt` when undefined); the error names fn and the option. */
export function nonNegativeOption<T extends object>(fn: string, opts: T, name: keyof T & string, dflt: number): number {
  const v = (opts as Record<string, unknown>)[name] ?? dflt;
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) fail(`${fn}: options.${name} must be a finite number >= 0, got ${describe(v)}`);
  return v;
}

/** opts.signal checked: undefined or an AbortSignal; the error names fn and the option. */
export function signalOption(fn: string, v: unknown): AbortSignal | undefined {
  if (v !== undefined && !(v instanceof AbortSignal)) fail(`${fn}: options.signal must be an AbortSignal, got ${describe(v)}`);
  return v;
}

/** SPPNET_ABORTED naming the call and what it had not yet done, once `signal` has aborted (first disposing `drop`: what that would have taken). */
export function throwIfAborted(fn: string, signal: AbortSignal | undefined, before: string, drop: { dispose(): void }[] = []): void {
  if (!signal?.aborted) return;
  drop.forEach((d) => d.dispose());
  throw new SppnetError(`${fn}: aborted before ${before}`, 'SPPNET_ABORTED');
}
