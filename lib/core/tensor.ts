// Typed tensors: float32 data with a shape and a device. CPU tensors made from a Float32Array
// share its memory (zero-copy); CUDA tensors own device memory until dispose().
import { constants as bufferConstants } from 'buffer';
import { markAsUntransferable } from 'worker_threads';
import { backend, Device, requireDevice } from './backend';
import { CallSite, describe, fail, MAX_ELEMENTS, SppnetError } from './errors';
import { keyNames, native, NativeBuf, NativeDeviceBuffer, NativeFloats } from './native';

export type DType = 'float32';

/** Where a tensor's elements live: a host array, or a device buffer at an element offset. */
export type Storage =
  | { device: 'cpu'; array: Float32Array }
  | { device: 'cuda'; buffer: NativeDeviceBuffer; offset: number };

export function checkShape(fn: string, arg: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) fail(`${fn}: ${arg} must be an array of non-negative integers, got ${describe(shape)}`);
  shape.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0)
      fail(`${fn}: ${arg}[${i}] must be a non-negative integer, got ${describe(d)}`);
  });
  const n = shape.reduce((a: number, b: number) => a * b, 1);
  if (n > MAX_ELEMENTS)
    fail(`${fn}: ${arg} [${shape.join(', ')}] has ${n} elements, more than the 2^31-1 a tensor may hold`);
  return [...shape] as number[];
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Whether `b` is a detached ArrayBuffer (constructing a view over one throws). */
function isDetached(b: ArrayBufferLike): boolean {
  if (typeof SharedArrayBuffer !== 'undefined' && b instanceof SharedArrayBuffer) return false;
  try {
    new Uint8Array(b, 0, 0);
    return false;
  } catch {
    return true;
  }
}

/**
 * Live tensors and their bytes, per device: created, and neither disposed nor collected by the GC
 * (for leak checks). `allocations` counts every tensor created so far.
 */
export const live = { cpu: { tensors: 0, bytes: 0, allocations: 0 }, cuda: { tensors: 0, bytes: 0, allocations: 0 } };

/** What a tensor added to `live`, taken back once: at dispose() or when the GC collects it. */
interface Counted {
  device: Device;
  bytes: number;
}
const uncount = (c: Counted) => {
  live[c.device].tensors -= 1;
  live[c.device].bytes -= c.bytes;
};
// A tensor dropped without dispose() is collected with its storage (a host array; a DeviceBuffer,
// whose finaliser frees the device memory); this takes it out of the counts then.
const collected = new FinalizationRegistry<Counted>(uncount);

export class Tensor {
  readonly dtype: DType = 'float32';
  readonly shape: readonly number[];
  readonly device: Device;
  readonly size: number;
  private store: Storage | null;
  private readonly owns: boolean;
  /** A view's owner, kept alive (and counted) while the view lives. */
  private readonly base: Tensor | undefined;

  /**
   * @internal Use sp.tensor(), sp.zeros() or an op's result. `owns`: false for views; `base`: the
   * tensor a view shares its storage with, if any.
   */
  constructor(storage: Storage, shape: readonly number[], owns = true, base?: Tensor) {
    this.store = storage;
    this.owns = owns;
    this.base = owns ? undefined : base;
    this.shape = Object.freeze([...shape]);
    this.size = numel(shape);
    this.device = storage.device;
    if (owns) {
      live[this.device].allocations += 1;
      live[this.device].tensors += 1;
      live[this.device].bytes += 4 * this.size;
      collected.register(this, { device: this.device, bytes: 4 * this.size }, this);
    }
  }

  get rank(): number {
    return this.shape.length;
  }

  get disposed(): boolean {
    return this.store === null;
  }

  /**
   * @internal The storage, or an SPPNET_DISPOSED error naming the call `fn` and the argument
   * `what` when it was disposed, or when its host array lost its memory (a detached ArrayBuffer:
   * see adopt()). Every op takes its inputs' and outputs' storage through here.
   */
  storage(fn: string, what: string): Storage {
    const s = this.store;
    if (s === null) throw new SppnetError(`${fn}: ${what} was disposed`, 'SPPNET_DISPOSED');
    if (s.device === 'cuda' && s.buffer.freed) throw new SppnetError(`${fn}: ${what} was disposed`, 'SPPNET_DISPOSED');
    // A typed array over a detached ArrayBuffer reads as empty.
    if (s.device === 'cpu' && s.array.length !== this.size && this.base?.disposed)
      throw new SppnetError(`${fn}: ${what} is a view of a tensor that was disposed`, 'SPPNET_DISPOSED');
    if (s.device === 'cpu' && s.array.length !== this.size)
      throw new SppnetError(`${fn}: ${what} was detached: the ArrayBuffer of the Float32Array it shares lost its memory (was detached) after sp.tensor()`, 'SPPNET_DISPOSED');
    return s;
  }

  /**
   * A copy of the elements, row-major, as they are once the ops called before it are done (an op
   * writing this tensor through `out:`, not awaited, included).
   */
  data(): Promise<Float32Array> {
    return this.read('Tensor.data', 'the tensor');
  }

  /** @internal data() for a call `fn` whose argument `what` this tensor is. */
  async read(fn: string, what: string): Promise<Float32Array> {
    const site = new CallSite();
    const s = this.storage(fn, what);
    const out = new Float32Array(this.size);
    // In call order, after the ops queued before (on the host, at once when none is).
    const r = nativeRef(s);
    await site.run(fn, () => native.copy(out, 0, r.buf, r.offset, this.size));
    return out;
  }

  /** A copy on `device` (the same tensor when it is already there). */
  to(device: Device): Promise<Tensor> {
    if (device !== 'cpu' && device !== 'cuda') return Promise.reject(new SppnetError(`Tensor.to: device must be 'cpu' or 'cuda', got ${describe(device)}`));
    return this.moveTo(device, 'Tensor.to', 'the tensor');
  }

  /** @internal to() for a call `fn` whose argument `what` this tensor is. */
  async moveTo(device: Device, fn: string, what: string): Promise<Tensor> {
    const s = this.storage(fn, what);
    if (s.device === device) return this;
    const host = await this.read(fn, what);
    requireDevice(device, fn);
    return device === 'cpu' ? new Tensor({ device: 'cpu', array: host }, this.shape) : upload(fn, host, this.shape);
  }

  /**
   * A view with another shape of the same number of elements, sharing this tensor's memory
   * (disposing the view leaves this tensor alone; disposing this tensor invalidates the view).
   */
  reshape(shape: number[]): Tensor {
    const s = this.storage('Tensor.reshape', 'the tensor');
    const dims = checkShape('Tensor.reshape', 'shape', shape);
    if (numel(dims) !== this.size)
      fail(`Tensor.reshape: shape [${dims.join(', ')}] has ${numel(dims)} elements, the tensor [${this.shape.join(', ')}] has ${this.size}`);
    return new Tensor(s, dims, false, this.base ?? this);
  }

  /**
   * Frees the memory now: device memory, and the host memory of an op's result of 1.33 MiB or
   * more, which the addon keeps for the next result of about its size (up to SPPNET_HOST_CACHE_MB,
   * default 256; an op still using it lets go when it ends). Other host memory (arrays the caller
   * gave sp.tensor(), smaller results) is left to the GC. Using the tensor, or a view of it,
   * afterwards throws SPPNET_DISPOSED.
   */
  dispose(): void {
    if (this.store === null) return;
    if (this.owns) {
      if (this.store.device === 'cuda') this.store.buffer.free();
      else if (recyclable.delete(this.store.array.buffer as ArrayBuffer)) native.hostRecycle(this.store.array.buffer as ArrayBuffer);
      collected.unregister(this);
      uncount({ device: this.device, bytes: 4 * this.size });
    }
    this.store = null;
  }

  toString(): string {
    return `Tensor(float32, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/** Bytes from which allocate() takes huge-page memory from the addon (binding/host.cpp). */
const HUGE_AT_LEAST = native.enums.hostHugeAtLeast;
/** Bytes up to which host memory can come from the addon (an external ArrayBuffer Node accepts); larger tensors are V8's. */
const HOST_ALLOC_MAX = Math.min(native.enums.hostAllocMax, bufferConstants.MAX_LENGTH);

/**
 * @internal Allocates a tensor on a device: zeroed on the CPU, unless `uninitialised` (its op
 * writes every element: host memory reused from the addon's cache is then handed over as it is).
 */
export function allocate(shape: readonly number[], device: Device, fn: string, uninitialised = false): Tensor {
  const n = numel(shape);
  // From ~1.33 MiB on, the addon's zeroed memory on huge pages (binding/host.cpp): fresh memory's
  // first touch then faults once per 2 MiB, not per 4 KiB (13 ms for 3.3 MB on a VM, 0.4 ms so).
  // Given back to the addon's cache at dispose() (recyclable), or when the GC collects it; an op
  // in flight keeps it where it is until the op is over.
  if (device === 'cpu') {
    const addon = 4 * n >= HUGE_AT_LEAST && 4 * n <= HOST_ALLOC_MAX;
    const array = hostArray(fn, shape, () => (addon ? new Float32Array(native.hostAlloc(4 * n, !uninitialised), 0, n) : new Float32Array(n)));
    if (addon) recyclable.add(array.buffer as ArrayBuffer);
    return new Tensor({ device: 'cpu', array }, shape);
  }
  requireDevice('cuda', fn);
  let buffer: NativeDeviceBuffer;
  try {
    buffer = new native.DeviceBuffer(n);
  } catch (e) {
    throw new CallSite().wrap(e, fn);
  }
  return new Tensor({ device: 'cuda', buffer, offset: 0 }, shape);
}

/**
 * @internal A buffer its owner frees at a moment of its choosing with freeReleasable() (a model's
 * activation buffers): on the CPU its memory comes from the addon (mmap for 1 MiB and up) and goes
 * back to the system at once, where a Float32Array's would wait for the GC and then often stay in
 * the C library's heap. On CUDA, allocate()'s.
 */
export function allocateReleasable(shape: readonly number[], device: Device, fn: string): Tensor {
  if (device !== 'cpu') return allocate(shape, device, fn);
  const n = numel(shape);
  if (4 * n > HOST_ALLOC_MAX) return allocate(shape, device, fn); // V8's memory: freed by the GC
  const array = hostArray(fn, shape, () => new Float32Array(native.hostAlloc(4 * Math.max(1, n)), 0, n));
  releasable.add(array.buffer as ArrayBuffer);
  return new Tensor({ device: 'cpu', array }, shape);
}

/** make(), or SPPNET_OUT_OF_MEMORY naming the call and the tensor when the host has no room. */
function hostArray(fn: string, shape: readonly number[], make: () => Float32Array): Float32Array {
  try {
    return make();
  } catch (e) {
    throw new SppnetError(`${fn}: cannot allocate ${4 * numel(shape)} bytes of host memory for a tensor [${shape.join(', ')}] (${(e as Error).message})`, 'SPPNET_OUT_OF_MEMORY');
  }
}
/** The host buffers allocate() took from the addon: dispose() gives those back for reuse. */
const recyclable = new WeakSet<ArrayBuffer>();
/** The host buffers allocateReleasable() made: freeReleasable() frees only those. */
const releasable = new WeakSet<ArrayBuffer>();

/**
 * @internal Disposes a tensor; one of allocateReleasable() (not a view) has its host memory freed
 * now. Any other tensor is only disposed: a caller's own arrays are never touched.
 */
export function freeReleasable(t: Tensor): void {
  const s = t.disposed ? null : t.storage('freeReleasable', 'the buffer');
  t.dispose();
  if (s && s.device === 'cpu' && releasable.has(s.array.buffer as ArrayBuffer)) {
    releasable.delete(s.array.buffer as ArrayBuffer);
    native.hostFree(s.array.buffer as ArrayBuffer);
  }
}

/** @internal The native view of a storage: (buffer, element offset). */
export function nativeRef(s: Storage): { buf: NativeFloats; offset: number } {
  return s.device === 'cpu' ? { buf: s.array, offset: 0 } : { buf: s.buffer, offset: s.offset };
}

/** @internal A storage as the native argument `name` and its offset `nameOffset`. */
export function nativeBuf<N extends string>(name: N, s: Storage): NativeBuf<N> {
  const [k, ko] = keyNames(bufKeys, name, (n) => [n, `${n}Offset`] as const);
  const r = nativeRef(s);
  const o: Record<string, unknown> = {};
  o[k] = r.buf;
  o[ko] = r.offset;
  return o as NativeBuf<N>;
}
const bufKeys = new Map<string, readonly [string, string]>();

export interface TensorOptions {
  device?: Device;
}

function resolveDevice(fn: string, opts: TensorOptions | undefined): Device {
  if (opts !== undefined && (typeof opts !== 'object' || opts === null)) fail(`${fn}: options must be an object, got ${describe(opts)}`);
  const d = opts?.device ?? backend().device;
  if (d !== 'cpu' && d !== 'cuda') fail(`${fn}: options.device must be 'cpu' or 'cuda', got ${describe(d)}`);
  requireDevice(d, fn);
  return d;
}

/**
 * A float32 tensor. On the CPU a Float32Array is used as it is (zero-copy: later writes to the
 * array show in the tensor); other arrays are copied. On CUDA the data is uploaded.
 */
export function tensor(data: Float32Array | ArrayLike<number>, shape: number[], opts?: TensorOptions): Tensor {
  const fn = 'sp.tensor';
  const dims = checkShape(fn, 'shape', shape);
  if (!(data instanceof Float32Array) && !Array.isArray(data) && !ArrayBuffer.isView(data))
    fail(`${fn}: data must be a Float32Array or an array of numbers, got ${describe(data)}`);
  const n = numel(dims);
  if (data instanceof Float32Array && data.length !== n && isDetached(data.buffer))
    throw new SppnetError(`${fn}: data's ArrayBuffer was detached (transferred), so it has no elements`, 'SPPNET_DISPOSED');
  if ((data as ArrayLike<number>).length !== n)
    fail(`${fn}: shape [${dims.join(', ')}] has ${n} elements, but data has ${(data as ArrayLike<number>).length}`);
  const device = resolveDevice(fn, opts);
  if (data instanceof Float32Array) return device === 'cpu' ? new Tensor({ device: 'cpu', array: adopt(data) }, dims) : upload(fn, data, dims);
  if (Array.isArray(data))
    data.forEach((v, i) => {
      if (typeof v !== 'number') fail(`${fn}: data[${i}] must be a number, got ${describe(v)}`);
    });
  const arr = Float32Array.from(data as ArrayLike<number>);
  return device === 'cpu' ? new Tensor({ device: 'cpu', array: arr }, dims) : upload(fn, arr, dims);
}

/** @internal Overwrites a tensor's elements with `host` (same length) as an op, in call order (small tensors: running statistics). */
export async function writeTensor(t: Tensor, host: Float32Array, fn: string): Promise<void> {
  const site = new CallSite();
  const s = t.storage(fn, 'the tensor written');
  if (host.length !== t.size) fail(`${fn}: writing ${host.length} values into a tensor of ${t.size}`);
  const r = nativeRef(s);
  await site.run(fn, () => native.copy(r.buf, r.offset, host, 0, host.length));
}

/** A new CUDA tensor holding a copy of `host`. */
function upload(fn: string, host: Float32Array, shape: readonly number[]): Tensor {
  const t = allocate(shape, 'cuda', fn);
  const s = t.storage(fn, 'the new tensor') as Extract<Storage, { device: 'cuda' }>;
  try {
    native.cudaUpload(s.buffer, 0, host);
  } catch (e) {
    t.dispose();
    throw new CallSite().wrap(e, fn);
  }
  return t;
}

/**
 * Whether markAsUntransferable() keeps an ArrayBuffer attached against everything JavaScript can
 * detach one with. The transfer lists of postMessage() and structuredClone() honour the mark in
 * every Node version (a marked buffer is copied, or the call throws a DataCloneError);
 * ArrayBuffer.prototype.transfer() (newer Node versions) honours it only where Node also sets
 * V8's detach key, which this probes once.
 */
let markingPins: boolean | undefined;
function markPins(): boolean {
  if (markingPins === undefined) {
    const transfer = (ArrayBuffer.prototype as unknown as { transfer?: unknown }).transfer;
    if (typeof transfer !== 'function') markingPins = true;
    else {
      const probe = new ArrayBuffer(8);
      markAsUntransferable(probe);
      try {
        (transfer as () => ArrayBuffer).call(probe);
        markingPins = false;
      } catch {
        markingPins = true;
      }
    }
  }
  return markingPins;
}

/**
 * The array a CPU tensor made from the caller's Float32Array keeps. Ops read (and, as `out`,
 * write) it on other threads, so its memory must stay where it is until they finish: a buffer
 * transferred to another thread meanwhile would be freed under them. So the array is used as it
 * is (zero-copy) with its ArrayBuffer marked untransferable for good (worker_threads'
 * markAsUntransferable: transferring it copies it, or throws, and it stays attached); a
 * SharedArrayBuffer cannot be detached at all (a fixed-length view, since a growable one may
 * grow); and where neither holds (a resizable ArrayBuffer, which may shrink under an op; a Node
 * whose ArrayBuffer.prototype.transfer() ignores the mark) the data is copied instead.
 * Tensor.storage() catches any other way a buffer loses its memory (a WebAssembly memory that
 * grew, an addon that detached it) before an op, and the binding after one.
 */
function adopt(data: Float32Array): Float32Array {
  const buf = data.buffer as ArrayBufferLike & { resizable?: boolean };
  if (typeof SharedArrayBuffer !== 'undefined' && buf instanceof SharedArrayBuffer) return new Float32Array(buf, data.byteOffset, data.length);
  if (buf.resizable === true || !markPins()) return data.slice();
  markAsUntransferable(buf);
  return data;
}

/** A tensor of zeros. */
export function zeros(shape: number[], opts?: TensorOptions): Tensor {
  const dims = checkShape('sp.zeros', 'shape', shape);
  const device = resolveDevice('sp.zeros', opts);
  if (device === 'cpu') return allocate(dims, 'cpu', 'sp.zeros');
  return tensor(new Float32Array(numel(dims)), dims, { device });
}

/** A tensor filled with `value`. */
export function full(shape: number[], value: number, opts?: TensorOptions): Tensor {
  const dims = checkShape('sp.full', 'shape', shape);
  if (typeof value !== 'number') fail(`sp.full: value must be a number, got ${describe(value)}`);
  return tensor(new Float32Array(numel(dims)).fill(value), dims, opts);
}

/** @internal A copy of rows [start, start + count) of a 2-D tensor, on its device. */
export function copyRows(t: Tensor, start: number, count: number, fn: string): Tensor {
  const s = t.storage(fn, 'the tensor');
  const cols = t.shape[1];
  const out = allocate([count, cols], t.device, fn);
  const o = out.storage(fn, 'the copy');
  if (s.device === 'cpu' && o.device === 'cpu') o.array.set(s.array.subarray(start * cols, (start + count) * cols));
  else if (s.device === 'cuda' && o.device === 'cuda') native.cudaCopy(o.buffer, o.offset, s.buffer, s.offset + start * cols, count * cols);
  return out;
}
